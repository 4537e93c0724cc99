"""A NaN or inf stays where it is: a non-finite input at position P changes no output at an earlier position,
nothing in another document of a packed row, and nothing in another row, in every backend of both ops.

Each test runs the op twice, on clean inputs and with one input poisoned, and requires the outputs that must not
see the poison to be bit-identical (every backend selects masked entries away, so the clean values are computed
by the same operations in both runs). The Triton kernels run in the interpreter here and compiled on a GPU; there,
a chunk whose v holds a NaN or inf is computed in a branch of its own, whose rounding may differ: its rows before
the poison must be finite and agree to the float32 bound instead.
"""

import importlib.util

import pytest
import torch

from xlstm_engine.ops.mlstm import mlstm, mLSTMState
from xlstm_engine.ops.slstm import slstm
from xlstm_engine.testing import assert_close

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
HAS_TRITON = importlib.util.find_spec("triton") is not None
MLSTM_BACKENDS = ["naive_recurrent", "naive_parallel", "chunkwise",
                  pytest.param("triton", marks=pytest.mark.skipif(not HAS_TRITON, reason="triton not installed"))]
P = 45  # the poisoned position: inside the document [30, 50) of row 0, in the middle of a chunk of 16
STARTS = [0, 30, 50, 77]  # row 0's documents when packed; row 1 always runs clean and alone


def mlstm_inputs(S: int, device: str = "cpu"):
    g = torch.Generator().manual_seed(0)
    B, H, DK, DV = 2, 2, 16, 32
    q, k, v = (torch.randn(B, S, H, D, generator=g) for D in (DK, DK, DV))
    i, f = torch.randn(B, S, H, generator=g), torch.randn(B, S, H, generator=g) + 2
    return {name: x.to(device) for name, x in dict(q=q, k=k, v=v, i=i, f=f).items()}


def packed_resets(S: int, device: str = "cpu") -> torch.Tensor:
    resets = torch.zeros(2, S, dtype=torch.bool, device=device)
    resets[0, [s for s in STARTS if s < S]] = True
    return resets


def assert_unaffected(clean: torch.Tensor, poisoned: torch.Tensor, packed: bool, exact: bool = True) -> None:
    """clean, poisoned [B, S, ...]: row 1, row 0 before P and, when packed, row 0's later documents are equal (bit for
    bit; to rounding and finite before P where not `exact`)."""
    assert torch.equal(poisoned[1], clean[1]), "the poison reached another row"
    earlier = (~torch.isfinite(poisoned[0, :P])).flatten(1).any(1).nonzero().flatten().tolist()
    assert not earlier, f"the poison reached earlier positions {earlier}"
    if exact:
        assert torch.equal(poisoned[0, :P], clean[0, :P]), "earlier positions changed"
    else:
        assert_close("earlier positions", clean[0, :P], poisoned[0, :P])
    if packed:
        assert torch.equal(poisoned[0, 50:], clean[0, 50:]), "the poison reached a later document"


def exact_on(backend: str) -> bool:
    """Whether earlier positions must be bit-identical: everywhere but in the compiled Triton kernels."""
    return not (backend == "triton" and DEVICE == "cuda")


@pytest.mark.parametrize("packed", [False, True], ids=["one-document", "packed"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("name", list("qkvif"))
@pytest.mark.parametrize("backend", MLSTM_BACKENDS)
def test_mlstm_nonfinite_stays_in_place(backend, name, value, packed):
    S = 100
    device = DEVICE if backend == "triton" else "cpu"
    inputs = mlstm_inputs(S, device)
    resets = packed_resets(S, device) if packed else None
    kwargs = dict(backend=backend, chunk_size=16, resets=resets, output_final_state=True)
    h_clean, state_clean = mlstm(**inputs, **kwargs)
    inputs[name][0, P] = value
    h, state = mlstm(**inputs, **kwargs)
    assert_unaffected(h_clean, h, packed, exact_on(backend))
    if value != value:  # a NaN at P reaches the output at P: the poison did go in
        assert not torch.isfinite(h[0, P]).all()
    if packed:  # the final memory is the last document's
        for clean, poisoned in zip(state_clean, state, strict=True):
            assert torch.equal(clean, poisoned)


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")
@pytest.mark.parametrize("name", list("qkvif"))
def test_mlstm_short_prompt_nonfinite_stays_in_place(name):
    """Up to 64 tokens without autograd, the Triton path is one launch (triton/short.py)."""
    S = 60
    inputs = mlstm_inputs(S, DEVICE)
    h_clean, _ = mlstm(**inputs, backend="triton")
    inputs[name][0, P] = float("nan")
    h, _ = mlstm(**inputs, backend="triton")
    assert_unaffected(h_clean, h, packed=False, exact=exact_on("triton"))
    assert not torch.isfinite(h[0, P]).all()


@pytest.mark.parametrize("backend", ["step", *MLSTM_BACKENDS])
@pytest.mark.parametrize("S", [1, 20])
def test_mlstm_reset_clears_a_nonfinite_state(backend, S):
    """A reset before the first token empties a memory that holds NaN and inf: that row computes as from an empty
    memory, and the other row keeps its own state."""
    if backend == "step" and S > 1:
        pytest.skip("the step backend takes one token")
    device = DEVICE if backend == "triton" else "cpu"
    inputs = mlstm_inputs(S, device)
    g = torch.Generator().manual_seed(1)
    state = mLSTMState(torch.randn(2, 2, 16, 32, generator=g), torch.randn(2, 2, 16, generator=g),
                       torch.randn(2, 2, generator=g)).to(device)
    poisoned = mLSTMState(state.C.clone(), state.n.clone(), state.m.clone())
    poisoned.C[0, 0, 0, 0], poisoned.n[0, 1, 3], poisoned.m[0, 1] = float("nan"), float("inf"), float("nan")
    resets = torch.zeros(2, S, dtype=torch.bool, device=device)
    resets[0, 0] = True
    kwargs = dict(backend=backend, chunk_size=16, output_final_state=True)
    h, final = mlstm(**inputs, initial_state=poisoned, resets=resets, **kwargs)
    h_empty, final_empty = mlstm(**{name: x[:1] for name, x in inputs.items()}, **kwargs)
    h_kept, final_kept = mlstm(**{name: x[1:] for name, x in inputs.items()},
                               initial_state=mLSTMState(*(x[1:] for x in state)), **kwargs)
    # (with resets Triton takes its chunkwise kernels, without them its short-prompt kernel: equal up to rounding)
    assert_close("h", torch.cat([h_empty, h_kept]), h)
    for name, got, empty, kept in zip("Cnm", final, final_empty, final_kept, strict=True):
        assert_close(name, torch.cat([empty, kept]), got)


@pytest.mark.parametrize("packed", [False, True], ids=["one-document", "packed"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("function", ["slstm", "lstm"])
@pytest.mark.parametrize("backend", ["naive", "recurrent"])
def test_slstm_nonfinite_stays_in_place(backend, function, value, packed):
    B, S, H, D = 2, 70, 2, 8
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, S, 4, H, D, generator=g)
    R = torch.randn(H, D, 4, D, generator=g) / D**0.5
    resets = packed_resets(S) if packed else None
    h_clean, state_clean = slstm(x, R, output_final_state=True, function=function, backend=backend, resets=resets)
    x[0, P, 1, 0, 2] = value  # one forget-gate pre-activation of one head
    x[0, P, 2, 1, 5] = value  # one cell input of the other head
    h, state = slstm(x, R, output_final_state=True, function=function, backend=backend, resets=resets)
    assert_unaffected(h_clean, h, packed)
    if value != value:
        assert not torch.isfinite(h[0, P]).all()
    if packed:
        for clean, poisoned in zip(state_clean, state, strict=True):
            assert torch.equal(clean, poisoned)
