"""Padded batches through both model families (`attention_mask`): each row gets exactly what it gets alone.

A batch of rows of several lengths, left or right padded, from an empty state or from a state of its own per row:
each row's logits at its real positions and its state (every mLSTM memory, sLSTM state and conv history) equal
those of the row run alone, for every mLSTM backend; greedy decoding from the padded batch's state picks the ids
that each row picks alone. Float64 for the PyTorch backends, so that only the algorithm can differ; the Triton
kernels (in Triton's interpreter without a GPU) in float32. Each test also checks that the batch WITHOUT its mask
gives something else, so that it cannot pass vacuously.
"""

import pytest
import torch

import xlstm_engine as xe
from xlstm_engine.testing import TOLERANCES, assert_close

V = 61
S = 23
LENGTHS = (23, 18, 7, 1, 0)  # 18: across the chunk boundary at 16 whichever side is padded; 0: all pads
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def large(dtype=torch.float64):
    """xLSTM Large with head dims 16 (qk) and 32 (v), which the Triton kernels take."""
    model = xe.xLSTMLarge(xe.xLSTMLargeConfig(embedding_dim=64, num_heads=2, num_blocks=2, vocab_size=V),
                          runtime(dtype))
    return _perturb(model, dtype)


def neurips(dtype=torch.float64):
    """mLSTM, sLSTM, mLSTM blocks, each with a causal conv (kernel 4); mLSTM head dim 32."""
    config = xe.xLSTMLMModelConfig(
        vocab_size=V, num_blocks=3, embedding_dim=32, slstm_at=[1],
        mlstm_block=xe.mLSTMBlockConfig(mlstm=xe.mLSTMLayerConfig(num_heads=2, conv1d_kernel_size=4)),
        slstm_block=xe.sLSTMBlockConfig(slstm=xe.sLSTMLayerConfig(num_heads=2, conv1d_kernel_size=4)))
    return _perturb(xe.xLSTMLMModel(config, runtime(dtype)), dtype)


def runtime(dtype):
    """The chunkwise form (on CUDA, "auto" would take the Triton kernels, which compute in float32)."""
    return xe.RuntimeOptions(mlstm_backend="chunkwise", chunk_size=16, state_dtype=dtype)


def _perturb(model, dtype):
    """Away from the init, so that every gate, memory and conv history matters."""
    torch.manual_seed(0)
    model = model.to(DEVICE, dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


MODELS = {"large": large, "neurips": neurips}


def tensors(state) -> list[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    return [] if state is None else [t for part in state for t in tensors(part)]


def row_of(state, b: int):
    """Row b of a model state (the same nesting, each tensor [1, ...])."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state[b:b + 1]
    parts = [row_of(part, b) for part in state]
    return type(state)(*parts) if hasattr(state, "_fields") else tuple(parts)


def make_batch(side: str, lengths=LENGTHS, seed=1) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Each row's ids, the padded ids [B, S] (random ids at pads) and the mask (int64 0/1, as transformers)."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randint(0, V, (L,), generator=g) for L in lengths]
    ids = torch.randint(0, V, (len(lengths), S), generator=g)
    mask = torch.zeros(len(lengths), S, dtype=torch.long)
    for b, row in enumerate(rows):
        start = S - len(row) if side == "left" else 0
        ids[b, start:start + len(row)] = row
        mask[b, start:start + len(row)] = 1
    return [row.to(DEVICE) for row in rows], ids.to(DEVICE), mask.to(DEVICE)


def warm_state(model, B: int):
    """A state of its own for every row: a random prompt of 5 tokens."""
    ids = torch.randint(0, V, (B, 5), generator=torch.Generator().manual_seed(9)).to(DEVICE)
    runtime = model.runtime
    if runtime.mlstm_backend == "step":  # it takes one token only
        model.runtime = runtime.replace(mlstm_backend="chunkwise")
    with torch.no_grad():
        state = model.forward_with_state(ids)[1]
    model.runtime = runtime
    return state


def check_rows(model, side: str, initial: bool, ratio=None, lengths=LENGTHS, check_unmasked=True) -> None:
    rows, ids, mask = make_batch(side, lengths)
    state = warm_state(model, len(rows)) if initial else None
    logits, new_state = model.forward_with_state(ids, state, attention_mask=mask)
    assert torch.isfinite(logits).all()  # at pads too: unspecified, but finite
    for b, row in enumerate(rows):
        real = mask[b].bool()
        if len(row):
            alone, alone_state = model.forward_with_state(row[None], row_of(state, b))
            assert_close(f"logits[{b}]", alone[0], logits[b, real], ratio)
        else:  # all pads: the state does not change
            alone_state = row_of(state, b) if initial else model.allocate_state(1)
        for j, (a, t) in enumerate(zip(tensors(alone_state), tensors(row_of(new_state, b)), strict=True)):
            assert_close(f"state[{b}] tensor {j}", a, t, ratio, atol=1e-12)
    if not check_unmasked:
        return
    # not vacuous: without the mask, the rows' states differ (the right-padded ones from the pads after them)
    unmasked = model.forward_with_state(ids, state)[1]
    assert max((a - t).abs().max() for a, t in zip(tensors(unmasked), tensors(new_state), strict=True)) > 1e-3


# Left padding from an empty state: the sLSTM's first step (n = 0) comes after the pads. Left padding from a state:
# the conv history must reach the first real token across the pads. The chunkwise form runs all four cases.
CASES = [(backend, side, initial) for backend in ("naive_recurrent", "naive_parallel")
         for side, initial in (("left", False), ("right", True))]
CASES += [("chunkwise", side, initial) for side in ("left", "right") for initial in (False, True)]


@pytest.mark.parametrize(("backend", "side", "initial"), CASES,
                         ids=[f"{b}-{s}-{'state' if i else 'empty'}" for b, s, i in CASES])
@pytest.mark.parametrize("family", MODELS)
def test_padded_batch_equals_rows_alone(family, backend, side, initial):
    """Logits at real positions (with autograd on, as in training) and every state tensor, row by row, float64."""
    model = MODELS[family]()
    model.runtime = model.runtime.replace(mlstm_backend=backend)
    check_rows(model, side, initial)


def _has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _has_triton(), reason="triton is not installed")
@pytest.mark.parametrize(("family", "side", "initial"), [("large", "left", True), ("neurips", "right", False)])
def test_padded_batch_triton(family, side, initial):
    """The Triton chunkwise kernels (autograd on) in float32: the padded batch against the rows alone on the same
    kernels, within twice the float32 bound (two float32 runs, each within the bound of the exact result). Three
    rows, the interpreter being slow: 18 tokens (across the chunk boundary), 7 (after 16 pads on the left), none;
    the same batches without the mask differ on the PyTorch backends."""
    model = MODELS[family](torch.float32)
    model.runtime = model.runtime.replace(mlstm_backend="triton")
    check_rows(model, side, initial, ratio=2 * TOLERANCES[torch.float32], lengths=(18, 7, 0),
               check_unmasked=False)


def greedy(model, logits_last: torch.Tensor, state, steps: int = 5) -> list[list[int]]:
    """Greedy ids [B, steps], token by token (the mLSTM's step form) from the logits of the last real token and its
    state."""
    prefill, model.runtime = model.runtime, model.runtime.replace(mlstm_backend="step")
    picked = []
    with torch.no_grad():
        for _ in range(steps):
            ids = logits_last.argmax(-1, keepdim=True)  # [B, 1]
            picked.append(ids)
            logits, state = model.forward_with_state(ids, state)
            logits_last = logits[:, -1]
    model.runtime = prefill
    return torch.cat(picked, 1).tolist()


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("family", MODELS)
@torch.no_grad()
def test_greedy_continuation(family, side):
    """Five greedy tokens decoded step by step (the step form) from the padded batch's state (the chunkwise form) are
    the ids each row decodes alone."""
    model = MODELS[family]().eval()
    rows, ids, mask = make_batch(side, LENGTHS[:4], seed=3)  # rows with at least one token
    logits, state = model.forward_with_state(ids, attention_mask=mask)
    last = torch.stack([logits[b, mask[b].nonzero().max()] for b in range(len(rows))])
    batch_ids = greedy(model, last, state)
    for b, row in enumerate(rows):
        alone, alone_state = model.forward_with_state(row[None])
        assert greedy(model, alone[:, -1], alone_state) == [batch_ids[b]], f"row {b}"
    # not vacuous: without the mask, some row continues differently (right padding: from its pads' logits and state)
    unmasked_logits, unmasked_state = model.forward_with_state(ids)
    unmasked_last = torch.stack([unmasked_logits[b, mask[b].nonzero().max()] for b in range(len(rows))])
    assert greedy(model, unmasked_last, unmasked_state) != batch_ids


DECODE_BACKENDS = ["step", pytest.param("triton", marks=pytest.mark.skipif(not _has_triton(), reason="no triton"))]


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("backend", DECODE_BACKENDS)
@pytest.mark.parametrize("family", MODELS)
@torch.no_grad()
def test_one_masked_decode_step(family, backend, inplace):
    """One token (S = 1) with some rows masked (all-zero rows of one step): their state stays exactly as it was,
    the other rows get the step without a mask. The Triton step kernel in float32, in place or not."""
    dtype = torch.float32 if backend == "triton" else torch.float64
    model = MODELS[family](dtype).eval()
    model.runtime = model.runtime.replace(mlstm_backend=backend)
    B = 4
    prefix = warm_state(model, B)
    ids = torch.randint(0, V, (B, 1), generator=torch.Generator().manual_seed(4)).to(DEVICE)
    mask = torch.tensor([[1], [0], [1], [0]], device=DEVICE)
    plain_logits, plain = model.forward_with_state(ids, prefix)
    given = model.allocate_state(B) if inplace else prefix
    if inplace:
        for target, source in zip(tensors(given), tensors(prefix), strict=True):
            target.copy_(source)
    addresses = [t.data_ptr() for t in tensors(given)]
    logits, state = model.forward_with_state(ids, given, attention_mask=mask, inplace=inplace)
    if inplace:
        assert state is given and [t.data_ptr() for t in tensors(state)] == addresses
    assert torch.isfinite(logits).all()
    for b in range(B):
        for j, (new, old, step) in enumerate(zip(tensors(row_of(state, b)), tensors(row_of(prefix, b)),
                                                 tensors(row_of(plain, b)), strict=True)):
            if mask[b, 0]:
                assert_close(f"state[{b}] tensor {j}", step, new)
            else:
                assert torch.equal(new, old), f"state[{b}] tensor {j} changed at a pad"
        if mask[b, 0]:
            assert_close(f"logits[{b}]", plain_logits[b], logits[b])
    changed = [(a - c).abs().max() for a, c in zip(tensors(row_of(plain, 1)), tensors(row_of(prefix, 1)), strict=True)]
    assert max(changed) > 1e-3  # the unmasked step changes the padded row's state


@torch.no_grad()
def test_large_segments_slice_the_mask():
    """Without autograd xLSTM Large runs long inputs in segments; the mask is sliced with them."""
    model = large()
    _, ids, mask = make_batch("left")
    logits, state = model.forward_with_state(ids, attention_mask=mask)
    model.runtime = model.runtime.replace(max_inference_chunksize=5)
    seg_logits, seg_state = model.forward_with_state(ids, attention_mask=mask)
    real = mask.bool()
    assert_close("logits", logits[real], seg_logits[real])
    for a, b in zip(tensors(state), tensors(seg_state), strict=True):
        assert_close("state", a, b, atol=1e-12)


def test_large_hidden_states_and_forward():
    """The backbone appends the input of every block and the final normed output to a given list; forward passes
    attention_mask through; a bool mask equals the integer one; a mask of all ones is the plain call."""
    model = large()
    _, ids, mask = make_batch("left")
    hidden = []
    out, _ = model.backbone(ids, None, model.runtime, attention_mask=mask.bool(), hidden_states=hidden)
    assert len(hidden) == model.config.num_blocks + 1 and hidden[-1] is out
    assert torch.equal(hidden[0], model.backbone.embeddings(ids))
    logits, _ = model(ids, attention_mask=mask)
    assert torch.equal(logits, model.logits(out))
    assert torch.equal(model(ids, attention_mask=mask.bool())[0], logits)
    ones = torch.ones_like(mask)
    assert torch.equal(model(ids, attention_mask=ones)[0], model(ids)[0])


def test_neurips_forward_takes_the_mask():
    model = neurips()
    _, ids, mask = make_batch("right")
    logits = model(ids, attention_mask=mask)
    assert torch.equal(logits, model.forward_with_state(ids, attention_mask=mask.bool())[0])
    assert torch.equal(model(ids, attention_mask=torch.ones_like(mask)), model(ids))
    x = model.token_embedding(ids)
    y, _ = model.xlstm_block_stack.forward_with_state(x, attention_mask=mask)
    assert torch.equal(model.lm_head(y), logits)


def _bad(mask_rows, dtype=torch.long):
    return torch.tensor(mask_rows, dtype=dtype)


@pytest.mark.parametrize("family", MODELS)
@pytest.mark.parametrize(("mask", "resets", "error", "message"), [
    (_bad([[1, 1, 1]]), None, ValueError, r"attention_mask must have shape \(2, 3\)"),
    (_bad([[1, 1, 1, 1], [1, 1, 1, 1]]), None, ValueError, r"must have shape \(2, 3\).*got \(2, 4\)"),
    (_bad([[0, 2, 1], [1, 1, 1]]), None, ValueError, r"only 0 \(a pad\) and 1 \(a token\), got 2 at \(row 0, token 1"),
    (_bad([[1, 1, 1], [-1, 1, 1]]), None, ValueError, r"got -1 at \(row 1, token 0\)"),
    (_bad([[1, 1, 1], [1, 0, 1]]), None, ValueError, r"row 1 has a hole: pads at tokens 1\.\.1"),
    (_bad([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], torch.float32), None, TypeError, "bool or integer tensor.*float32"),
    ([[1, 1, 1], [1, 1, 1]], None, TypeError, "got list"),
    (_bad([[0, 1, 1], [1, 1, 1]]), _bad([[1, 0, 0], [0, 0, 0]], torch.bool), ValueError,
     r"resets marks padded position \(row 0, token 0\)"),
])
def test_bad_attention_mask(family, mask, resets, error, message):
    model = MODELS[family]()
    ids = torch.randint(0, V, (2, 3), device=DEVICE)
    mask = mask.to(DEVICE) if isinstance(mask, torch.Tensor) else mask
    with pytest.raises(error, match=message):
        model.forward_with_state(ids, attention_mask=mask, resets=None if resets is None else resets.to(DEVICE))
