"""Triton mLSTM kernels: the chunkwise forward and backward on the GPU (and, with TRITON_INTERPRET=1, on the CPU
for tests).

    h, state = mlstm_triton(q, k, v, i, f, initial_state, input_gate="exp", eps=1e-6, chunk_size=64, resets=None)

Same layout and result as `mlstm_chunkwise`, and exact gradients for q, k, v, i, f and the initial state.
"""

import math
import os

import torch
import triton

from ..state import mLSTMState
from .backward import _chunk_grads_qk, _chunk_grads_v, _chunk_states_backward, _output_dot
from .forward import _chunk_outputs, _chunk_states, _nonfinite_chunks
from .gates import log_gate_grads, prepare_gates, stabilizer_grads

PRECISIONS = {torch.float32: "ieee", torch.float64: "ieee", torch.bfloat16: "tf32", torch.float16: "tf32"}
# the backward's chunk: it recomputes the chunk memories with chunks of at most this size, whatever the forward's
# (the rows' stabilizers and normalizers that it takes from the forward do not depend on the chunk size)
BACKWARD_CHUNK = 64
# launch settings per kernel: largest tiles over DK and DV (capped at the head dims), and Triton's num_warps and
# num_stages, as measured best on an H200 at the 7B geometry (benchmarks/bench_mlstm_triton.py --sweep)
TUNING = {
    "states": dict(BK=64, BV=128, num_warps=4, num_stages=3),
    "outputs": dict(BK=64, BV=128, num_warps=4, num_stages=3),
    "states_backward": dict(BK=64, BV=128, num_warps=4, num_stages=3),
    "grads_qk": dict(BK=64, BV=32, num_warps=4, num_stages=3),
    "grads_v": dict(BK=64, BV=64, num_warps=4, num_stages=3),
}


def mlstm_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i: torch.Tensor, f: torch.Tensor,
    initial_state: mLSTMState | None = None, *, input_gate: str = "exp", eps: float = 1e-6, chunk_size: int = 64,
    resets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, mLSTMState]:
    """mLSTM over a whole sequence with the Triton kernels. q, k [B, S, H, DK]; v [B, S, H, DV]; i, f [B, S, H].

    DK and DV must be multiples of 16 (<= 512); chunk_size a power of two in [16, 128]. Returns h in q's dtype and
    the final state in float32.
    """
    check_inputs(q, k, v, chunk_size)
    C0, n0, m0 = (None, None, None) if initial_state is None else initial_state
    h, C, n, m = _TritonChunkwise.apply(q, k, v, i, f, C0, n0, m0, resets, input_gate, eps, chunk_size)
    return h, mLSTMState(C, n, m)


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk_size: int = 64) -> None:
    """Raise unless the Triton kernels take these tensors, head dims, chunk size and dtypes."""
    if not q.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"the Triton mLSTM runs on CUDA tensors, got q on {q.device} (TRITON_INTERPRET=1 runs it "
                         "on the CPU, slowly, for tests)")
    DK, DV = q.shape[-1], v.shape[-1]
    if DK % 16 or DV % 16 or max(DK, DV) > 512:
        raise ValueError(f"the Triton mLSTM needs head dims that are multiples of 16 up to 512, got DK={DK}, DV={DV}")
    if chunk_size not in (16, 32, 64, 128):
        raise ValueError(f"the Triton mLSTM needs chunk_size in (16, 32, 64, 128), got {chunk_size}")
    if q.dtype not in PRECISIONS or not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share one float dtype, got {q.dtype}, {k.dtype}, {v.dtype}")


class _TritonChunkwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, i, f, C0, n0, m0, resets, input_gate, eps, chunk_size):
        initial = None if C0 is None else (C0, n0, m0)
        h, final, rows = _forward(q, k, v, i, f, initial, resets, input_gate, eps, chunk_size)
        ctx.save_for_backward(q, k, v, i, f, C0, n0, m0, resets, h, *final, *rows)
        ctx.options = dict(input_gate=input_gate, eps=eps, L=min(chunk_size, BACKWARD_CHUNK))
        ctx.set_materialize_grads(False)
        return h, *final

    @staticmethod
    def backward(ctx, dh, dC, dn, dm):
        q, k, v, i, f, C0, n0, m0, resets, h, C, n, m, m_row, sum_row = ctx.saved_tensors
        initial = None if C0 is None else (C0, n0, m0)
        grads = _backward(q, k, v, i, f, initial, resets, h, (C, n, m), (m_row, sum_row), dh, (dC, dn, dm),
                          **ctx.options)
        return (*grads, None, None, None, None)


def _forward(q, k, v, i, f, initial, resets, input_gate: str, eps: float, L: int):
    """Launch the two forward kernels. Returns h, the final (C, n, m) and per row (m, q . n) [BH, NC*L]."""
    B, S, H, DK = q.shape
    DV, NC = v.shape[-1], math.ceil(S / L)
    gates = prepare_gates(i, f, input_gate, resets, L, NC)
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    common = _common_args(q, DK, DV, L)
    C_in, n_in, m_in, final = _chunk_memories(k, v, gates, initial, input_gate, resets, common, B, S, H, NC)
    h = torch.empty(B, S, H, DV, device=q.device, dtype=q.dtype)
    m_row, sum_row = torch.empty(2, B * H, NC * L, device=q.device, dtype=torch.float32)
    nonfinite = torch.empty(B * H, NC, device=q.device, dtype=torch.int32)
    _nonfinite_chunks[(NC, B * H)](v, nonfinite, S, H, NC, *v.stride()[:3], DV=DV, L=L,
                                   BV=min(128, triton.next_power_of_2(DV)))
    _chunk_outputs[(NC, B * H)](
        q, k, v, gates["b_decay"], gates["b_inflow"], gates["log_i"], gates["segment"], gates["restart"],
        C_in, n_in, m_in, nonfinite, h, m_row, sum_row,
        S, H, NC, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *h.stride()[:3], DK**-0.5, eps,
        HAS_RESETS=resets is not None, STABILIZE=input_gate == "exp", **common, **_tiles("outputs", DK, DV),
    )
    return h, final, (m_row, sum_row)


def _common_args(q, DK: int, DV: int, L: int) -> dict:
    """The compile-time arguments that all kernels share."""
    return dict(DK=DK, DV=DV, L=L, PRECISION=PRECISIONS[q.dtype],
                DOT_F32=q.dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1")


def _store_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype of the per-chunk memories (and their gradients) in global memory: bf16 for bf16 inputs, whose
    kernels round them to bf16 for the tensor cores anyway (it halves the traffic); fp32 otherwise."""
    return torch.bfloat16 if x.dtype == torch.bfloat16 else torch.float32


def _tiles(kernel: str, DK: int, DV: int) -> dict:
    """Tile sizes and launch settings of one kernel (TUNING)."""
    tuning = TUNING[kernel]
    return dict(tuning, BK=min(tuning["BK"], triton.next_power_of_2(DK)),
                BV=min(tuning["BV"], triton.next_power_of_2(DV)))


def _chunk_memories(k, v, gates, initial, input_gate: str, resets, common: dict, B, S, H, NC):
    """The memory entering each chunk: C_in [BH, NC, DK, DV], n_in [BH, NC, DK], m_in [BH, NC]; and the final one."""
    DK, DV = common["DK"], common["DV"]
    tiles = _tiles("states", DK, DV)
    BK, BV = tiles["BK"], tiles["BV"]
    dev, f32 = k.device, torch.float32
    C_in = torch.empty(B * H, NC, DK, DV, device=dev, dtype=_store_dtype(k))
    n_in = torch.empty(B * H, NC, DK, device=dev, dtype=f32)
    m_in = torch.empty(B * H, NC, device=dev, dtype=f32)
    C = torch.empty(B, H, DK, DV, device=dev, dtype=f32)
    n = torch.empty(B, H, DK, device=dev, dtype=f32)
    m = torch.empty(B, H, device=dev, dtype=f32)
    initial = None if initial is None else [x.to(f32).contiguous() for x in initial]
    _chunk_states[(triton.cdiv(DK, BK), triton.cdiv(DV, BV), B * H)](
        k, v, gates["a"], gates["g"], gates["m_chunk"], *(initial or (C, n, m)), C_in, n_in, m_in, C, n, m,
        S, H, NC, *k.stride()[:3], *v.stride()[:3], HAS_INITIAL=initial is not None, HAS_RESETS=resets is not None,
        STABILIZE=input_gate == "exp", **common, **tiles,
    )
    return C_in, n_in, m_in, (C, n, m)


def _backward(q, k, v, i, f, initial, resets, h, final, rows, dh, d_final, input_gate: str, eps: float, L: int):
    """Gradients of q, k, v, i, f, C0, n0, m0 (None where the forward had no initial state)."""
    B, S, H, DK = q.shape
    DV, NC, BH = v.shape[-1], math.ceil(S / L), B * H
    dev, f32 = q.device, torch.float32
    gates = prepare_gates(i, f, input_gate, resets, L, NC)
    q, k, v = (x.contiguous() for x in (q, k, v))
    common = _common_args(q, DK, DV, L)
    C_in, n_in, m_in, _ = _chunk_memories(k, v, gates, initial, input_gate, resets, common, B, S, H, NC)  # not stored
    C, n, m = final
    m_next = torch.cat([m_in[:, 1:], m.reshape(BH, 1)], 1).contiguous()  # stabilizer of the memory leaving a chunk

    # h = num / den with den = max(|q . n|, exp(-m)) + eps: d(den) = -sum_v dh h / den. The rows are the tokens'
    # (padded to the forward's chunks, which may be longer than L)
    m_row, sum_row = (x[:, :NC * L].contiguous() for x in rows)
    den = torch.maximum(sum_row.abs(), torch.exp(-m_row)) + eps
    dh = torch.zeros_like(h) if dh is None else dh.contiguous()
    h_dh = torch.empty(B, S, H, device=dev, dtype=f32)
    _output_dot[(triton.cdiv(B * S * H, 32),)](h, dh, h_dh, B * S * H, DV=DV, ROWS=32,
                                               BV=min(128, triton.next_power_of_2(DV)))
    d_den = torch.zeros(BH, NC * L, device=dev, dtype=f32)
    d_den[:, :S] = -h_dh.transpose(1, 2).reshape(BH, S)
    d_den /= den
    inv_den = torch.where(torch.arange(NC * L, device=dev) < S, 1 / den, 0.0)
    d_sum = d_den * torch.sign(sum_row) * (sum_row.abs() >= torch.exp(-m_row))

    dC_out = torch.empty(BH, NC, DK, DV, device=dev, dtype=_store_dtype(q))
    dn_out = torch.empty(BH, NC, DK, device=dev, dtype=f32)
    dC0 = torch.empty(B, H, DK, DV, device=dev, dtype=f32)
    dn0 = torch.empty(B, H, DK, device=dev, dtype=f32)
    state_tiles, qk_tiles, v_tiles = (_tiles(name, DK, DV) for name in ("states_backward", "grads_qk", "grads_v"))
    state_grid = (triton.cdiv(DK, state_tiles["BK"]), triton.cdiv(DV, state_tiles["BV"]), BH)
    qk_grid, v_grid = (triton.cdiv(DK, qk_tiles["BK"]), NC, BH), (triton.cdiv(DV, v_tiles["BV"]), NC, BH)
    parts = dict(dg=torch.empty(state_grid[0] * state_grid[1], BH, NC, device=dev, dtype=f32),
                 **{name: torch.empty(qk_grid[0], BH, NC * L, device=dev, dtype=f32) for name in ("db", "dli", "da")})
    dC_final, dn_final, dm_final = d_final
    has_final_grad = dC_final is not None or dn_final is not None
    if has_final_grad:
        dC_final = torch.zeros_like(C) if dC_final is None else dC_final.float().contiguous()
        dn_final = torch.zeros_like(n) if dn_final is None else dn_final.float().contiguous()
    scale = DK**-0.5
    _chunk_states_backward[state_grid](
        q, dh, inv_den, d_sum, gates["b_inflow"], m_row, m_in, m_next, gates["g"], C_in, n_in,
        *((dC_final, dn_final) if has_final_grad else (dC0, dn0)), dC_out, dn_out, dC0, dn0, parts["dg"],
        S, H, NC, *q.stride()[:3], *dh.stride()[:3], scale, HAS_FINAL_GRAD=has_final_grad, **common, **state_tiles,
    )
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    _chunk_grads_qk[qk_grid](
        q, k, v, dh, inv_den, d_sum, gates["b_decay"], gates["b_inflow"], gates["log_i"], gates["a"],
        gates["segment"], m_row, m_in, m_next, n_in, C_in, dC_out, dn_out, dq, dk, parts["db"], parts["dli"],
        parts["da"], S, H, NC, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *dh.stride()[:3], scale,
        HAS_RESETS=resets is not None, **common, **qk_tiles,
    )
    _chunk_grads_v[v_grid](
        q, k, dh, inv_den, gates["b_decay"], gates["log_i"], gates["segment"], m_row, gates["a"], m_next, dC_out, dv,
        S, H, NC, *q.stride()[:3], *k.stride()[:3], *dh.stride()[:3], *dv.stride()[:3], scale,
        HAS_RESETS=resets is not None, **common, **v_tiles,
    )

    d_log_i, d_log_f = (x.view(B, H, NC * L)[..., :S] for x in log_gate_grads(parts, L))
    dm0 = None
    if initial is not None:  # the initial memory enters only as exp(m0) (C0, n0)
        C0, n0, _ = initial
        dm0 = (dC0 * C0).sum((-2, -1)) + (dn0 * n0).sum(-1)
    if input_gate == "exp":  # the stabilizers: see stabilizer_grads
        d_m = eps * d_den.view(B, H, NC * L)[..., :S]  # unstabilized, den carries eps exp(m)
        d_m_final = dm_final.float() if dm_final is not None else torch.zeros_like(m)
        if has_final_grad:  # the final memory is stored as exp(-m) (C, n)
            d_m_final = d_m_final - (dC_final * C).sum((-2, -1)) - (dn_final * n).sum(-1)
        d_m[..., -1] += d_m_final
        log_i = gates["log_i"].view(B, H, NC * L)[..., :S]
        d_li, d_lf, d_m0 = stabilizer_grads(d_m, m_row.view(B, H, NC * L)[..., :S], log_i, resets)
        d_log_i, d_log_f = d_log_i + d_li, d_log_f + d_lf
        if dm0 is not None:
            dm0 = dm0 + d_m0
    if input_gate != "exp":
        d_log_i = d_log_i * torch.sigmoid(-i.float()).transpose(1, 2)
    d_log_f = d_log_f * torch.sigmoid(-f.float()).transpose(1, 2)
    grads = [dq, dk, dv, d_log_i.transpose(1, 2).to(i.dtype), d_log_f.transpose(1, 2).to(f.dtype)]
    if initial is None:
        return (*grads, None, None, None)
    return (*grads, *(g.to(x.dtype) for g, x in zip((dC0, dn0, dm0), initial, strict=True)))
