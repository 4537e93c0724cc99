"""Every mLSTM implementation against the float64 recurrent reference: outputs, final states, all gradients."""

import functools
import itertools

import pytest
import torch

from xlstm_engine.ops.mlstm import mlstm, mlstm_step, mLSTMState
from xlstm_engine.testing import adaptive_ratio, assert_close

GRAD_NAMES = ("q", "k", "v", "i", "f", "C0", "n0", "m0")


def make_inputs(B=2, S=7, H=3, DK=8, DV=12, dtype=torch.float64, i_shift=0.0, f_shift=2.0, seed=0):
    """Fresh random leaves: q, k, v, gates (shifted) and an initial state with a nonzero stabilizer."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, shift=0.0, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift).to(dtype).requires_grad_()

    return dict(
        q=randn(B, S, H, DK), k=randn(B, S, H, DK), v=randn(B, S, H, DV),
        i=randn(B, S, H, shift=i_shift), f=randn(B, S, H, shift=f_shift),
        C0=randn(B, H, DK, DV), n0=randn(B, H, DK), m0=randn(B, H, scale=0.5),
    )


def run(inputs, backend, **kwargs):
    """Outputs, final state and the gradients of a random projection of all of them."""
    x = {name: t.detach().clone().requires_grad_() for name, t in inputs.items()}
    state = mLSTMState(x["C0"], x["n0"], x["m0"])
    h, (C, n, m) = mlstm(x["q"], x["k"], x["v"], x["i"], x["f"], initial_state=state,
                         output_final_state=True, backend=backend, **kwargs)
    g = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.device, t.dtype)).sum()
               for t in (h, C, n, m))
    loss.backward()
    return dict(h=h, C=C, n=n, m=m, **{f"d{name}": x[name].grad for name in GRAD_NAMES})


@functools.cache
def reference(S, input_gate, i_shift=0.0, f_shift=2.0):
    return run(make_inputs(S=S, i_shift=i_shift, f_shift=f_shift), "naive_recurrent", input_gate=input_gate)


def assert_all_close(ref, out, ratio=None):
    for name in ref:
        assert_close(name, ref[name], out[name], ratio)


IMPLEMENTATIONS = [
    pytest.param(dict(backend="chunkwise", chunk_size=16), id="chunkwise-cs16"),
    pytest.param(dict(backend="chunkwise", chunk_size=64), id="chunkwise-cs64"),
    pytest.param(dict(backend="chunkwise", chunk_size=128), id="chunkwise-cs128"),
    pytest.param(dict(backend="naive_parallel"), id="naive_parallel"),
]


@pytest.mark.parametrize("input_gate", ["exp", "sigmoid"])
@pytest.mark.parametrize("S", [1, 7, 63, 64, 100, 1000])
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_matches_naive(impl, S, input_gate):
    out = run(make_inputs(S=S), input_gate=input_gate, **impl)
    assert_all_close(reference(S, input_gate), out)


@pytest.mark.parametrize("input_gate", ["exp", "sigmoid"])
def test_step_matches_naive(input_gate):
    """Decoding token by token with mlstm_step equals the sequence reference, gradients included."""
    S = 7
    x = {name: t.detach().clone().requires_grad_() for name, t in make_inputs(S=S).items()}
    state = mLSTMState(x["C0"], x["n0"], x["m0"])
    hs = []
    for t in range(S):
        h, state = mlstm_step(x["q"][:, t], x["k"][:, t], x["v"][:, t], x["i"][:, t], x["f"][:, t], state,
                              input_gate=input_gate)
        hs.append(h)
    h = torch.stack(hs, 1)
    g = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=torch.float64)).sum() for t in (h, *state))
    loss.backward()
    out = dict(h=h, C=state.C, n=state.n, m=state.m, **{f"d{name}": x[name].grad for name in GRAD_NAMES})
    assert_all_close(reference(S, input_gate), out)


@pytest.mark.parametrize("backend", ["auto", "step"])
def test_single_token_dispatch(backend):
    out = run(make_inputs(S=1), backend)
    assert_all_close(reference(1, "exp"), out)


@pytest.mark.parametrize("split", [1, 37, 64, 99])
def test_state_passing(split):
    """Running [0, split) and then [split, S) from the carried state equals one call."""
    x = make_inputs(S=100)
    q, k, v, i, f = (x[n].detach() for n in "qkvif")
    state = mLSTMState(x["C0"].detach(), x["n0"].detach(), x["m0"].detach())
    h_full, s_full = mlstm(q, k, v, i, f, initial_state=state, output_final_state=True, chunk_size=16)
    first = slice(0, split)
    second = slice(split, None)
    h1, s1 = mlstm(q[:, first], k[:, first], v[:, first], i[:, first], f[:, first], initial_state=state,
                   output_final_state=True, chunk_size=16)
    h2, s2 = mlstm(q[:, second], k[:, second], v[:, second], i[:, second], f[:, second], initial_state=s1,
                   output_final_state=True, chunk_size=16)
    assert_close("h", h_full, torch.cat([h1, h2], 1))
    for name, a, b in zip("Cnm", s_full, s2, strict=True):
        assert_close(name, a, b)


def test_chunk_sizes_agree_float32():
    x = make_inputs(S=300, dtype=torch.float32)
    outs = [run(x, "chunkwise", chunk_size=cs) for cs in (16, 64, 128)]
    for out in outs[1:]:
        assert_all_close(outs[0], out, ratio=1e-5)


@pytest.mark.parametrize("i_shift", [-30.0, 30.0])
@pytest.mark.parametrize("f_shift", [-30.0, 30.0])
@pytest.mark.parametrize("input_gate", ["exp", "sigmoid"])
def test_extreme_gates(i_shift, f_shift, input_gate):
    """Gate pre-activations around +-30 stay finite and match the reference.

    In float32 some of these cases are ill-conditioned (with i ~ +30 the eps term and |q.n| ~ 0 decide h,
    and the true dq nearly cancels), so float32 is held to 1e-5 or to twice the error of the float32 time loop
    on the same inputs, whichever is larger: the fast path must be no less accurate than the plain loop; but never
    to more than ADAPTIVE_CEILINGS[float32] (the loop's dq at i = +30, f = -30 is off by 5e-2, the chunkwise
    form's by 8e-5).
    """
    shifts = dict(i_shift=i_shift, f_shift=f_shift)
    ref = reference(100, input_gate, **shifts)
    assert_all_close(ref, run(make_inputs(S=100, **shifts), "chunkwise", chunk_size=16, input_gate=input_gate))

    x32 = make_inputs(S=100, dtype=torch.float32, **shifts)
    ref = run({n: t.detach().double() for n, t in x32.items()}, "naive_recurrent", input_gate=input_gate)
    loop32 = run(x32, "naive_recurrent", input_gate=input_gate)
    out32 = run(x32, "chunkwise", chunk_size=16, input_gate=input_gate)
    for name in ref:
        assert_close(name, ref[name], out32[name], ratio=adaptive_ratio(ref[name], loop32[name]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_inputs(dtype):
    """float32 and bfloat16 inputs against float64 on the same (rounded) values; the state stays float32."""
    x = make_inputs(S=100, dtype=dtype)
    out = run(x, "chunkwise", chunk_size=16)
    ref = run({n: t.detach().double() for n, t in x.items()}, "naive_recurrent")
    assert out["h"].dtype == dtype and out["C"].dtype == torch.float32
    for name in ("h", "C", "n", "m"):
        assert_close(name, ref[name], out[name], ratio=1e-5 if name != "h" or dtype == torch.float32 else 1e-2)


def test_zero_initial_state_is_default():
    x = {n: t.detach() for n, t in make_inputs(S=20).items()}
    args = [x[n] for n in "qkvif"]
    zeros = mLSTMState(torch.zeros_like(x["C0"]), torch.zeros_like(x["n0"]), torch.zeros_like(x["m0"]))
    for backend in ("chunkwise", "naive_recurrent", "naive_parallel"):
        h0, s0 = mlstm(*args, backend=backend, output_final_state=True)
        h1, s1 = mlstm(*args, backend=backend, initial_state=zeros, output_final_state=True)
        assert torch.equal(h0, h1) and all(torch.equal(a, b) for a, b in zip(s0, s1, strict=True))


def test_final_state_only_on_request():
    x = [make_inputs(S=5)[n].detach() for n in "qkvif"]
    assert mlstm(*x)[1] is None


RESETS = torch.zeros(2, 100, dtype=torch.bool)
RESETS[0, [0, 5, 6, 40, 99]] = True  # at the start, twice in a row, and at the last token
RESETS[1, [17, 64, 65]] = True  # one sequence keeps its initial state up to 17


@pytest.mark.parametrize("input_gate", ["exp", "sigmoid"])
def test_resets_equal_documents_run_alone(input_gate):
    """A packed row with resets gives each document exactly what it gives alone, from an empty state."""
    x = {n: t.detach() for n, t in make_inputs(S=100).items()}
    args = [x[n] for n in "qkvif"]
    h, state = mlstm(*args, resets=RESETS, backend="naive_recurrent", input_gate=input_gate,
                     output_final_state=True, initial_state=mLSTMState(x["C0"], x["n0"], x["m0"]))
    for b in range(2):
        starts = [0, *RESETS[b].nonzero().flatten().tolist(), 100]
        for start, end in itertools.pairwise(starts):
            if start == end:
                continue
            piece = [t[b:b + 1, start:end] for t in args]
            initial = None if RESETS[b, start] else mLSTMState(x["C0"][b:b + 1], x["n0"][b:b + 1], x["m0"][b:b + 1])
            h_alone, s_alone = mlstm(*piece, backend="naive_recurrent", input_gate=input_gate,
                                     output_final_state=True, initial_state=initial)
            assert_close(f"h[{b}, {start}:{end}]", h_alone, h[b:b + 1, start:end])
        for name, a, b_ in zip("Cnm", s_alone, state, strict=True):
            assert_close(name, a, b_[b:b + 1])


@pytest.mark.parametrize("input_gate", ["exp", "sigmoid"])
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_resets_match_naive(impl, input_gate):
    """With resets, every implementation equals the loop, gradients of the initial state included (zero for
    the row that resets at its first token)."""
    inputs = make_inputs(S=100)
    ref = run(inputs, "naive_recurrent", input_gate=input_gate, resets=RESETS)
    assert ref["dC0"][0].abs().max() == 0 and ref["dC0"][1].abs().max() > 0
    assert_all_close(ref, run(inputs, input_gate=input_gate, resets=RESETS, **impl))


def test_resets_in_a_single_step():
    inputs = make_inputs(S=1)
    resets = torch.tensor([[True], [False]])
    assert_all_close(run(inputs, "naive_recurrent", resets=resets), run(inputs, "step", resets=resets))


def _bad(**changes):
    x = {n: t.detach() for n, t in make_inputs(S=5).items()}
    args = dict(q=x["q"], k=x["k"], v=x["v"], i=x["i"], f=x["f"])
    kwargs = {}
    for key, value in changes.items():
        (args if key in args else kwargs)[key] = value
    return mlstm(args["q"], args["k"], args["v"], args["i"], args["f"], **kwargs)


@pytest.mark.parametrize(("changes", "message"), [
    (dict(k=torch.zeros(2, 5, 3, 9)), "k must have shape"),
    (dict(v=torch.zeros(2, 4, 3, 12)), "v must have shape"),
    (dict(i=torch.zeros(2, 5)), "i must have shape"),
    (dict(q=torch.zeros(2, 5, 24)), "q must be"),
    (dict(q=torch.zeros(2, 5, 3, 8, dtype=torch.long)), "floating-point"),
    (dict(backend="cuda"), "unknown mLSTM backend"),
    (dict(input_gate="relu"), "unknown input_gate"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(initial_state=mLSTMState.zeros(3, 3, 8, 12)), r"initial_state.C must have shape \(2, 3, 8, 12\)"),
    (dict(initial_state=(torch.zeros(2, 3, 8, 12),)), "must be an mLSTMState"),
    (dict(initial_state=mLSTMState(torch.zeros(2, 3, 8, 12, dtype=torch.long), torch.zeros(2, 3, 8),
                                   torch.zeros(2, 3))), "initial_state.C must be a floating-point tensor"),
    (dict(backend="step"), "handles one token"),
    (dict(resets=torch.zeros(2, 5)), "resets must be a bool tensor"),
    (dict(resets=torch.zeros(2, 4, dtype=torch.bool)), r"resets must have shape \(2, 5\)"),
])
def test_bad_input(changes, message):
    with pytest.raises((ValueError, TypeError), match=message):
        _bad(**changes)


@pytest.mark.parametrize("S", [1, 9])
def test_inplace_writes_the_final_state_into_the_initial_state(S):
    x = {name: t.detach() for name, t in make_inputs(S=S).items()}
    state = mLSTMState(x["C0"].clone(), x["n0"].clone(), x["m0"].clone())
    _, ref = mlstm(*(x[n] for n in "qkvif"), initial_state=mLSTMState(x["C0"], x["n0"], x["m0"]),
                   output_final_state=True)
    _, out = mlstm(*(x[n] for n in "qkvif"), initial_state=state, output_final_state=True, inplace=True)
    assert out is state
    for name, a, b in zip("Cnm", ref, state, strict=True):
        assert_close(name, a, b)
    with pytest.raises(ValueError, match="inplace=True"):
        mlstm(*(x[n] for n in "qkvif"), inplace=True)
