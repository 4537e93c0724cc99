"""A NaN or inf at one token of a model's input changes no logits at an earlier token, in another document of a
packed row, or in another row: xLSTM Large and the NeurIPS LM (mLSTM, sLSTM and their convolutions), in every
mLSTM backend. The poison enters as the embedding of one token; the logits that must not see it are compared
bit for bit with a clean run (compiled Triton: to rounding in the poisoned chunk, see tests/ops/test_nonfinite.py).
"""

import importlib.util

import pytest
import torch

import xlstm_engine as xe
from xlstm_engine.testing import assert_close

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
P, S = 100, 150  # the poisoned token, inside the document [70, 120) of row 0 when packed
STARTS = [0, 70, 120]
BACKENDS = ["chunkwise", "naive_parallel", "naive_recurrent",
            pytest.param("triton", marks=pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                                            reason="triton not installed"))]


def large_model(backend):
    config = xe.xLSTMLargeConfig(embedding_dim=64, num_heads=2, num_blocks=2, vocab_size=97)
    return xe.xLSTMLarge(config, xe.RuntimeOptions(mlstm_backend=backend, chunk_size=32))


def neurips_model(backend):
    config = xe.xLSTMLMModelConfig(
        vocab_size=97, num_blocks=3, embedding_dim=64, slstm_at=[1],
        mlstm_block=xe.mLSTMBlockConfig(mlstm=xe.mLSTMLayerConfig(num_heads=2)),
        slstm_block=xe.sLSTMBlockConfig(slstm=xe.sLSTMLayerConfig(num_heads=2)))
    return xe.xLSTMLMModel(config, xe.RuntimeOptions(mlstm_backend=backend, chunk_size=32))


def logits_of(model, ids, resets):
    return model.forward_with_state(ids, resets=resets)[0]


@pytest.mark.parametrize("packed", [False, True], ids=["one-document", "packed"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make", [large_model, neurips_model], ids=["large", "neurips"])
def test_poisoned_token_stays_in_place(make, backend, packed):
    """(an inf in the embedding is a NaN after the first norm, so NaN covers it; the ops' tests try inf too)"""
    device = DEVICE if backend == "triton" else "cpu"
    model = make(backend).to(device).eval()
    ids = torch.randint(0, 97, (2, S), generator=torch.Generator().manual_seed(0)).to(device)
    resets = None
    if packed:
        resets = torch.zeros(2, S, dtype=torch.bool, device=device)
        resets[0, STARTS] = True
    embedding = model.get_input_embeddings()
    with torch.no_grad():
        clean = logits_of(model, ids, resets)

        def poison(module, args, out):
            out = out.clone()
            out[0, P, ::7] = float("nan")
            return out

        hook = embedding.register_forward_hook(poison)
        try:
            poisoned = logits_of(model, ids, resets)
        finally:
            hook.remove()
    assert not torch.isfinite(poisoned[0, P]).all(), "the poison did not go in"
    assert torch.equal(poisoned[1], clean[1]), "the poison reached another row"
    bad = (~torch.isfinite(poisoned[0, :P])).any(-1).nonzero().flatten().tolist()
    assert not bad, f"the poison at token {P} reached earlier tokens {bad}"
    if backend == "triton" and device == "cuda":  # the poisoned chunk is computed in a branch of its own
        assert_close("earlier logits", clean[0, :P], poisoned[0, :P])
    else:
        assert torch.equal(poisoned[0, :P], clean[0, :P]), "earlier logits changed"
    if packed:
        assert torch.equal(poisoned[0, STARTS[-1]:], clean[0, STARTS[-1]:]), "the poison reached a later document"
