"""The stateful contract both model families share (xlstm_engine/model/README.md): forward_with_state, an
allocated state, in-place updates, logits_to_keep, get_input_embeddings; and the frozen RuntimeOptions."""

import dataclasses

import pytest
import torch

import xlstm_engine as xe
from xlstm_engine.testing import assert_close

V = 61
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # on CUDA, "auto" takes the Triton kernels (head dims 16, 32)


def large():
    model = xe.xLSTMLarge(xe.xLSTMLargeConfig(embedding_dim=64, num_heads=2, num_blocks=2, vocab_size=V),
                          xe.RuntimeOptions(chunk_size=16))
    _perturb(model)
    return model.to(DEVICE)


def neurips(mlstm_conv=4, slstm_conv=4):
    """mLSTM, sLSTM, mLSTM blocks; conv 0 turns a layer's conv off (its state's conv is None)."""
    config = xe.xLSTMLMModelConfig(
        vocab_size=V, num_blocks=3, embedding_dim=32, slstm_at=[1],
        mlstm_block=xe.mLSTMBlockConfig(mlstm=xe.mLSTMLayerConfig(num_heads=2, conv1d_kernel_size=mlstm_conv)),
        slstm_block=xe.sLSTMBlockConfig(slstm=xe.sLSTMLayerConfig(num_heads=2, conv1d_kernel_size=slstm_conv)))
    model = xe.xLSTMLMModel(config, xe.RuntimeOptions(chunk_size=16))
    _perturb(model)
    return model.to(DEVICE)


def _perturb(model):
    """Away from the init, so that every gate, memory and conv history matters."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))


MODELS = {"large": large, "neurips": neurips, "neurips-no-conv": lambda: neurips(0, 0)}


def tensors(state) -> list[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    return [] if state is None else [t for part in state for t in tensors(part)]


@pytest.mark.parametrize("S", [1, 23])
@pytest.mark.parametrize("name", MODELS)
@torch.no_grad()
def test_inplace_equals_out_of_place(name, S):
    """From an allocated state made non-empty by a prompt, a call with inplace=True gives exactly the logits and
    state of the same call without it, returns the given state object, and writes its tensors where they lie."""
    model = MODELS[name]().eval()
    ids = torch.randint(0, V, (2, 9 + S), device=DEVICE)
    state = model.allocate_state(2)
    addresses = [t.data_ptr() for t in tensors(state)]
    model.forward_with_state(ids[:, :9], state, inplace=True)  # the prompt
    before = [t.clone() for t in tensors(state)]
    expected_logits, expected_state = model.forward_with_state(ids[:, 9:], state)
    assert all(torch.equal(a, b) for a, b in zip(before, tensors(state), strict=True)), "out of place wrote"
    logits, returned = model.forward_with_state(ids[:, 9:], state, inplace=True)
    assert returned is state
    assert [t.data_ptr() for t in tensors(state)] == addresses
    assert torch.equal(logits, expected_logits)
    for got, expected in zip(tensors(state), tensors(expected_state), strict=True):
        assert got.dtype == expected.dtype and torch.equal(got, expected)
    assert not all(torch.equal(a, b) for a, b in zip(before, tensors(state), strict=True)), "nothing was written"


@torch.no_grad()
def test_inplace_stack_and_segments():
    """The bare stack in place, and xLSTM Large segmenting a long input (max_inference_chunksize) in place."""
    stack = neurips().xlstm_block_stack.eval()
    x = torch.randn(2, 30, 32, device=DEVICE)
    state = stack.allocate_state(2)
    addresses = [t.data_ptr() for t in tensors(state)]
    expected_y, expected_state = stack.forward_with_state(x, state)
    y, returned = stack.forward_with_state(x, state, inplace=True)
    assert returned is state and [t.data_ptr() for t in tensors(state)] == addresses and torch.equal(y, expected_y)
    assert all(torch.equal(a, b) for a, b in zip(tensors(state), tensors(expected_state), strict=True))

    model = large()
    model.runtime = model.runtime.replace(max_inference_chunksize=7)
    ids = torch.randint(0, V, (2, 30), device=DEVICE)
    state = model.allocate_state(2)
    expected_logits, expected_state = model.forward_with_state(ids, state, logits_to_keep=3)
    logits, _ = model.forward_with_state(ids, state, logits_to_keep=3, inplace=True)
    assert torch.equal(logits, expected_logits)
    assert all(torch.equal(a, b) for a, b in zip(tensors(state), tensors(expected_state), strict=True))


@pytest.mark.parametrize("name", MODELS)
@torch.no_grad()
def test_allocated_state_equals_no_state(name):
    """An allocated state is the empty state: the same logits and state as starting from None, in
    runtime.state_dtype, on the parameters' device. On the CPU: bit-equality is a property of the PyTorch forms."""
    model = MODELS[name]().cpu()
    ids = torch.randint(0, V, (3, 9))
    state = model.allocate_state(3)
    model.check_state(state, 3)
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" and not t.any() for t in tensors(state))
    logits, new_state = model.forward_with_state(ids)
    allocated_logits, allocated_new_state = model.forward_with_state(ids, state)
    assert torch.equal(logits, allocated_logits)
    assert all(torch.equal(a, b) for a, b in zip(tensors(new_state), tensors(allocated_new_state), strict=True))
    wide = model.allocate_state(1, dtype=torch.float64)  # the cells in float64, conv histories in the params'
    assert all(t.dtype == torch.float64 for t in tensors([getattr(s, "cell", s) for s in wide]))
    assert all(t.dtype == torch.float32 for t in tensors([getattr(s, "conv", None) for s in wide]))


@pytest.mark.parametrize("name", MODELS)
@torch.no_grad()
def test_logits_to_keep_and_embeddings(name):
    model = MODELS[name]()
    ids = torch.randint(0, V, (2, 12), device=DEVICE)
    logits, state = model.forward_with_state(ids)
    for keep in (1, 5, 40):
        kept, kept_state = model.forward_with_state(ids, logits_to_keep=keep)
        # the head's matmul over fewer rows may round differently
        assert_close(f"logits_to_keep={keep}", logits[:, -keep:], kept)
        assert all(torch.equal(a, b) for a, b in zip(tensors(state), tensors(kept_state), strict=True))
    embedding = model.get_input_embeddings()
    assert isinstance(embedding, torch.nn.Embedding) and embedding.weight.shape == (V, model.config.embedding_dim)


@pytest.mark.parametrize("name", MODELS)
def test_inplace_needs_a_state(name):
    model = MODELS[name]()
    ids = torch.randint(0, V, (2, 3), device=DEVICE)
    with pytest.raises(ValueError, match=r"inplace=True writes the new state into the given state, but state is "
                                         r"None; allocate one with model\.allocate_state\(batch_size\)"):
        model.forward_with_state(ids, inplace=True)
    with pytest.raises(TypeError, match="inplace must be True or False, got 1"):
        model.forward_with_state(ids, model.allocate_state(2), inplace=1)
    with pytest.raises(ValueError, match="logits_to_keep must be an int >= 0, got -1"):
        model.forward_with_state(ids, logits_to_keep=-1)


def test_runtime_options_are_frozen():
    """Changed only through replace(), whose result is checked again; `backend` stays an alias of mlstm_backend."""
    runtime = xe.RuntimeOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        runtime.chunk_size = 32
    assert runtime.replace(chunk_size=32, state_dtype="bfloat16") == xe.RuntimeOptions(chunk_size=32,
                                                                                       state_dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="chunk_size must be a positive int, got 0"):
        runtime.replace(chunk_size=0)
    with pytest.raises(ValueError, match=r"unknown runtime option\(s\) \['chunksize'\]"):
        runtime.replace(chunksize=3)
    old_name = xe.RuntimeOptions(backend="naive_parallel")
    assert old_name.mlstm_backend == old_name.backend == "naive_parallel"
    assert old_name == xe.RuntimeOptions(mlstm_backend="naive_parallel")
    assert runtime.replace(backend="chunkwise").mlstm_backend == "chunkwise"
    with pytest.raises(ValueError, match="backend='step' is the former name of mlstm_backend, which says 'chunkwise'"):
        xe.RuntimeOptions(mlstm_backend="chunkwise", backend="step")
    from xlstm_engine.model import RuntimeOptions

    assert RuntimeOptions is xe.RuntimeOptions
    model = neurips()
    model.runtime = model.runtime.replace(slstm_backend="naive")
    assert model.xlstm_block_stack.runtime.slstm_backend == "naive"
