"""The fast sLSTM against the float64 time-loop reference (outputs, final states, all gradients), and the reference
against the official xlstm package."""

import functools
import sys

import pytest
import torch

from xlstm_engine.ops.slstm import slstm, sLSTMState
from xlstm_engine.testing import adaptive_ratio, assert_close, error_ratio

FUNCTIONS = ["slstm", "lstm"]
# initial states: none (zeros), random with n > 0 except some entries exactly 0 (where the first-step rule binds),
# all n > 0, and some n < 0 (meaningless, but the fast path must still follow the definition)
INITS = ["none", "mixed", "positive", "negative"]


def make_inputs(B=3, S=7, H=2, D=5, dtype=torch.float64, init="mixed", i_shift=0.0, f_shift=0.0, seed=0):
    """Fresh leaves: x [B, S, 4, H, D] (gates i, f, z, o, shifted), R [H, D, 4, D] and an initial state."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

    x = randn(B, S, 4, H, D, scale=2.0)
    x[:, :, 0] += i_shift
    x[:, :, 1] += f_shift
    inputs = dict(x=x, R=randn(H, D, 4, D, scale=D**-0.5))
    if init != "none":
        n0 = torch.rand(B, H, D, generator=g, dtype=torch.float64) + 0.1
        if init == "mixed":
            n0[0] = 0  # a whole sequence starting empty
            n0[1:][torch.rand(B - 1, H, D, generator=g) < 0.3] = 0
        elif init == "negative":
            n0[torch.rand(B, H, D, generator=g) < 0.3] *= -1
        inputs.update(h0=randn(B, H, D, scale=0.5), c0=randn(B, H, D), n0=n0, m0=randn(B, H, D))
    return {name: t.to(dtype) for name, t in inputs.items()}


def run(inputs, backend, function="slstm"):
    """Outputs, final state and the gradients of a random projection of all of them."""
    x = {name: t.detach().clone().requires_grad_() for name, t in inputs.items()}
    state = sLSTMState(x["h0"], x["c0"], x["n0"], x["m0"]) if "h0" in x else None
    h, final = slstm(x["x"], x["R"], initial_state=state, output_final_state=True, function=function,
                     backend=backend)
    outputs = dict(h=h, **{f"{name}S": t for name, t in zip("hcnm", final, strict=True)})
    g = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype)).sum() for t in outputs.values())
    loss.backward()
    return dict(**outputs, **{f"d{name}": t.grad for name, t in x.items()})


@functools.cache
def reference(S, function, init, i_shift=0.0, f_shift=0.0):
    return run(make_inputs(S=S, init=init, i_shift=i_shift, f_shift=f_shift), "naive", function)


def assert_all_close(ref, out, ratio=None):
    assert ref.keys() == out.keys()
    for name in ref:
        assert_close(name, ref[name], out[name], ratio)


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("S", [1, 7, 100, 300])
def test_matches_naive(S, function, init):
    out = run(make_inputs(S=S, init=init), "recurrent", function)
    assert_all_close(reference(S, function, init), out)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_auto_is_recurrent(function, monkeypatch):
    """backend="auto" runs the recurrent implementation (and not the reference), and gives the reference's result."""
    ops = sys.modules["xlstm_engine.ops.slstm"]  # the package (xlstm_engine.ops.slstm is the function)
    calls = []
    for name in ("slstm_recurrent", "slstm_naive"):
        impl = getattr(ops, name)
        monkeypatch.setattr(ops, name, lambda *a, impl=impl, name=name, **k: calls.append(name) or impl(*a, **k))
    x = make_inputs(S=20)
    out = run(x, "auto", function)
    assert calls == ["slstm_recurrent"], f"backend='auto' ran {calls}"
    calls.clear()
    assert_all_close(run(x, "naive", function), out)
    assert calls == ["slstm_naive"], f"backend='naive' ran {calls}"  # the spies see the dispatch


def test_first_step_rule_matters():
    """The mixed initial state exercises the first-step rule: without it (n0 slightly above 0) the result differs."""
    x = make_inputs(S=7, init="mixed")
    nudged = dict(x, n0=torch.where(x["n0"] == 0, 1e-300, x["n0"]))
    ref, out = run(x, "naive"), run(nudged, "naive")
    assert error_ratio(ref["h"], out["h"]) > 1e-3
    assert error_ratio(ref["dm0"], out["dm0"]) > 1e-3


def test_ties_follow_torch_maximum():
    """Where i_raw = lf exactly, torch.maximum splits the gradient of m evenly; the fast path does the same.

    The step is a tie everywhere: h0 = 0, so raw = x; f = 50, so lf = m0 + log sigmoid(50) = m0 in float64; i = m0.
    (One step, so that the loss sees the stabilized state itself: later steps would largely absorb a shift of m.)
    """
    x = make_inputs(S=1, init="positive")
    x["h0"] = torch.zeros_like(x["h0"])
    x["m0"] = torch.full_like(x["m0"], 1.5)
    x["x"][:, 0, 0], x["x"][:, 0, 1] = 1.5, 50.0
    ref = run(x, "naive")
    assert_all_close(ref, run(x, "recurrent"))
    split = run(dict(x, m0=torch.full_like(x["m0"], 1.5 + 1e-12)), "naive")  # no tie: all of dm goes to m0
    assert error_ratio(ref["dm0"], split["dm0"]) > 1e-3


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("split", [1, 37, 99])
def test_state_passing(split, function):
    """Running [0, split) and then [split, S) from the carried state equals one call."""
    inputs = make_inputs(S=100)
    x, R = inputs["x"], inputs["R"]
    state = sLSTMState(inputs["h0"], inputs["c0"], inputs["n0"], inputs["m0"])
    h_full, s_full = slstm(x, R, initial_state=state, output_final_state=True, function=function)
    h1, s1 = slstm(x[:, :split], R, initial_state=state, output_final_state=True, function=function)
    h2, s2 = slstm(x[:, split:], R, initial_state=s1, output_final_state=True, function=function)
    assert_close("h", h_full, torch.cat([h1, h2], 1))
    for name, a, b in zip("hcnm", s_full, s2, strict=True):
        assert_close(name, a, b)


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_inputs(dtype, function):
    """float32 and bfloat16 inputs against float64 on the same (rounded) values; the state is float32."""
    x = make_inputs(S=100, dtype=dtype)
    out = run(x, "recurrent", function)
    ref = run({n: t.double() for n, t in x.items()}, "naive", function)
    assert out["h"].dtype == dtype and out["cS"].dtype == torch.float32 and out["dx"].dtype == dtype
    for name in ("h", "hS", "cS", "nS", "mS"):
        assert_close(name, ref[name], out[name], ratio=1e-2 if name == "h" and dtype == torch.bfloat16 else 1e-5)
    if dtype == torch.float32:
        for name in ("dx", "dR", "dh0", "dc0", "dn0", "dm0"):
            assert_close(name, ref[name], out[name], ratio=1e-5)


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("i_shift", [-30.0, 30.0])
@pytest.mark.parametrize("f_shift", [-30.0, 30.0])
def test_extreme_gates(i_shift, f_shift, function):
    """Gate pre-activations around +-30 stay finite and match the reference.

    float32 is held to 1e-5 or to twice the error of the float32 time loop on the same inputs, whichever is
    larger, but never more than ADAPTIVE_CEILINGS[float32]: the fast path must be no less accurate than the plain
    loop.
    """
    shifts = dict(i_shift=i_shift, f_shift=f_shift)
    ref = reference(100, function, "mixed", **shifts)
    assert_all_close(ref, run(make_inputs(S=100, **shifts), "recurrent", function))

    x32 = make_inputs(S=100, dtype=torch.float32, **shifts)
    ref = run({n: t.double() for n, t in x32.items()}, "naive", function)
    loop32, out32 = run(x32, "naive", function), run(x32, "recurrent", function)
    for name in ref:
        assert_close(name, ref[name], out32[name], ratio=adaptive_ratio(ref[name], loop32[name]))


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("init", ["none", "positive"])
def test_naive_matches_official(init, function):
    """The reference against the official xlstm vanilla sLSTM, outputs and final states, and gradients of x, R.

    The official one applies the first-step rule only when n = 0 everywhere, so the states here are all zero or
    all positive, where the two definitions agree.
    """
    vanilla = pytest.importorskip("xlstm.blocks.slstm.src.vanilla")
    inputs = make_inputs(B=2, S=50, H=3, D=4, init=init)
    ours = run(inputs, "naive", function)

    x = inputs["x"].clone().requires_grad_()
    R = inputs["R"].clone().requires_grad_()
    B, S, _, H, D = x.shape
    state = [inputs.get(name, torch.zeros(B, H, D, dtype=torch.float64)) for name in ("h0", "c0", "n0", "m0")]
    states = torch.stack([t.reshape(B, H * D) for t in state][: 4 if function == "slstm" else 2])
    all_states, last, _ = vanilla.slstm_forward(
        x.permute(1, 0, 2, 3, 4).reshape(S, B, 4 * H * D),  # [S, B, (gate, head, dh)]
        states,
        R.permute(0, 2, 3, 1).reshape(H, 4 * D, D),  # R_int[h, g D + j, k] = R[h, k, g, j]
        torch.zeros(4 * H * D, dtype=torch.float64),
        vanilla.slstm_pointwise_function_registry[function],
    )
    theirs = dict(h=all_states[0, 1:].view(S, B, H, D).transpose(0, 1),
                  **{f"{name}S": t.view(B, H, D) for name, t in zip("hcnm", last, strict=False)})
    g = torch.Generator().manual_seed(1)
    # the same random projection as `run`, restricted to the outputs that the official one returns
    weights = {name: torch.randn(t.shape, generator=g, dtype=torch.float64) for name, t in ours.items()
               if name in ("h", "hS", "cS", "nS", "mS")}
    # (the LSTM's n and m, which the official one does not return, are carried unchanged: no gradient to x, R)
    sum((theirs[name] * weights[name]).sum() for name in theirs).backward()
    for name, t in theirs.items():
        assert_close(name, t, ours[name])
    assert_close("dx", x.grad, ours["dx"])
    assert_close("dR", R.grad, ours["dR"])


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize(("B", "S", "H"), [(1, 9, 1), (3, 1, 1)])
def test_input_not_modified(B, S, H, function):
    """Where x's layout is already the fast path's (B = H = 1, or S = H = 1), x is not written to."""
    inputs = make_inputs(B=B, S=S, H=H, init="positive")  # h0 != 0: step 0 writes x_0 + h0 R too
    x = inputs["x"].clone()
    out = run(inputs, "recurrent", function)
    assert torch.equal(inputs["x"], x)
    assert_all_close(run(inputs, "naive", function), out)


def test_zero_initial_state_is_default():
    x = make_inputs(S=20, init="none")
    zeros = sLSTMState.zeros(3, 2, 5, dtype=torch.float64)
    for backend in ("recurrent", "naive"):
        for function in FUNCTIONS:
            h0, s0 = slstm(x["x"], x["R"], backend=backend, function=function, output_final_state=True)
            h1, s1 = slstm(x["x"], x["R"], initial_state=zeros, backend=backend, function=function,
                           output_final_state=True)
            assert torch.equal(h0, h1) and all(torch.equal(a, b) for a, b in zip(s0, s1, strict=True))


def test_final_state_only_on_request():
    x = make_inputs(S=5, init="none")
    h, state = slstm(x["x"], x["R"])
    assert state is None and h.shape == (3, 5, 2, 5)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_no_grad_and_partial_grad(function):
    """Inference under no_grad gives the same numbers, and a gradient for R alone matches the reference."""
    x = make_inputs(S=30)
    state = sLSTMState(x["h0"], x["c0"], x["n0"], x["m0"])
    with torch.no_grad():
        h_ng, s_ng = slstm(x["x"], x["R"], initial_state=state, output_final_state=True, function=function)
    grads = {}
    for backend in ("recurrent", "naive"):
        R = x["R"].clone().requires_grad_()
        h, s = slstm(x["x"], R, initial_state=state, output_final_state=True, function=function, backend=backend)
        if backend == "recurrent":
            assert torch.equal(h, h_ng) and all(torch.equal(a, b) for a, b in zip(s, s_ng, strict=True))
        (h.sum() + s.c.sum()).backward()
        grads[backend] = R.grad
    assert_close("dR", grads["naive"], grads["recurrent"])


def _bad(**changes):
    x = make_inputs(S=5, init="none")
    args = dict(x=x["x"], R=x["R"])
    kwargs = {}
    for key, value in changes.items():
        (args if key in args else kwargs)[key] = value
    return slstm(args["x"], args["R"], **kwargs)


@pytest.mark.parametrize(("changes", "message"), [
    (dict(x=torch.zeros(3, 5, 4, 10)), r"x must be \[B, S, 4, H, D\]"),
    (dict(x=torch.zeros(3, 5, 3, 2, 5)), r"x must be \[B, S, 4, H, D\]"),
    (dict(x=torch.zeros(3, 0, 4, 2, 5)), "empty"),
    (dict(x=torch.zeros(3, 5, 4, 2, 5, dtype=torch.long)), "x must be a floating-point tensor"),
    (dict(R=torch.zeros(2, 5, 4, 6)), r"R must have shape \(2, 5, 4, 5\)"),
    (dict(R=torch.zeros(2, 5, 20)), r"R must have shape \(2, 5, 4, 5\)"),
    (dict(R=[[0.0]]), "R must be a tensor"),
    (dict(backend="cuda"), "unknown sLSTM backend 'cuda'"),
    (dict(function="gru"), "unknown sLSTM function 'gru'"),
    (dict(initial_state=sLSTMState.zeros(4, 2, 5)), r"initial_state.h must have shape \(3, 2, 5\)"),
    (dict(initial_state=sLSTMState.zeros(3, 2, 5)._replace(n=torch.zeros(3, 2))),
     r"initial_state.n must have shape \(3, 2, 5\)"),
    (dict(initial_state=(torch.zeros(3, 2, 5),) * 3), "must be an sLSTMState"),
    (dict(initial_state=sLSTMState.zeros(3, 2, 5)._replace(m=torch.zeros(3, 2, 5, dtype=torch.long))),
     "initial_state.m must be a floating-point tensor"),
])
def test_bad_input(changes, message):
    with pytest.raises((ValueError, TypeError), match=message):
        _bad(**changes)


# ---- resets (packed documents) ----


def make_resets(B=3, S=100, seed=0):
    """Random resets [B, S], different per row: row 0 resets at t = 0 and at the last step, row 1 never at t = 0,
    the last row not at all; about one step in 8 elsewhere."""
    g = torch.Generator().manual_seed(seed)
    resets = torch.rand(B, S, generator=g) < 0.125
    resets[0, 0] = resets[0, S - 1] = True
    if B > 1:
        resets[1, 0] = False
    if B > 2:
        resets[-1] = False
    return resets


def run_resets(inputs, resets, backend, function="slstm"):
    """`run` with resets: outputs, final state and the gradients of a random projection of all of them."""
    x = {name: t.detach().clone().requires_grad_() for name, t in inputs.items()}
    state = sLSTMState(x["h0"], x["c0"], x["n0"], x["m0"]) if "h0" in x else None
    h, final = slstm(x["x"], x["R"], initial_state=state, output_final_state=True, function=function,
                     backend=backend, resets=resets)
    outputs = dict(h=h, **{f"{name}S": t for name, t in zip("hcnm", final, strict=True)})
    g = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype)).sum() for t in outputs.values())
    loss.backward()
    return dict(**outputs, **{f"d{name}": t.grad for name, t in x.items()})


def small_chunks(monkeypatch):
    """Make the fast backward work in chunks of 16 steps (at these sizes it takes the whole sequence at once)."""
    monkeypatch.setattr(sys.modules["xlstm_engine.ops.slstm.recurrent"], "_CHUNK_ELEMENTS", 1)


@pytest.mark.parametrize("backend", ["naive", "recurrent", "recurrent-chunks"])
@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("init", ["none", "mixed"])
def test_resets_equal_separate_documents(init, function, backend, monkeypatch):
    """A packed row with resets at document starts: every document gives the outputs of running it alone from a
    zero state (the first one, if its row is not reset at t = 0, from the initial state), the last one also its
    final state; dx per document, dR summed over documents, the initial state's gradient is zero where t = 0 is
    reset. The loss is the same random projection, split by document."""
    if backend == "recurrent-chunks":
        small_chunks(monkeypatch)
        backend = "recurrent"
    B, S = 3, 64
    inputs = make_inputs(B=B, S=S, init=init)
    resets = make_resets(B, S, seed=2)
    resets[1, 17] = resets[1, 18] = True  # a one-token document
    packed = run_resets(inputs, resets, backend, function)
    g = torch.Generator().manual_seed(1)
    weights = {name: torch.randn(packed[name].shape, generator=g, dtype=torch.float64)
               for name in ("h", "hS", "cS", "nS", "mS")}
    dR = torch.zeros_like(inputs["R"])
    for b in range(B):
        starts = [0, *(t for t in range(1, S) if resets[b, t])]
        for k, (t0, t1) in enumerate(zip(starts, [*starts[1:], S], strict=True)):
            x = inputs["x"][b:b + 1, t0:t1].clone().requires_grad_()
            R = inputs["R"].clone().requires_grad_()
            state = None
            if k == 0 and not resets[b, 0] and "h0" in inputs:
                state = sLSTMState(*(inputs[n][b:b + 1].clone().requires_grad_() for n in ("h0", "c0", "n0", "m0")))
            h, final = slstm(x, R, initial_state=state, output_final_state=True, function=function, backend=backend)
            assert_close("h", packed["h"][b:b + 1, t0:t1], h)
            loss = (h * weights["h"][b:b + 1, t0:t1]).sum()
            if t1 == S:
                for name, t in zip("hcnm", final, strict=True):
                    assert_close(f"{name}S", packed[f"{name}S"][b:b + 1], t)
                    loss = loss + (t * weights[f"{name}S"][b:b + 1]).sum()
            loss.backward()
            assert_close("dx", packed["dx"][b:b + 1, t0:t1], x.grad)
            dR += R.grad
            if state is not None:
                for name, t in zip(("dh0", "dc0", "dn0", "dm0"), state, strict=True):
                    grad = torch.zeros_like(t) if t.grad is None else t.grad  # the LSTM's n0, m0 may be unused
                    assert_close(name, packed[name][b:b + 1], grad)
        if resets[b, 0] and "h0" in inputs:
            for name in ("dh0", "dc0", "dn0", "dm0"):
                assert torch.equal(packed[name][b], torch.zeros_like(packed[name][b])), name
    assert_close("dR", dR, packed["dR"])


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize(("S", "chunked"), [(1, False), (7, False), (100, False), (100, True)])
def test_resets_match_naive(S, chunked, function, init, monkeypatch):
    """The fast path with random resets (at t = 0, the last step, several per row, per row different) against the
    reference: outputs, final states, gradients of x, R and the initial state; also with chunks of 16 steps in
    the backward (resets at and next to chunk boundaries)."""
    if chunked:
        small_chunks(monkeypatch)
    inputs = make_inputs(S=S, init=init)
    resets = make_resets(3, S, seed=S)
    ref = run_resets(inputs, resets, "naive", function)
    out = run_resets(inputs, resets, "recurrent", function)
    assert_all_close(ref, out)
    if "dh0" in out:  # no gradient through a reset at t = 0
        assert all(torch.equal(out[name][0], torch.zeros_like(out[name][0])) for name in ("dh0", "dc0", "dn0", "dm0"))


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("split", [1, 37, 99])
def test_resets_state_passing(split, function):
    """With resets (one exactly at the split in row 0), running [0, split) and then [split, S) from the carried
    state equals one call."""
    inputs = make_inputs(S=100)
    x, R = inputs["x"], inputs["R"]
    resets = make_resets(3, 100, seed=5)
    resets[0, split] = True
    state = sLSTMState(inputs["h0"], inputs["c0"], inputs["n0"], inputs["m0"])
    h_full, s_full = slstm(x, R, initial_state=state, output_final_state=True, function=function, resets=resets)
    h1, s1 = slstm(x[:, :split], R, initial_state=state, output_final_state=True, function=function,
                   resets=resets[:, :split])
    h2, s2 = slstm(x[:, split:], R, initial_state=s1, output_final_state=True, function=function,
                   resets=resets[:, split:])
    assert_close("h", h_full, torch.cat([h1, h2], 1))
    for name, a, b in zip("hcnm", s_full, s2, strict=True):
        assert_close(name, a, b)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_resets_everywhere_and_nowhere(function):
    """No resets (all False) is the same as resets=None, bit for bit; resets at every step make every step a
    first step: each output depends on its own token only."""
    inputs = make_inputs(S=20)
    none = run(inputs, "recurrent", function)
    nowhere = run_resets(inputs, torch.zeros(3, 20, dtype=torch.bool), "recurrent", function)
    assert none.keys() == nowhere.keys()
    for name in none:  # bit for bit (assert_close with ratio=0.0 would still allow its absolute floor)
        assert torch.equal(none[name], nowhere[name]), name
    every = torch.ones(3, 20, dtype=torch.bool)
    ref = run_resets(inputs, every, "naive", function)
    assert_all_close(ref, run_resets(inputs, every, "recurrent", function))
    alone = slstm(inputs["x"].flatten(0, 1)[:, None], inputs["R"], function=function)[0]
    assert_close("h", ref["h"], alone.view_as(ref["h"]))


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize(("i_shift", "f_shift"), [(-30.0, -30.0), (-30.0, 30.0), (30.0, -30.0), (30.0, 30.0)])
def test_resets_extreme_gates(i_shift, f_shift, function):
    """Resets next to gate pre-activations around +-30 (float64) stay finite and match the reference."""
    inputs = make_inputs(S=50, i_shift=i_shift, f_shift=f_shift)
    resets = make_resets(3, 50, seed=3)
    assert_all_close(run_resets(inputs, resets, "naive", function), run_resets(inputs, resets, "recurrent", function))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_resets_float32(function):
    """float32 inputs with resets against float64 on the same values."""
    x = make_inputs(S=100, dtype=torch.float32)
    resets = make_resets(3, 100)
    out = run_resets(x, resets, "recurrent", function)
    ref = run_resets({n: t.double() for n, t in x.items()}, resets, "naive", function)
    for name in ref:
        assert_close(name, ref[name], out[name], ratio=1e-5)


@pytest.mark.parametrize(("resets", "message"), [
    ([[True] * 5] * 3, "resets must be a bool tensor"),
    (torch.zeros(3, 5), "resets must be a bool tensor"),
    (torch.zeros(3, 5, dtype=torch.long), "resets must be a bool tensor"),
    (torch.zeros(3, 4, dtype=torch.bool), r"resets must have shape \(3, 5\)"),
    (torch.zeros(5, 3, dtype=torch.bool), r"resets must have shape \(3, 5\)"),
    (torch.zeros(3, 5, 1, dtype=torch.bool), r"resets must have shape \(3, 5\)"),
    (torch.zeros(3, 5, dtype=torch.bool, device="meta"), "resets is on meta"),
])
@pytest.mark.parametrize("backend", ["recurrent", "naive"])
def test_bad_resets(resets, message, backend):
    with pytest.raises((ValueError, TypeError), match=message):
        _bad(resets=resets, backend=backend)
