"""The Triton mLSTM against the float64 recurrent reference: outputs, final states, all gradients.

Without a GPU the kernels run in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1) on tiny shapes;
on a GPU the same tests run compiled. Outputs are allocated with torch.empty, which the test suite fills with NaN,
so any element a kernel leaves unwritten fails.
"""

import pytest
import torch
from test_mlstm import assert_all_close, make_inputs, run

from xlstm_engine.ops.mlstm import mlstm, mlstm_recurrent_naive, mLSTMState
from xlstm_engine.testing import TOLERANCES, assert_close, error_ratio

pytest.importorskip("triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def run_triton(inputs, dtype=torch.float32, **kwargs):
    """`run` with the Triton backend on inputs cast to dtype (on the GPU when there is one)."""
    cast = {name: t.detach().to(DEVICE, dtype if name in "qkv" else torch.float32) for name, t in inputs.items()}
    return {name: t.cpu() for name, t in run(cast, "triton", **kwargs).items() if t is not None}


@pytest.mark.parametrize("input_gate", ["exp", "sigmoid"])
@pytest.mark.parametrize(("S", "DK", "DV", "chunk_size"), [
    (1, 16, 16, 16), (7, 16, 32, 16), (63, 32, 16, 16), (100, 48, 80, 32), (200, 16, 16, 64)])
def test_triton_matches_naive(S, DK, DV, chunk_size, input_gate):
    inputs = make_inputs(S=S, DK=DK, DV=DV)
    ref = run(inputs, "naive_recurrent", input_gate=input_gate)
    assert_all_close(ref, run_triton(inputs, input_gate=input_gate, chunk_size=chunk_size))


def test_triton_long_sequence():
    inputs = make_inputs(B=1, S=1000, H=1, DK=16, DV=16)
    ref = run(inputs, "naive_recurrent")
    assert_all_close(ref, run_triton(inputs, chunk_size=128))


@pytest.mark.parametrize("input_gate", ["exp", "sigmoid"])
def test_triton_resets_match_naive(input_gate):
    inputs = make_inputs(S=90, DK=16, DV=32)
    resets = torch.rand(2, 90, generator=torch.Generator().manual_seed(3)) < 0.08
    resets[0, 32] = True  # one on a chunk boundary
    ref = run(inputs, "naive_recurrent", input_gate=input_gate, resets=resets)
    assert_all_close(ref, run_triton(inputs, input_gate=input_gate, chunk_size=32, resets=resets.to(DEVICE)))


@pytest.mark.parametrize(("i_shift", "f_shift"), [(30.0, 2.0), (-30.0, 2.0), (0.0, 30.0), (0.0, -30.0)])
def test_triton_extreme_gates(i_shift, f_shift):
    inputs = make_inputs(S=40, DK=16, DV=16, i_shift=i_shift, f_shift=f_shift)
    ref = run(inputs, "naive_recurrent")
    out = run_triton(inputs, chunk_size=16)
    for name in ("h", "C", "n", "m"):  # the gradients run through the PyTorch chunkwise recompute
        assert_close_or_float32_error(name, ref[name], out[name], inputs)


def assert_close_or_float32_error(name, ref, out, inputs):
    """Within the float32 bound, or within twice the float32 time loop's own error (extreme gates lose digits in
    any float32 implementation)."""
    x = {k: t.detach().float() for k, t in inputs.items()}
    h, state = mlstm_recurrent_naive(x["q"], x["k"], x["v"], x["i"], x["f"], mLSTMState(x["C0"], x["n0"], x["m0"]))
    own = error_ratio(ref, dict(h=h, C=state.C, n=state.n, m=state.m)[name])
    assert_close(name, ref, out, max(TOLERANCES[torch.float32], 2 * own))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_half_precision_inputs(dtype):
    inputs = make_inputs(S=50, DK=32, DV=32)
    rounded = {name: t.detach().to(dtype).double() if name in "qkv" else t for name, t in inputs.items()}
    ref = run(rounded, "naive_recurrent")  # the reference sees the same rounded q, k, v
    out = run_triton(inputs, dtype=dtype, chunk_size=16)
    assert out["h"].dtype == dtype and out["C"].dtype == torch.float32
    for name in ("h", "C", "n", "m"):
        assert_close(name, ref[name], out[name].double(), ratio=1e-2)


def test_triton_without_initial_state():
    inputs = make_inputs(S=30, DK=16, DV=16)
    x = {name: t.detach().to(DEVICE) for name, t in inputs.items()}
    h, state = mlstm(*(x[n].float() for n in "qkvif"), backend="triton", chunk_size=16, output_final_state=True)
    d = {name: t.detach() for name, t in inputs.items()}
    ref_h, ref_state = mlstm_recurrent_naive(*(d[n] for n in "qkvif"))
    assert_close("h", ref_h, h.cpu())
    for name, a, b in zip("Cnm", ref_state, state, strict=True):
        assert_close(name, a, b.cpu())


@pytest.mark.parametrize(("change", "message"), [
    (dict(DK=8), "multiples of 16"), (dict(DV=520), "multiples of 16 up to 512"), (dict(chunk_size=48), "chunk_size")])
def test_triton_bad_shapes(change, message):
    DK, DV, chunk_size = change.get("DK", 16), change.get("DV", 16), change.get("chunk_size", 16)
    q = torch.randn(1, 4, 1, DK, device=DEVICE)
    v = torch.randn(1, 4, 1, DV, device=DEVICE)
    gates = torch.randn(1, 4, 1, device=DEVICE)
    with pytest.raises(ValueError, match=message):
        mlstm(q, q, v, gates, gates, backend="triton", chunk_size=chunk_size)

