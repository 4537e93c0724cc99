"""Padding (`mask`) in the ops: a padded batch gives each row exactly what that row gives alone.

Every row's real tokens are drawn first; the padded batch places them left or right (or on both sides) among random
pad inputs. Against each row run alone through the float64 reference: outputs at real positions, final states and
the gradients of every input (zero at pads) and of the initial state. Each test also checks that the same batch
WITHOUT the mask gives something else, so that it cannot pass vacuously.
"""

import functools
import sys

import pytest
import torch

from xlstm_engine.model.neurips.components import CausalConv1d
from xlstm_engine.ops.mlstm import mlstm, mLSTMState
from xlstm_engine.ops.slstm import slstm, sLSTMState
from xlstm_engine.testing import assert_close

S = 37  # with chunk size 16: whole chunks of pads (row 3 left-padded), pads across chunk boundaries
LENGTHS = (37, 20, 17, 5, 1, 0)  # row 5: all pads, its state must not change
SIDES = ("left", "right", "both")


def make_mask(side: str, lengths=LENGTHS, S=S) -> torch.Tensor:
    """[B, S] bool: each row's `length` tokens on the left, right, or (both) after about a third of the pads."""
    mask = torch.zeros(len(lengths), S, dtype=torch.bool)
    for b, length in enumerate(lengths):
        start = dict(left=S - length, right=0, both=(S - length) // 3)[side]
        mask[b, start:start + length] = True
    return mask


def place(rows: list[torch.Tensor], mask: torch.Tensor, seed: int) -> torch.Tensor:
    """The padded batch [B, S, ...] from each row's real inputs [L_b, ...], random values at the pads."""
    g = torch.Generator().manual_seed(seed)
    out = torch.randn(*mask.shape, *rows[0].shape[1:], generator=g, dtype=rows[0].dtype)
    for b, row in enumerate(rows):
        out[b, mask[b]] = row
    return out


def projection(shape, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def assert_matches_rows(out: dict, rows: list[dict], mask: torch.Tensor, state_names, input_names, initial_names=(),
                        ratio=None):
    """out: the padded batch's outputs `h` [B, S, ...], final state and gradients; rows: each row alone. Gradients of
    the inputs (`input_names`, [B, S, ...]) must be exactly zero at pads; those of the initial state
    (`initial_names`, [B, ...]) equal the row's."""
    for b, row in enumerate(rows):
        real = mask[b]
        if real.any():
            assert_close(f"h[{b}]", row["h"][0], out["h"][b, real], ratio)
        for name in state_names:
            assert_close(f"{name}[{b}]", row[name][0], out[name][b], ratio)
        for name in input_names:
            grad = out[f"d{name}"][b]
            assert torch.isfinite(grad).all(), f"d{name}[{b}] is not finite"
            assert torch.count_nonzero(grad[~real]) == 0, f"d{name}[{b}] is nonzero at a pad"
            if real.any():
                assert_close(f"d{name}[{b}]", row[f"d{name}"][0], grad[real], ratio)
        for name in initial_names:
            assert_close(f"d{name}[{b}]", row[f"d{name}"][0], out[f"d{name}"][b], ratio, atol=1e-12)


def assert_mask_matters(out: dict, unmasked: dict, name: str = "h") -> None:
    """The batch without its mask differs (the test is not vacuous)."""
    assert (out[name].double() - unmasked[name].double()).abs().max() > 1e-3, "the mask changes nothing"


# ---- mLSTM ----

H, DK, DV = 2, 16, 16  # head dims the Triton kernels take
MLSTM_STATE = ("C", "n", "m")
MLSTM_INPUTS = ("q", "k", "v", "i", "f")


def mlstm_rows(seed=0) -> list[dict]:
    """Each row's real inputs (float64) and initial state."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, shift=0.0, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift

    return [dict(q=randn(L, H, DK), k=randn(L, H, DK), v=randn(L, H, DV), i=randn(L, H), f=randn(L, H, shift=2.0),
                 C0=randn(1, H, DK, DV), n0=randn(1, H, DK), m0=randn(1, H, scale=0.5)) for L in LENGTHS]


def run_mlstm(inputs: dict, initial: bool, seed: int = 7, **kwargs) -> dict:
    """Outputs, final state and the gradients of a projection of the outputs (at real positions: `weight_h` is zero
    at pads) and of the final state. inputs: q, k, v, i, f [B, S, ...], C0, n0, m0 and the projection weights."""
    x = {n: inputs[n].detach().clone().requires_grad_() for n in (*MLSTM_INPUTS, "C0", "n0", "m0")}
    state = mLSTMState(x["C0"], x["n0"], x["m0"]) if initial else None
    h, final = mlstm(*(x[n] for n in MLSTM_INPUTS), initial_state=state, output_final_state=True, **kwargs)
    out = dict(h=h, **dict(zip(MLSTM_STATE, final, strict=True)))
    loss = (h * inputs["weight_h"].to(h.dtype)).sum()
    loss = loss + sum((out[n] * inputs[f"weight_{n}"].to(out[n].dtype)).sum() for n in MLSTM_STATE)
    loss.backward()
    grads = {f"d{n}": x[n].grad for n in MLSTM_INPUTS}
    if initial:
        grads.update({f"d{n}": x[n].grad for n in ("C0", "n0", "m0")})
    return {**out, **grads}


def _held(C0, n0, m0, input_gate):
    """What an all-pad row returns: its initial memory, which the sigmoid gate (whose states leave with m = 0)
    returns as the same memory with m = 0."""
    if input_gate == "exp":
        return C0 * 1, n0 * 1, m0 * 1
    scale = torch.exp(m0)
    return C0 * scale[..., None, None], n0 * scale[..., None], torch.zeros_like(m0)


@functools.cache
def mlstm_reference(initial: bool, input_gate: str) -> list[dict]:
    """Each row alone through naive_recurrent in float64, with the projection weights of its real positions."""
    rows = []
    for b, row in enumerate(mlstm_rows()):
        L = row["q"].shape[0]
        weights = dict(weight_h=projection((1, L, H, DV), 100 + b),
                       **{f"weight_{n}": projection(row[f"{n}0"].shape, 200 + 10 * b + j)
                          for j, n in enumerate(MLSTM_STATE)})
        if L == 0:
            x = {n: row[f"{n}0"].clone().requires_grad_() for n in MLSTM_STATE}
            start = (x["C"], x["n"], x["m"]) if initial else mLSTMState.zeros(1, H, DK, DV, dtype=torch.float64)
            final = _held(*start, input_gate)
            if initial:
                sum((t * weights[f"weight_{n}"]).sum() for n, t in zip(MLSTM_STATE, final, strict=True)).backward()
            out = dict(h=torch.zeros(1, 0, H, DV, dtype=torch.float64), **dict(zip(MLSTM_STATE, final, strict=True)),
                       **{f"d{n}": torch.zeros(1, 0, *row[n].shape[1:], dtype=torch.float64) for n in MLSTM_INPUTS})
            if initial:
                out.update({f"d{n}0": x[n].grad for n in MLSTM_STATE})
        else:
            inputs = {**{n: row[n][None] for n in MLSTM_INPUTS}, **{n: row[n] for n in ("C0", "n0", "m0")}, **weights}
            out = run_mlstm(inputs, initial, backend="naive_recurrent", input_gate=input_gate)
        rows.append({n: t.detach() for n, t in out.items()})
    return rows


def mlstm_batch(side: str, subset=None) -> tuple[dict, torch.Tensor]:
    """The padded batch of mlstm_rows (and the projection weights of mlstm_reference, zero at pads); `subset`: only
    these rows."""
    mask = make_mask(side)
    rows = mlstm_rows()
    if subset is not None:
        mask, rows = mask[list(subset)], [rows[b] for b in subset]
    inputs = {n: place([r[n] for r in rows], mask, seed) for seed, n in enumerate(MLSTM_INPUTS)}
    inputs.update({n: torch.cat([r[n] for r in rows]) for n in ("C0", "n0", "m0")})
    weight_h = torch.zeros(len(rows), S, H, DV, dtype=torch.float64)
    for j, b in enumerate(range(len(LENGTHS)) if subset is None else subset):
        weight_h[j, mask[j]] = projection((1, LENGTHS[b], H, DV), 100 + b)[0]
        for k, n in enumerate(MLSTM_STATE):
            inputs.setdefault(f"weight_{n}", []).append(projection(rows[j][f"{n}0"].shape, 200 + 10 * b + k))
    inputs.update({f"weight_{n}": torch.cat(inputs[f"weight_{n}"]) for n in MLSTM_STATE}, weight_h=weight_h)
    return inputs, mask


def _triton_available():
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(not _triton_available(), reason="triton is not installed")

TRITON_ROWS = (1, 3, 5)  # the interpreter is slow: rows of 20, 5 (whole chunks of pads on the left) and 0 tokens


def _on_triton(inputs: dict, mask: torch.Tensor | None) -> tuple[dict, torch.Tensor | None]:
    """float32 inputs on the Triton device (CPU under TRITON_INTERPRET=1)."""
    cast = {n: t.to(TRITON_DEVICE, torch.float32) for n, t in inputs.items()}
    return cast, None if mask is None else mask.to(TRITON_DEVICE)


def _check_mlstm(impl: dict, side: str, initial: bool, input_gate: str, subset=None) -> None:
    """Outputs at real positions, final states, gradients of q, k, v, i, f (zero at pads) and of the initial state,
    against each row alone in float64; and, once per backend, that the batch without its mask differs."""
    inputs, mask = mlstm_batch(side, subset)
    if impl["backend"] == "triton":
        inputs, mask = _on_triton(inputs, mask)
    out = run_mlstm(inputs, initial, input_gate=input_gate, mask=mask, **impl)
    out = {n: t.cpu() for n, t in out.items()}
    reference = mlstm_reference(initial, input_gate)
    reference = reference if subset is None else [reference[b] for b in subset]
    assert_matches_rows(out, reference, mask.cpu(), MLSTM_STATE, MLSTM_INPUTS, ("C0", "n0", "m0") if initial else ())
    if side == "left" and initial and input_gate == "exp" and impl["backend"] != "triton":  # (the interpreter is slow)
        assert_mask_matters(out, run_mlstm(inputs, initial, input_gate=input_gate, **impl), "C")


@pytest.mark.parametrize("input_gate", ["exp", "sigmoid"])
@pytest.mark.parametrize("initial", [True, False], ids=["state", "empty"])
@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("impl", [dict(backend="naive_recurrent"), dict(backend="naive_parallel"),
                                  dict(backend="chunkwise", chunk_size=16)],
                         ids=["naive_recurrent", "naive_parallel", "chunkwise"])
def test_mlstm_padded_equals_rows_alone(impl, side, initial, input_gate):
    _check_mlstm(impl, side, initial, input_gate)


@needs_triton
@pytest.mark.parametrize(("side", "initial", "input_gate"), [("left", True, "exp"), ("right", False, "sigmoid")])
def test_mlstm_triton_padded_equals_rows_alone(side, initial, input_gate):
    """The Triton kernels (in the interpreter without a GPU: three rows, two layouts) in float32, against the
    float64 rows alone within the float32 bound."""
    _check_mlstm(dict(backend="triton", chunk_size=16), side, initial, input_gate, TRITON_ROWS)


@pytest.mark.parametrize("input_gate", ["exp", "sigmoid"])
@pytest.mark.parametrize("backend", ["step", pytest.param("triton", marks=needs_triton)])
@pytest.mark.parametrize("inplace", [False, True])
def test_mlstm_one_masked_step(backend, inplace, input_gate):
    """S = 1 (the step backend, with autograd unless in place; the Triton step kernel, without): a padded row keeps
    its memory, the others equal the unmasked step."""
    rows = mlstm_rows()
    lengths = [1, 0, 1, 1, 0]
    x = {n: torch.stack([rows[0][n][:1] * (b + 1) for b in range(len(lengths))]) for n in MLSTM_INPUTS}
    state = mLSTMState(*(torch.cat([rows[b][f"{n}0"] for b in range(len(lengths))]) for n in MLSTM_STATE))
    mask = torch.tensor(lengths, dtype=torch.bool)[:, None]
    if backend == "triton":
        x = {n: t.to(TRITON_DEVICE, torch.float32) for n, t in x.items()}
        state, mask = state.to(TRITON_DEVICE, torch.float32), mask.to(TRITON_DEVICE)
    args = [x[n] for n in MLSTM_INPUTS]
    grad = backend == "step" and not inplace  # in place is for decoding without autograd
    if grad:
        args = [t.clone().requires_grad_() for t in args]
        state = mLSTMState(*(t.clone().requires_grad_() for t in state))
    with torch.set_grad_enabled(grad):
        given = mLSTMState(*(t.detach().clone() for t in state)) if inplace else state
        h, new = mlstm(*args, initial_state=given, output_final_state=True, backend=backend, mask=mask,
                       input_gate=input_gate, inplace=inplace)
        h_plain, plain = mlstm(*args, initial_state=state, output_final_state=True, backend=backend,
                               input_gate=input_gate)
        if inplace:
            assert new is given
        ref_state = state if input_gate == "exp" else mLSTMState(*_held(*state, input_gate))
        for b, real in enumerate(lengths):
            for name, a, ref, held in zip(MLSTM_STATE, new, plain, ref_state, strict=True):
                assert_close(f"{name}[{b}]", (ref if real else held)[b].detach(), a[b].detach())
            if real:
                assert_close(f"h[{b}]", h_plain[b].detach(), h[b].detach())
            else:
                assert (plain.C[b] - state.C[b]).abs().max() > 1e-3  # the step would change it
                assert torch.isfinite(h[b]).all()
    if grad:  # the pad's inputs get no gradient, its memory's gradient passes through
        # h at a pad reads the held memory with the pad's q; the outputs at pads are left out of the loss
        h_real = torch.where(mask[..., None, None], h, 0.0)
        sum((t * projection(t.shape, 3 + j)).sum() for j, t in enumerate((*new, h_real))).backward()
        for name, t in zip(MLSTM_INPUTS, args, strict=True):
            assert torch.isfinite(t.grad).all() and torch.count_nonzero(t.grad[~mask[:, 0]]) == 0, name
        for j, (name, t) in enumerate(zip(MLSTM_STATE, state, strict=True)):
            if input_gate == "exp":  # held: the gradient of the final state
                assert_close(f"d{name}0", projection(new[j].shape, 3 + j)[~mask[:, 0]], t.grad[~mask[:, 0]])
            assert torch.isfinite(t.grad).all()


@needs_triton
@pytest.mark.parametrize("side", ["left", "right"])
def test_mlstm_triton_short_prompt(side):
    """Without autograd, up to SHORT_PROMPT tokens take the one-launch kernel."""
    inputs, mask = mlstm_batch(side, TRITON_ROWS)
    reference = [mlstm_reference(True, "exp")[b] for b in TRITON_ROWS]
    inputs, mask = _on_triton(inputs, mask)
    with torch.no_grad():
        h, final = mlstm(*(inputs[n] for n in MLSTM_INPUTS), initial_state=mLSTMState(
            inputs["C0"], inputs["n0"], inputs["m0"]), output_final_state=True, backend="triton", mask=mask)
    mask = mask.cpu()
    for b, row in enumerate(reference):
        if mask[b].any():
            assert_close(f"h[{b}]", row["h"][0], h[b, mask[b]].cpu())
        for name, t in zip(MLSTM_STATE, final, strict=True):
            assert_close(f"{name}[{b}]", row[name][0], t[b].cpu())


def test_mlstm_padding_with_resets():
    """Packed documents in a padded row: the resets mark real tokens; each document equals itself alone."""
    rows = mlstm_rows()
    x = {n: rows[1][n][None] for n in MLSTM_INPUTS}  # 20 tokens; documents start at 0, 7 and 19
    resets = torch.zeros(1, 20, dtype=torch.bool)
    resets[0, [0, 7, 19]] = True
    mask = make_mask("both", (20,), S=33)
    padded = {n: place([t[0]], mask, j) for j, (n, t) in enumerate(x.items())}
    padded_resets = torch.zeros(1, 33, dtype=torch.bool)
    padded_resets[mask] = resets[0]
    for backend in ("naive_recurrent", "naive_parallel", "chunkwise"):
        h, final = mlstm(*padded.values(), resets=padded_resets, mask=mask, backend=backend, chunk_size=16,
                         output_final_state=True)
        for start, end in ((0, 7), (7, 19), (19, 20)):
            alone, alone_state = mlstm(*(t[:, start:end] for t in x.values()), output_final_state=True,
                                       backend="naive_recurrent")
            assert_close(f"{backend} h[{start}:{end}]", alone, h[:, mask[0]][:, start:end])
        for name, a, b in zip(MLSTM_STATE, alone_state, final, strict=True):
            assert_close(f"{backend} {name}", a, b)


# ---- sLSTM ----

SH, SD = 2, 5
SLSTM_STATE = ("hS", "cS", "nS", "mS")


def slstm_rows(seed=1) -> list[dict]:
    """Each row's real inputs x [L, 4, H, D] and initial state; n0 is 0 in some entries (the first-step rule binds
    there, possibly after pads) and in all of row 2."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b, L in enumerate(LENGTHS):
        n0 = torch.rand(1, SH, SD, generator=g, dtype=torch.float64) + 0.1
        n0[torch.rand(1, SH, SD, generator=g) < 0.3] = 0
        if b == 2:
            n0.zero_()
        rows.append(dict(x=torch.randn(L, 4, SH, SD, generator=g, dtype=torch.float64) * 2,
                         h0=torch.randn(1, SH, SD, generator=g, dtype=torch.float64) * 0.5,
                         c0=torch.randn(1, SH, SD, generator=g, dtype=torch.float64), n0=n0,
                         m0=torch.randn(1, SH, SD, generator=g, dtype=torch.float64)))
    return rows


R_SLSTM = torch.randn(SH, SD, 4, SD, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * SD**-0.5


def run_slstm(inputs: dict, initial: bool, **kwargs) -> dict:
    """As run_mlstm: outputs, final state, gradients of x, R and the initial state."""
    names = ("x", "R", "h0", "c0", "n0", "m0")
    x = {n: inputs[n].detach().clone().requires_grad_() for n in names}
    state = sLSTMState(x["h0"], x["c0"], x["n0"], x["m0"]) if initial else None
    h, final = slstm(x["x"], x["R"], initial_state=state, output_final_state=True, **kwargs)
    out = dict(h=h, **dict(zip(SLSTM_STATE, final, strict=True)))
    loss = (h * inputs["weight_h"]).sum() + sum((out[n] * inputs[f"weight_{n}"]).sum() for n in SLSTM_STATE)
    loss.backward()
    grads = dict(dx=x["x"].grad, dR=x["R"].grad)
    if initial:  # the LSTM carries n and m unused: no gradient is zero
        grads.update({f"d{n}": torch.zeros_like(x[n]) if x[n].grad is None else x[n].grad
                      for n in ("h0", "c0", "n0", "m0")})
    return {**out, **grads}


@functools.cache
def slstm_reference(initial: bool, function: str) -> list[dict]:
    """Each row alone through the naive loop (an all-pad row: its initial state, unchanged)."""
    rows = []
    for b, row in enumerate(slstm_rows()):
        L = row["x"].shape[0]
        weights = dict(weight_h=projection((1, L, SH, SD), 300 + b),
                       **{f"weight_{n}": projection((1, SH, SD), 400 + 10 * b + j) for j, n in enumerate(SLSTM_STATE)})
        if L == 0:
            start = [row[n] for n in ("h0", "c0", "n0", "m0")] if initial else \
                [torch.zeros(1, SH, SD, dtype=torch.float64)] * 4
            out = dict(h=torch.zeros(1, 0, SH, SD, dtype=torch.float64), dx=torch.zeros(1, 0, 4, SH, SD),
                       dR=torch.zeros_like(R_SLSTM), **dict(zip(SLSTM_STATE, start, strict=True)))
            if initial:  # held: the gradient of the final state
                out.update({f"d{n}0": weights[f"weight_{n}S"] for n in "hcnm"})
        else:
            inputs = dict(x=row["x"][None], R=R_SLSTM, **{n: row[n] for n in ("h0", "c0", "n0", "m0")}, **weights)
            out = run_slstm(inputs, initial, backend="naive", function=function)
        rows.append({n: t.detach() for n, t in out.items()})
    return rows


def slstm_batch(side: str, subset=None) -> tuple[dict, torch.Tensor]:
    """The padded batch of slstm_rows (only the rows `subset`, if given) and the projection weights."""
    subset = range(len(LENGTHS)) if subset is None else subset
    mask = make_mask(side)[list(subset)]
    rows = [slstm_rows()[b] for b in subset]
    inputs = dict(x=place([r["x"] for r in rows], mask, 11), R=R_SLSTM,
                  **{n: torch.cat([r[n] for r in rows]) for n in ("h0", "c0", "n0", "m0")})
    weight_h = torch.zeros(len(rows), S, SH, SD, dtype=torch.float64)
    for j, b in enumerate(subset):
        weight_h[j, mask[j]] = projection((1, LENGTHS[b], SH, SD), 300 + b)[0]
    inputs["weight_h"] = weight_h
    for k, n in enumerate(SLSTM_STATE):
        inputs[f"weight_{n}"] = torch.cat([projection((1, SH, SD), 400 + 10 * b + k) for b in subset])
    return inputs, mask


@pytest.mark.parametrize("function", ["slstm", "lstm"])
@pytest.mark.parametrize("initial", [True, False], ids=["state", "empty"])
@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("backend", ["naive", "recurrent", "recurrent-chunks"])
def test_slstm_padded_equals_rows_alone(backend, side, initial, function, monkeypatch):
    """Outputs at real positions, final states, dx (zero at pads), dR (the sum over the rows alone) and the gradient
    of the initial state, against each row alone in float64; "recurrent-chunks": the fast backward in chunks of 16
    steps, so that pads cross its chunk boundaries."""
    if backend == "recurrent-chunks":
        monkeypatch.setattr(sys.modules["xlstm_engine.ops.slstm.recurrent"], "_CHUNK_ELEMENTS", 1)
        backend = "recurrent"
    inputs, mask = slstm_batch(side)
    out = run_slstm(inputs, initial, backend=backend, function=function, mask=mask)
    reference = slstm_reference(initial, function)
    assert_matches_rows(out, reference, mask, SLSTM_STATE, ("x",), ("h0", "c0", "n0", "m0") if initial else ())
    assert_close("dR", sum(row["dR"] for row in reference), out["dR"])
    if side == "left":
        assert_mask_matters(out, run_slstm(inputs, initial, backend=backend, function=function), "cS")


@pytest.mark.parametrize("backend", ["naive", "recurrent", "recurrent-chunks"])
def test_slstm_first_real_step_after_pads(backend, monkeypatch):
    """The row with the most leading pads starts from n = 0 (row 2, 17 tokens after 20 pads, beside row 1 with 20
    tokens): its first real step, the last of the pads' steps plus one, is where the first-step rule binds."""
    if backend == "recurrent-chunks":
        monkeypatch.setattr(sys.modules["xlstm_engine.ops.slstm.recurrent"], "_CHUNK_ELEMENTS", 1)
        backend = "recurrent"
    inputs, mask = slstm_batch("left", (1, 2))
    out = run_slstm(inputs, True, backend=backend, mask=mask)
    reference = [slstm_reference(True, "slstm")[b] for b in (1, 2)]
    assert_matches_rows(out, reference, mask, SLSTM_STATE, ("x",), ("h0", "c0", "n0", "m0"))
    assert_close("dR", sum(row["dR"] for row in reference), out["dR"])


@pytest.mark.parametrize("function", ["slstm", "lstm"])
def test_slstm_mask_without_pads_is_the_plain_op(function):
    """A mask with no pad runs the plain op, bit for bit, in the fast path."""
    inputs, _ = slstm_batch("left")
    plain = run_slstm(inputs, True, backend="recurrent", function=function)
    masked = run_slstm(inputs, True, backend="recurrent", function=function,
                       mask=torch.ones(len(LENGTHS), S, dtype=torch.bool))
    for name in plain:
        assert torch.equal(plain[name], masked[name]), name


@pytest.mark.parametrize("backend", ["naive", "recurrent"])
def test_slstm_padding_with_resets(backend):
    """A padded row of packed documents (resets at real tokens) against the documents alone."""
    rows = slstm_rows()
    x = rows[1]["x"][None]  # 20 tokens: documents at 0..6, 7..18, 19
    resets = torch.zeros(1, 20, dtype=torch.bool)
    resets[0, [7, 19]] = True
    mask = make_mask("both", (20,), S=33)
    padded = place([x[0]], mask, 3)[None][0]
    padded_resets = torch.zeros(1, 33, dtype=torch.bool)
    padded_resets[mask] = resets[0]
    state = sLSTMState(*(rows[1][n] for n in ("h0", "c0", "n0", "m0")))
    h, final = slstm(padded, R_SLSTM, initial_state=state, output_final_state=True, resets=padded_resets, mask=mask,
                     backend=backend)
    for start, end in ((0, 7), (7, 19), (19, 20)):
        alone, alone_state = slstm(x[:, start:end], R_SLSTM, initial_state=state if start == 0 else None,
                                   output_final_state=True, backend="naive")
        assert_close(f"h[{start}:{end}]", alone, h[:, mask[0]][:, start:end])
    for name, a, b in zip(SLSTM_STATE, alone_state, final, strict=True):
        assert_close(name, a, b)


# ---- the causal conv ----

@pytest.mark.parametrize("history", [True, False], ids=["state", "empty"])
@pytest.mark.parametrize("side", SIDES)
def test_conv_padded_equals_rows_alone(side, history):
    """Outputs at real positions, the new state (the last K-1 real inputs, the history where fewer), and the
    gradients of x (zero at pads), of the history and of the weights."""
    K, D = 4, 3
    conv = CausalConv1d(D, K).double()
    g = torch.Generator().manual_seed(0)
    lengths = (S, 20, 2, 1, 0)  # rows 2 to 4: fewer real inputs than K-1
    mask = make_mask(side, lengths)
    rows = [torch.randn(L, D, generator=g, dtype=torch.float64) for L in lengths]
    x = place(rows, mask, 4).requires_grad_()
    state = torch.randn(len(lengths), K - 1, D, generator=g, dtype=torch.float64).requires_grad_() if history else None
    y, new_state = conv(x, state, mask=mask)
    weight_y = torch.randn(y.shape, generator=g, dtype=torch.float64) * mask[..., None]
    weight_state = torch.randn(new_state.shape, generator=g, dtype=torch.float64)
    ((y * weight_y).sum() + (new_state * weight_state).sum()).backward()
    d_weight, conv.conv.weight.grad = conv.conv.weight.grad, None
    for b, row in enumerate(rows):
        real = mask[b]
        assert torch.count_nonzero(x.grad[b, ~real]) == 0
        if not real.any():  # all pads: the history stays
            held = torch.zeros(K - 1, D, dtype=torch.float64) if state is None else state[b]
            assert torch.equal(held, new_state[b])
            if state is not None:
                assert torch.equal(weight_state[b], state.grad[b])
            continue
        x_alone = row[None].clone().requires_grad_()
        state_alone = None if state is None else state[b:b + 1].detach().clone().requires_grad_()
        y_alone, new_alone = conv(x_alone, state_alone)
        ((y_alone * weight_y[b:b + 1, real]).sum() + (new_alone * weight_state[b:b + 1]).sum()).backward()
        assert_close(f"y[{b}]", y_alone[0], y[b, real])
        assert_close(f"state[{b}]", new_alone[0], new_state[b])
        assert_close(f"dx[{b}]", x_alone.grad[0], x.grad[b, real])
        if state is not None:
            assert_close(f"dstate[{b}]", state_alone.grad[0], state.grad[b])
    assert_close("dweight", conv.conv.weight.grad, d_weight)
    assert torch.isfinite(y).all()
    if side != "right":
        assert (conv(x, state)[1] - new_state).abs().max() > 1e-3  # without the mask: another state


def test_conv_padding_with_resets():
    conv = CausalConv1d(3, 4).double()
    mask = make_mask("both", (20,), S=33)
    x = torch.randn(1, 33, 3, dtype=torch.float64)
    history = torch.randn(1, 3, 3, dtype=torch.float64)
    resets = torch.zeros(1, 33, dtype=torch.bool)
    real = mask[0].nonzero().flatten()
    resets[0, real[[5, 18]]] = True
    y, state = conv(x, history, resets=resets, mask=mask)
    for start, end, given in ((0, 5, history), (5, 18, None), (18, 20, None)):
        y_alone, state_alone = conv(x[:, real[start:end]], given)
        assert_close(f"y[{start}:{end}]", y_alone, y[:, real[start:end]])
    assert_close("state", state_alone, state)


# ---- bad masks ----

def _mlstm_call(**kwargs):
    x = mlstm_rows()[0]
    return mlstm(*(x[n][None, :5] for n in MLSTM_INPUTS), **kwargs)


def _slstm_call(**kwargs):
    return slstm(slstm_rows()[0]["x"][None, :5], R_SLSTM, **kwargs)


PAD_RESET = dict(mask=torch.tensor([[False, True, True, True, True]]),
                 resets=torch.tensor([[True, False, False, False, False]]))


@pytest.mark.parametrize("call", [_mlstm_call, _slstm_call], ids=["mlstm", "slstm"])
@pytest.mark.parametrize(("kwargs", "error", "message"), [
    (dict(mask=torch.ones(1, 5)), TypeError, "mask must be a bool tensor"),
    (dict(mask=torch.ones(1, 5, dtype=torch.long)), TypeError, "got dtype torch.int64"),
    (dict(mask=torch.ones(1, 4, dtype=torch.bool)), ValueError, r"mask must have shape \(1, 5\)"),
    (dict(mask=torch.ones(5, dtype=torch.bool)), ValueError, r"got \(5,\)"),
    (dict(mask=[[True] * 5]), TypeError, "got list"),
    (PAD_RESET, ValueError, r"resets marks padded position \(row 0, token 0\)"),
])
def test_bad_mask(call, kwargs, error, message):
    with pytest.raises(error, match=message):
        call(**kwargs)
