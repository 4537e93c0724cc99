"""xLSTMLarge against transformers' xLSTMForCausalLM with the same weights, loaded from a HF save_pretrained folder."""

import pytest
import torch

import xlstm_engine as xe
from xlstm_engine.testing import assert_close, randomize_large_

transformers = pytest.importorskip("transformers")

VOCAB = 97


def hf_model(weight_mode: str, use_bias: bool = False, seed: int = 0):
    """A transformers model with random weights; the fused one holds the same weights as the single one."""
    config = transformers.xLSTMConfig(
        vocab_size=VOCAB, hidden_size=128, num_hidden_layers=3, num_heads=2, use_bias=use_bias, chunk_size=16,
        ffn_proj_factor=2.50390625,  # 128 * f = 320.5, where the official rounding (320) is not a ceiling (384)
    )
    model = transformers.xLSTMForCausalLM(config)
    randomize_large_(model, seed)
    if weight_mode == "fused":
        ours = xe.xLSTMLargeConfig(embedding_dim=128, num_heads=2, num_blocks=3, vocab_size=VOCAB,
                                   use_bias=use_bias, ffn_proj_factor=config.ffn_proj_factor)
        state_dict = xe.checkpoint.to_fused_layout(model.state_dict(), ours)
        config.weight_mode = "fused"
        # transformers 5.23 cannot initialize a fused model (its _init_weights slices the gate bias wrongly)
        init = transformers.xLSTMPreTrainedModel._init_weights
        transformers.xLSTMPreTrainedModel._init_weights = lambda self, module: None
        try:
            model = transformers.xLSTMForCausalLM(config)
        finally:
            transformers.xLSTMPreTrainedModel._init_weights = init
        model.load_state_dict(state_dict, strict=True)
    return model.eval()


@pytest.fixture(scope="module", params=["single", "fused"])
def pair(request, tmp_path_factory):
    """(transformers model, our model loaded from its save_pretrained folder)."""
    hf = hf_model(request.param)
    path = tmp_path_factory.mktemp(f"hf-{request.param}")
    hf.save_pretrained(path)
    return hf, xe.xLSTMLarge.from_pretrained(path)


@pytest.mark.parametrize("S", [1, 7, 16, 63, 100, 150])
@torch.no_grad()
def test_logits_match(pair, S):
    hf, ours = pair
    ids = torch.randint(0, VOCAB, (2, S))
    ref = hf(ids, use_cache=False).logits
    logits, _ = ours(ids)
    assert_close("logits", ref, logits, ratio=1e-5)


@torch.no_grad()
def test_continuation_with_state_matches_cache(pair):
    """Prefill 30 tokens, then feed 1 and 12 more through the carried state (HF: its cache)."""
    hf, ours = pair
    ids = torch.randint(0, VOCAB, (3, 43))
    out = hf(ids[:, :30], use_cache=True)
    cache, ref = out.cache_params, [out.logits]
    for piece in (ids[:, 30:31], ids[:, 31:]):
        out = hf(piece, cache_params=cache, use_cache=True)
        cache = out.cache_params
        ref.append(out.logits)
    state, logits = None, []
    for piece in (ids[:, :30], ids[:, 30:31], ids[:, 31:]):
        piece_logits, state = ours(piece, state=state)
        logits.append(piece_logits)
    assert_close("logits", torch.cat(ref, 1), torch.cat(logits, 1), ratio=1e-5)
    for layer, (C, n, m) in enumerate(state):
        hf_C, hf_n, hf_m = cache.rnn_state[layer]
        assert_close(f"C[{layer}]", hf_C, C, ratio=1e-5)
        assert_close(f"n[{layer}]", hf_n, n, ratio=1e-5)
        assert_close(f"m[{layer}]", hf_m.squeeze(-1), m, ratio=1e-5)


@torch.no_grad()
def test_greedy_continuation_identical(pair):
    hf, ours = pair
    prompt = torch.randint(0, VOCAB, (2, 11))
    ref = hf.generate(prompt, max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=1)[:, 11:]
    logits, state = ours(prompt, logits_to_keep=1)
    tokens = []
    for _ in range(20):
        tokens.append(logits[:, -1].argmax(-1, keepdim=True))
        logits, state = ours(tokens[-1], state=state)
    assert torch.equal(ref, torch.cat(tokens, 1))


@pytest.mark.parametrize("weight_mode", ["single", "fused"])
def test_with_biases(weight_mode, tmp_path):
    """use_bias=True: biases on the projections and norms (none on the HF out_norm)."""
    hf = hf_model(weight_mode, use_bias=True, seed=1)
    hf.save_pretrained(tmp_path)
    ids = torch.randint(0, VOCAB, (2, 40))
    with torch.no_grad():
        logits, _ = xe.xLSTMLarge.from_pretrained(tmp_path)(ids)
        assert_close("logits", hf(ids, use_cache=False).logits, logits, ratio=1e-5)
