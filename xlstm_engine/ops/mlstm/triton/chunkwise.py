"""The chunkwise mLSTM on the Triton kernels: host functions, the autograd Function and the public op.

    h, state = mlstm_triton(q, k, v, i, f, initial_state, input_gate="exp", eps=1e-6, chunk_size=64, resets=None)

Same layout and result as `mlstm_chunkwise`, and exact gradients for q, k, v, i, f and the initial state. Read
bottom-up: the kernels (gates.py, forward.py, backward.py), the host functions that launch them
(`chunkwise_fwd`, `chunkwise_bwd`), the autograd Function, the public `mlstm_triton`.
"""

import math

import torch
import triton

from ..state import mLSTMState
from .backward import _chunk_grads_qk, _chunk_grads_v, _chunk_states_backward, _output_dot
from .forward import _chunk_outputs, _chunk_states, _nonfinite_chunks
from .gates import ChunkGates, log_gate_grads, prepare_gates, stabilizer_grads
from .utils import check_inputs, dot_args

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


def _tiles(kernel: str, DK: int, DV: int) -> dict:
    """Tile sizes and launch settings of one kernel (TUNING): BK, BV, num_warps, num_stages."""
    tuning = TUNING[kernel]
    return dict(tuning, BK=min(tuning["BK"], triton.next_power_of_2(DK)),
                BV=min(tuning["BV"], triton.next_power_of_2(DV)))


def _store_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype of the per-chunk memories (and their gradients) in global memory: bf16 for bf16 inputs, whose
    kernels round them to bf16 for the tensor cores anyway (it halves the traffic); fp32 otherwise."""
    return torch.bfloat16 if x.dtype == torch.bfloat16 else torch.float32


def chunk_memories(k, v, gates: ChunkGates, initial, input_gate: str, has_resets: bool, L: int):
    """The memory entering each chunk, C_in [BH, NC, DK, DV], n_in [BH, NC, DK], m_in [BH, NC], and the final
    memory (C [B, H, DK, DV], n [B, H, DK], m [B, H]) in float32. k [B, S, H, DK], v [B, S, H, DV]; initial:
    (C0, n0, m0) or None."""
    B, S, H, DK = k.shape
    DV, NC = v.shape[-1], math.ceil(S / L)
    tiles = _tiles("states", DK, DV)
    dev, f32 = k.device, torch.float32
    C_in = torch.empty(B * H, NC, DK, DV, device=dev, dtype=_store_dtype(k))
    n_in = torch.empty(B * H, NC, DK, device=dev, dtype=f32)
    m_in = torch.empty(B * H, NC, device=dev, dtype=f32)
    C = torch.empty(B, H, DK, DV, device=dev, dtype=f32)
    n = torch.empty(B, H, DK, device=dev, dtype=f32)
    m = torch.empty(B, H, device=dev, dtype=f32)
    C0, n0, m0 = (None, None, None) if initial is None else (x.to(f32).contiguous() for x in initial)
    _chunk_states[(triton.cdiv(DK, tiles["BK"]), triton.cdiv(DV, tiles["BV"]), B * H)](
        K=k, V=v, A=gates.a, G=gates.g, M_CHUNK=gates.m_chunk, C0=C0, N0=n0, M0=m0, C_IN=C_in, N_IN=n_in, M_IN=m_in,
        C_OUT=C, N_OUT=n, M_OUT=m, S=S, H=H, NC=NC,
        stride_kb=k.stride(0), stride_ks=k.stride(1), stride_kh=k.stride(2),
        stride_vb=v.stride(0), stride_vs=v.stride(1), stride_vh=v.stride(2),
        DK=DK, DV=DV, L=L, HAS_INITIAL=initial is not None, HAS_RESETS=has_resets, STABILIZE=input_gate == "exp",
        **dot_args(k.dtype), **tiles,
    )
    return C_in, n_in, m_in, (C, n, m)


def chunkwise_fwd(q, k, v, i, f, initial, resets, input_gate: str, eps: float, L: int):
    """Launch the forward kernels. q, k [B, S, H, DK]; v [B, S, H, DV]; i, f [B, S, H]; initial (C0, n0, m0) or
    None; resets [B, S] or None. Returns h [B, S, H, DV], the final (C, n, m) and, for the backward, per row the
    stabilizer m and the signed normalizer sum q . n [BH, NC*L]."""
    B, S, H, DK = q.shape
    DV, NC = v.shape[-1], math.ceil(S / L)
    gates = prepare_gates(i, f, input_gate, resets, L, NC)
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    C_in, n_in, m_in, final = chunk_memories(k, v, gates, initial, input_gate, resets is not None, L)
    h = torch.empty(B, S, H, DV, device=q.device, dtype=q.dtype)
    m_row, sum_row = torch.empty(2, B * H, NC * L, device=q.device, dtype=torch.float32)
    nonfinite = torch.empty(B * H, NC, device=q.device, dtype=torch.int32)
    _nonfinite_chunks[(NC, B * H)](
        V=v, FLAGS=nonfinite, S=S, H=H, NC=NC, stride_vb=v.stride(0), stride_vs=v.stride(1), stride_vh=v.stride(2),
        DV=DV, L=L, BV=min(128, triton.next_power_of_2(DV)),
    )
    _chunk_outputs[(NC, B * H)](
        Q=q, K=k, V=v, B_DECAY=gates.b_decay, B_INFLOW=gates.b_inflow, LOG_I=gates.log_i, SEGMENT=gates.segment,
        RESTART=gates.restart, C_IN=C_in, N_IN=n_in, M_IN=m_in, NONFINITE=nonfinite, H_OUT=h, M_ROW=m_row,
        SUM_ROW=sum_row, S=S, H=H, NC=NC,
        stride_qb=q.stride(0), stride_qs=q.stride(1), stride_qh=q.stride(2),
        stride_kb=k.stride(0), stride_ks=k.stride(1), stride_kh=k.stride(2),
        stride_vb=v.stride(0), stride_vs=v.stride(1), stride_vh=v.stride(2),
        stride_hb=h.stride(0), stride_hs=h.stride(1), stride_hh=h.stride(2),
        scale=DK**-0.5, eps=eps, DK=DK, DV=DV, L=L, HAS_RESETS=resets is not None, STABILIZE=input_gate == "exp",
        **dot_args(q.dtype), **_tiles("outputs", DK, DV),
    )
    return h, final, (m_row, sum_row)


def chunkwise_bwd(q, k, v, i, f, initial, resets, h, final, rows, dh, d_final, input_gate: str, eps: float,
                  L: int):
    """Gradients of q, k, v, i, f, C0, n0, m0 (None where the forward had no initial state). h, final and rows as
    `chunkwise_fwd` returned them (rows padded to the forward's chunks, which may be longer than L); dh and
    d_final = (dC, dn, dm) the incoming gradients, each None where none flows."""
    B, S, H, DK = q.shape
    DV, NC, BH = v.shape[-1], math.ceil(S / L), B * H
    dev, f32 = q.device, torch.float32
    gates = prepare_gates(i, f, input_gate, resets, L, NC)
    q, k, v = (x.contiguous() for x in (q, k, v))
    has_resets = resets is not None
    C_in, n_in, m_in, _ = chunk_memories(k, v, gates, initial, input_gate, has_resets, L)  # recomputed, not stored
    C, n, m = final
    m_next = torch.cat([m_in[:, 1:], m.reshape(BH, 1)], 1).contiguous()  # stabilizer of the memory leaving a chunk

    # h = num / den with den = max(|q . n|, exp(-m)) + eps: d(den) = -sum_v dh h / den. The rows are the tokens'
    # (padded to the forward's chunks, which may be longer than L)
    m_row, sum_row = (x[:, :NC * L].contiguous() for x in rows)
    den = torch.maximum(sum_row.abs(), torch.exp(-m_row)) + eps
    dh = torch.zeros_like(h) if dh is None else dh.contiguous()
    h_dh = torch.empty(B, S, H, device=dev, dtype=f32)
    _output_dot[(triton.cdiv(B * S * H, 32),)](
        H=h, DH=dh, OUT=h_dh, N=B * S * H, DV=DV, ROWS=32, BV=min(128, triton.next_power_of_2(DV)),
    )
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
    # per-tile parts of the log-gate gradients, summed in log_gate_grads
    dg_part = torch.empty(state_grid[0] * state_grid[1], BH, NC, device=dev, dtype=f32)
    db_part, dli_part, da_part = (torch.empty(qk_grid[0], BH, NC * L, device=dev, dtype=f32) for _ in range(3))
    dC_final, dn_final, dm_final = d_final
    has_final_grad = dC_final is not None or dn_final is not None
    if has_final_grad:
        dC_final = torch.zeros_like(C) if dC_final is None else dC_final.float().contiguous()
        dn_final = torch.zeros_like(n) if dn_final is None else dn_final.float().contiguous()
    dot = dot_args(q.dtype)
    scale = DK**-0.5
    _chunk_states_backward[state_grid](
        Q=q, DH=dh, INV_DEN=inv_den, DSUM=d_sum, B_INFLOW=gates.b_inflow, M_ROW=m_row, M_IN=m_in, M_NEXT=m_next,
        G=gates.g, C_IN=C_in, N_IN=n_in, DC_FINAL=dC_final, DN_FINAL=dn_final, DC_OUT=dC_out, DN_OUT=dn_out,
        DC0=dC0, DN0=dn0, DG_PART=dg_part, S=S, H=H, NC=NC,
        stride_qb=q.stride(0), stride_qs=q.stride(1), stride_qh=q.stride(2),
        stride_hb=dh.stride(0), stride_hs=dh.stride(1), stride_hh=dh.stride(2),
        scale=scale, DK=DK, DV=DV, L=L, HAS_FINAL_GRAD=has_final_grad, **dot, **state_tiles,
    )
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    _chunk_grads_qk[qk_grid](
        Q=q, K=k, V=v, DH=dh, INV_DEN=inv_den, DSUM=d_sum, B_DECAY=gates.b_decay, B_INFLOW=gates.b_inflow,
        LOG_I=gates.log_i, A=gates.a, SEGMENT=gates.segment, M_ROW=m_row, M_IN=m_in, M_NEXT=m_next, N_IN=n_in,
        C_IN=C_in, DC_OUT=dC_out, DN_OUT=dn_out, DQ=dq, DKEY=dk, DB_PART=db_part, DLI_PART=dli_part,
        DA_PART=da_part, S=S, H=H, NC=NC,
        stride_qb=q.stride(0), stride_qs=q.stride(1), stride_qh=q.stride(2),
        stride_kb=k.stride(0), stride_ks=k.stride(1), stride_kh=k.stride(2),
        stride_vb=v.stride(0), stride_vs=v.stride(1), stride_vh=v.stride(2),
        stride_hb=dh.stride(0), stride_hs=dh.stride(1), stride_hh=dh.stride(2),
        scale=scale, DK=DK, DV=DV, L=L, HAS_RESETS=has_resets, **dot, **qk_tiles,
    )
    _chunk_grads_v[v_grid](
        Q=q, K=k, DH=dh, INV_DEN=inv_den, B_DECAY=gates.b_decay, LOG_I=gates.log_i, SEGMENT=gates.segment,
        M_ROW=m_row, A=gates.a, M_NEXT=m_next, DC_OUT=dC_out, DV_OUT=dv, S=S, H=H, NC=NC,
        stride_qb=q.stride(0), stride_qs=q.stride(1), stride_qh=q.stride(2),
        stride_kb=k.stride(0), stride_ks=k.stride(1), stride_kh=k.stride(2),
        stride_hb=dh.stride(0), stride_hs=dh.stride(1), stride_hh=dh.stride(2),
        stride_vb=dv.stride(0), stride_vs=dv.stride(1), stride_vh=dv.stride(2),
        scale=scale, DK=DK, DV=DV, L=L, HAS_RESETS=has_resets, **dot, **v_tiles,
    )

    d_log_i, d_log_f = (x.view(B, H, NC * L)[..., :S] for x in log_gate_grads(db_part, da_part, dli_part, dg_part, L))
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
        log_i = gates.log_i.view(B, H, NC * L)[..., :S]
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


class ChunkwiseFunction(torch.autograd.Function):
    """The Triton chunkwise mLSTM as one autograd node. The backward recomputes the chunk memories and reads only
    the rows' stabilizers and normalizer sums from the forward."""

    @staticmethod
    def forward(ctx, q, k, v, i, f, C0, n0, m0, resets, input_gate, eps, chunk_size):
        initial = None if C0 is None else (C0, n0, m0)
        h, final, rows = chunkwise_fwd(q, k, v, i, f, initial, resets, input_gate, eps, chunk_size)
        ctx.save_for_backward(q, k, v, i, f, C0, n0, m0, resets, h, *final, *rows)
        ctx.options = dict(input_gate=input_gate, eps=eps, L=min(chunk_size, BACKWARD_CHUNK))
        ctx.set_materialize_grads(False)
        return h, *final

    @staticmethod
    def backward(ctx, dh, dC, dn, dm):
        q, k, v, i, f, C0, n0, m0, resets, h, C, n, m, m_row, sum_row = ctx.saved_tensors
        initial = None if C0 is None else (C0, n0, m0)
        grads = chunkwise_bwd(q, k, v, i, f, initial, resets, h, (C, n, m), (m_row, sum_row), dh, (dC, dn, dm),
                              **ctx.options)
        return (*grads, None, None, None, None)


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
    h, C, n, m = ChunkwiseFunction.apply(q, k, v, i, f, C0, n0, m0, resets, input_gate, eps, chunk_size)
    return h, mLSTMState(C, n, m)
