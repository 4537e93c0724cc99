"""The Triton mLSTM against the float64 recurrent reference: outputs, final states, all gradients.

Without a GPU the kernels run in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1) on tiny shapes;
on a GPU the same tests run compiled. Outputs are allocated with torch.empty, which the test suite fills with NaN,
so any element a kernel leaves unwritten fails.
"""

import pytest
import torch
from test_mlstm import assert_all_close, make_inputs, run

from xlstm_engine.ops.mlstm import mlstm, mlstm_recurrent_naive, mLSTMState
from xlstm_engine.testing import adaptive_ratio, assert_close

pytest.importorskip("triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def run_triton(inputs, dtype=torch.float32, **kwargs):
    """`run` with the Triton backend on inputs cast to dtype (on the GPU when there is one)."""
    cast = {name: t.detach().to(DEVICE, dtype if name in "qkv" else torch.float32) for name, t in inputs.items()}
    return {name: t.cpu() for name, t in run(cast, "triton", **kwargs).items() if t is not None}


@pytest.mark.parametrize("input_gate", ["exp", "sigmoid"])
@pytest.mark.parametrize(("S", "DK", "DV", "chunk_size"), [
    (1, 16, 16, 16), (7, 16, 32, 16), (63, 32, 16, 16), (100, 48, 80, 32), (200, 16, 16, 64), (20, 512, 32, 16),
    (20, 80, 512, 16), (40, 32, 144, 16)])
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


@pytest.mark.parametrize("input_gate", ["exp", "sigmoid"])
@pytest.mark.parametrize("with_resets", [False, True])
@pytest.mark.parametrize("S", [100, 300])
def test_triton_forward_chunk_128(S, with_resets, input_gate):
    """A forward chunk of 128 (the backward recomputes with chunks of 64), with document boundaries inside a chunk
    and on its middle row."""
    inputs = make_inputs(S=S, DK=16, DV=32, f_shift=4.0)
    resets = None
    if with_resets:
        resets = torch.zeros(2, S, dtype=torch.bool)
        resets[0, [40, 64, 200 % S]] = True
        resets[1, [97]] = True
    ref = run(inputs, "naive_recurrent", input_gate=input_gate, resets=resets)
    out = run_triton(inputs, input_gate=input_gate, chunk_size=128,
                     resets=None if resets is None else resets.to(DEVICE))
    assert_all_close(ref, out)


@pytest.mark.parametrize(("i_shift", "f_shift"), [(30.0, 2.0), (-30.0, 2.0), (0.0, 30.0), (0.0, -30.0)])
@pytest.mark.parametrize("input_gate", ["exp", "sigmoid"])
def test_triton_extreme_gates(i_shift, f_shift, input_gate):
    inputs = make_inputs(S=40, DK=16, DV=16, i_shift=i_shift, f_shift=f_shift)
    ref = run(inputs, "naive_recurrent", input_gate=input_gate)
    out = run_triton(inputs, input_gate=input_gate, chunk_size=16)
    # within the float32 bound, or within twice the float32 time loop's own error (extreme gates lose digits in any
    # float32 implementation), but never more than ADAPTIVE_CEILINGS[float32]
    own = run({name: t.detach().float() for name, t in inputs.items()}, "naive_recurrent", input_gate=input_gate)
    for name in ref:
        assert_close(name, ref[name], out[name], adaptive_ratio(ref[name], own[name]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_half_precision_inputs(dtype):
    inputs = make_inputs(S=50, DK=32, DV=32)
    rounded = {name: t.detach().to(dtype).double() if name in "qkv" else t for name, t in inputs.items()}
    ref = run(rounded, "naive_recurrent")  # the reference sees the same rounded q, k, v
    out = run_triton(inputs, dtype=dtype, chunk_size=16)
    assert out["h"].dtype == dtype and out["C"].dtype == torch.float32
    for name in ("h", "C", "n", "m"):
        assert_close(name, ref[name], out[name].double(), ratio=1e-2)


@pytest.mark.parametrize("input_gate", ["exp", "sigmoid"])
def test_triton_without_initial_state(input_gate):
    inputs = make_inputs(S=30, DK=16, DV=16)
    results = []
    for backend, dtype, device in (("naive_recurrent", torch.float64, "cpu"), ("triton", torch.float32, DEVICE)):
        x = {name: t.detach().to(device, dtype).requires_grad_() for name, t in inputs.items() if name in "qkvif"}
        h, state = mlstm(*x.values(), backend=backend, input_gate=input_gate, chunk_size=16, output_final_state=True)
        outputs = dict(h=h, C=state.C, n=state.n, m=state.m)
        projection(outputs).backward()
        results.append({**outputs, **{f"d{name}": t.grad for name, t in x.items()}})
    ref, out = results
    assert_all_close(ref, {name: t.cpu() for name, t in out.items()})


@pytest.mark.parametrize("wanted", ["h", "C", "n", "m"])
def test_triton_gradient_of_one_output(wanted):
    """Gradients where the other outputs are unused (autograd passes None for them)."""
    inputs = make_inputs(S=20, DK=16, DV=16)
    results = []
    for backend, dtype, device in (("naive_recurrent", torch.float64, "cpu"), ("triton", torch.float32, DEVICE)):
        x = {name: t.detach().to(device, dtype).requires_grad_() for name, t in inputs.items()}
        h, (C, n, m) = mlstm(*(x[name] for name in "qkvif"), initial_state=mLSTMState(x["C0"], x["n0"], x["m0"]),
                             backend=backend, chunk_size=16, output_final_state=True)
        projection(dict(h=h, C=C, n=n, m=m)[wanted]).backward()
        results.append({f"d{name}": torch.zeros_like(t) if t.grad is None else t.grad for name, t in x.items()})
    ref, out = results
    assert_all_close(ref, {name: t.cpu() for name, t in out.items()})


def projection(outputs):
    """A fixed random projection of outputs (a dict or one tensor) to a scalar loss."""
    g = torch.Generator().manual_seed(1)
    tensors = outputs.values() if isinstance(outputs, dict) else [outputs]
    return sum((t * torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.device, t.dtype)).sum()
               for t in tensors)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_triton_on_cpu_tensors_without_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    q = torch.randn(1, 4, 1, 16)
    gates = torch.randn(1, 4, 1)
    with pytest.raises(ValueError, match="CUDA tensors"):
        mlstm(q, q, q, gates, gates, backend="triton")


@pytest.mark.parametrize(("change", "message"), [
    (dict(DK=8), "multiples of 16"), (dict(DV=520), "multiples of 16 up to 512"), (dict(chunk_size=48), "chunk_size")])
def test_triton_bad_shapes(change, message):
    DK, DV, chunk_size = change.get("DK", 16), change.get("DV", 16), change.get("chunk_size", 16)
    q = torch.randn(1, 4, 1, DK, device=DEVICE)
    v = torch.randn(1, 4, 1, DV, device=DEVICE)
    gates = torch.randn(1, 4, 1, device=DEVICE)
    with pytest.raises(ValueError, match=message):
        mlstm(q, q, v, gates, gates, backend="triton", chunk_size=chunk_size)



@pytest.mark.parametrize("input_gate", ["exp", "sigmoid"])
@pytest.mark.parametrize(("DK", "DV"), [(16, 16), (48, 80), (512, 32), (32, 512)])
def test_triton_step_matches_naive(DK, DV, input_gate):
    """Token by token with the fused step kernel, the state updated in place: outputs and the final state."""
    x = {name: t.detach() for name, t in make_inputs(S=6, DK=DK, DV=DV).items()}
    ref_h, ref_state = mlstm_recurrent_naive(*(x[n] for n in "qkvif"), mLSTMState(x["C0"], x["n0"], x["m0"]),
                                             input_gate=input_gate)
    state = mLSTMState(*(x[n].to(DEVICE, torch.float32) for n in ("C0", "n0", "m0")))
    buffers = tuple(t.data_ptr() for t in state)
    hs = []
    for t in range(6):
        h, new = mlstm(*(x[n][:, t:t + 1].to(DEVICE, torch.float32) for n in "qkvif"), initial_state=state,
                       backend="triton", input_gate=input_gate, output_final_state=True, inplace=True)
        assert tuple(t.data_ptr() for t in new) == buffers
        hs.append(h)
    assert_close("h", ref_h, torch.cat(hs, 1).cpu())
    for name, a, b in zip("Cnm", ref_state, state, strict=True):
        assert_close(name, a, b.cpu())


def test_triton_step_state_dtypes_and_resets():
    """A bfloat16 state stays in its buffers in place, and comes back as a new float32 state otherwise; a reset
    empties the memory first."""
    x = {name: t.detach().float().to(DEVICE) for name, t in make_inputs(S=1, DK=32, DV=32).items()}
    resets = torch.tensor([True, False], device=DEVICE)[:, None]
    state = mLSTMState(x["C0"], x["n0"], x["m0"])
    ref_h, ref_state = mlstm(*(x[n] for n in "qkvif"), initial_state=state, backend="step", resets=resets,
                             output_final_state=True)
    h, new = mlstm(*(x[n] for n in "qkvif"), initial_state=state, backend="triton", resets=resets,
                   output_final_state=True)
    assert_close("h", ref_h, h)
    for name, a, b in zip("Cnm", ref_state, new, strict=True):
        assert_close(name, a, b)
    half = state.to(torch.bfloat16)
    h, new = mlstm(*(x[n] for n in "qkvif"), initial_state=half, backend="triton", output_final_state=True)
    assert all(t.dtype == torch.float32 for t in new)
    ref_h, _ = mlstm(*(x[n] for n in "qkvif"), initial_state=half.to(torch.float32), backend="step")
    assert_close("h", ref_h, h)
    h, new = mlstm(*(x[n] for n in "qkvif"), initial_state=half, backend="triton", output_final_state=True,
                   inplace=True)
    assert new is half and new.C.dtype == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="full size needs a GPU")
@pytest.mark.parametrize("input_gate", ["exp", "sigmoid"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_full_size_on_gpu(dtype, input_gate):
    """The xLSTM-7B head geometry (8 heads, 256/512) at S = 1000: everything against float64 (on the GPU)."""
    inputs = make_inputs(B=2, S=1000, H=8, DK=256, DV=512)
    rounded = {name: t.detach().to("cuda", dtype).double() if name in "qkv" else t.detach().cuda()
               for name, t in inputs.items()}
    ref = run(rounded, "chunkwise", input_gate=input_gate, chunk_size=64)  # = naive_recurrent to 1e-10 (CPU tests)
    out = run_triton(inputs, dtype=dtype, input_gate=input_gate, chunk_size=64)
    assert_all_close({name: t.cpu() for name, t in ref.items()}, out, None if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize("input_gate", ["exp", "sigmoid"])
@pytest.mark.parametrize(("S", "DK", "DV", "i_shift", "f_shift"), [
    (2, 16, 16, 0.0, 2.0), (7, 48, 80, 0.0, 2.0), (16, 32, 512, 0.0, 2.0), (33, 16, 32, 0.0, 2.0),
    (64, 16, 16, 0.0, 2.0), (20, 16, 16, 30.0, 2.0), (20, 16, 16, 0.0, -30.0)])
def test_triton_short_prompt_matches_naive(S, DK, DV, i_shift, f_shift, input_gate):
    """Without autograd, up to SHORT_PROMPT tokens run in one launch: outputs and the new state."""
    x = {name: t.detach() for name, t in make_inputs(S=S, DK=DK, DV=DV, i_shift=i_shift, f_shift=f_shift).items()}
    ref_h, ref_state = mlstm_recurrent_naive(*(x[n] for n in "qkvif"), mLSTMState(x["C0"], x["n0"], x["m0"]),
                                             input_gate=input_gate)
    cast = {name: t.to(DEVICE, torch.float32) for name, t in x.items()}
    state = mLSTMState(cast["C0"], cast["n0"], cast["m0"])
    h, new = mlstm(*(cast[n] for n in "qkvif"), initial_state=state, backend="triton", input_gate=input_gate,
                   output_final_state=True, inplace=True)
    assert new is state
    float32_h, float32_state = mlstm_recurrent_naive(*(x[n].float() for n in "qkvif"),
                                                     mLSTMState(*(x[n].float() for n in ("C0", "n0", "m0"))),
                                                     input_gate=input_gate)
    for name, a, b, own in zip(("h", "C", "n", "m"), (ref_h, *ref_state), (h, *state), (float32_h, *float32_state),
                               strict=True):  # extreme gates: within twice the float32 loop's own error (capped)
        assert_close(name, a, b.cpu(), adaptive_ratio(a, own))


def test_triton_short_prompt_half_precision_and_empty_state():
    x = {name: t.detach() for name, t in make_inputs(S=24, DK=32, DV=32).items()}
    rounded = {name: t.to(torch.bfloat16).double() if name in "qkv" else t for name, t in x.items()}
    ref_h, ref_state = mlstm_recurrent_naive(*(rounded[n] for n in "qkvif"))
    h, state = mlstm(*(x[n].to(DEVICE, torch.bfloat16 if n in "qkv" else torch.float32) for n in "qkvif"),
                     backend="triton", output_final_state=True)
    assert h.dtype == torch.bfloat16 and state.C.dtype == torch.float32
    for name, a, b in zip(("h", "C", "n", "m"), (ref_h, *ref_state), (h, *state), strict=True):
        assert_close(name, a, b.cpu().double(), ratio=1e-2)


@pytest.mark.parametrize("input_gate", ["exp", "sigmoid"])
def test_triton_gate_preparation_kernel(input_gate):
    """The gate kernel (no resets) against the PyTorch preparation (the packed-documents path, with no reset),
    with gate pre-activations up to +-40, where log sigmoid needs log1p's accuracy."""
    from xlstm_engine.ops.mlstm.triton.gates import prepare_gates

    g = torch.Generator().manual_seed(0)
    i, f = (torch.randn(2, 70, 3, generator=g) * 15 for _ in range(2))
    extremes = torch.tensor([40.0, 30.0, 20.0, 15.0, 9.0, -9.0, -20.0, -40.0, 1e-3, 0.0])
    f[0, :10, 0] = i[0, :10, 0] = extremes
    i, f = i.to(DEVICE), f.transpose(0, 1).contiguous().transpose(0, 1).to(DEVICE)  # strides of their own
    kernel = prepare_gates(i, f, input_gate, None, 32, 3)
    torch_path = prepare_gates(i, f, input_gate, torch.zeros(2, 70, dtype=torch.bool, device=DEVICE), 32, 3)
    for name in ("b_decay", "b_inflow", "log_i", "a", "g", "m_chunk"):
        finite = torch.isfinite(getattr(torch_path, name))
        assert torch.equal(finite, torch.isfinite(getattr(kernel, name))), name
        assert_close(name, getattr(torch_path, name)[finite].double().cpu(), getattr(kernel, name)[finite].cpu(),
                     ratio=1e-6)
    if input_gate == "sigmoid":  # each value to float32 accuracy, e^-40 included
        x = extremes.double()
        exact = torch.nn.functional.logsigmoid(x)
        # a few float32 ulps times the condition number |x sigmoid(-x) / log sigmoid(x)| (about x for large x:
        # the GPU's exp(-x) rounds x * log2(e) to float32 first)
        bound = 2**-20 * torch.clamp((x * torch.sigmoid(-x) / exact).abs(), min=1.0) * exact.abs()
        assert ((kernel.log_i[0, :10].double().cpu() - exact).abs() <= bound).all()
