"""The fused Triton decode step: one token, the memory read once and written once, in place if asked.

Two launches, so that no program reads what another one writes:
1. `_step_memory`: one program per (DV tile, sequence-head) updates its columns of C in place, and computes its
   part of h (it needs all of n, so it recomputes n's update in registers without storing it);
2. `_step_normalizer`: one program per sequence-head writes the new n and m.
"""

import torch
import triton
import triton.language as tl

from ..state import mLSTMState
from .gates import log_sigmoid


@triton.jit
def _log_gates(IG, FG, M, pid_bh, STABILIZE: tl.constexpr):
    """log f, and the new stabilizer with the weights f_t, i_t of the old memory and the new token."""
    log_f = log_sigmoid(tl.load(FG + pid_bh).to(tl.float32))
    i = tl.load(IG + pid_bh).to(tl.float32)
    m = tl.load(M + pid_bh).to(tl.float32)
    if STABILIZE:
        m_new = tl.maximum(log_f + m, i)
        log_i = i
    else:
        m_new = m * 0.0
        log_i = log_sigmoid(i)
    return m_new, tl.exp(log_f + m - m_new), tl.exp(log_i - m_new)


@triton.jit
def _step_memory(
    Q, K, V, IG, FG, C, N, M, C_OUT, H_OUT, scale, eps,
    DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, STABILIZE: tl.constexpr,
):
    """Q, K [BH, DK]; V, H_OUT [BH, DV]; IG, FG (gate pre-activations), M [BH]; C, C_OUT [BH, DK, DV] (may be
    the same memory)."""
    pid_v, pid_bh = tl.program_id(0), tl.program_id(1).to(tl.int64)  # 64-bit offsets
    rv = pid_v * BV + tl.arange(0, BV)
    mv = rv < DV
    m_new, f_t, i_t = _log_gates(IG, FG, M, pid_bh, STABILIZE)
    v = tl.load(V + pid_bh * DV + rv, mask=mv, other=0.0).to(tl.float32)
    num = tl.zeros([BV], dtype=tl.float32)
    q_n = tl.zeros([BK], dtype=tl.float32)
    for k0 in range(0, DK, BK):
        rk = k0 + tl.arange(0, BK)
        mk = rk < DK
        q = tl.load(Q + pid_bh * DK + rk, mask=mk, other=0.0).to(tl.float32) * scale
        k_in = tl.load(K + pid_bh * DK + rk, mask=mk, other=0.0).to(tl.float32) * i_t
        state = pid_bh * DK * DV + rk[:, None] * DV + rv[None, :]
        c = tl.load(C + state, mask=mk[:, None] & mv[None, :], other=0.0).to(tl.float32)
        c = f_t * c + k_in[:, None] * v[None, :]
        tl.store(C_OUT + state, c.to(C_OUT.dtype.element_ty), mask=mk[:, None] & mv[None, :])
        num += tl.sum(q[:, None] * c, axis=0)
        n = f_t * tl.load(N + pid_bh * DK + rk, mask=mk, other=0.0).to(tl.float32) + k_in
        q_n += q * n
    den = tl.maximum(tl.abs(tl.sum(q_n, axis=0)), tl.exp(-m_new)) + eps
    tl.store(H_OUT + pid_bh * DV + rv, (num / den).to(H_OUT.dtype.element_ty), mask=mv)


@triton.jit
def _step_normalizer(K, IG, FG, N, M, N_OUT, M_OUT, DK: tl.constexpr, BK: tl.constexpr, STABILIZE: tl.constexpr):
    """N, N_OUT [BH, DK] and M, M_OUT [BH] (may be the same memory)."""
    pid_bh = tl.program_id(0).to(tl.int64)
    m_new, f_t, i_t = _log_gates(IG, FG, M, pid_bh, STABILIZE)
    for k0 in range(0, DK, BK):
        rk = k0 + tl.arange(0, BK)
        mk = rk < DK
        n = f_t * tl.load(N + pid_bh * DK + rk, mask=mk, other=0.0).to(tl.float32)
        n += i_t * tl.load(K + pid_bh * DK + rk, mask=mk, other=0.0).to(tl.float32)
        tl.store(N_OUT + pid_bh * DK + rk, n.to(N_OUT.dtype.element_ty), mask=mk)
    tl.store(M_OUT + pid_bh, m_new.to(M_OUT.dtype.element_ty))


def mlstm_step_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i: torch.Tensor, f: torch.Tensor, state: mLSTMState, *,
    input_gate: str = "exp", eps: float = 1e-6, out: mLSTMState | None = None,
) -> tuple[torch.Tensor, mLSTMState]:
    """One decode step. q, k [B, H, DK]; v [B, H, DV]; i, f [B, H]; state (C, n, m) in any float dtype.

    The new state goes to `out` (`out=state` updates it in place) or to new tensors of the state's dtype.
    Returns h [B, H, DV] in q's dtype and the new state.
    """
    B, H, DK = q.shape
    DV = v.shape[-1]
    if out is None:
        out = mLSTMState(*(torch.empty_like(x, memory_format=torch.contiguous_format) for x in state))
    if not all(x.is_contiguous() for x in (*state, *out)):
        raise ValueError("the Triton step needs contiguous state tensors (C, n, m), in and out")
    q, k, v, i, f = (x.contiguous() for x in (q, k, v, i, f))
    h = torch.empty(B, H, DV, device=q.device, dtype=q.dtype)
    BK = min(64, triton.next_power_of_2(DK))
    BV = min(32 if B * H <= 16 else 64, triton.next_power_of_2(DV))  # small batches: more programs
    exp_gate = input_gate == "exp"
    _step_memory[(triton.cdiv(DV, BV), B * H)](
        Q=q, K=k, V=v, IG=i, FG=f, C=state.C, N=state.n, M=state.m, C_OUT=out.C, H_OUT=h, scale=DK**-0.5, eps=eps,
        DK=DK, DV=DV, BK=BK, BV=BV, STABILIZE=exp_gate,
    )
    _step_normalizer[(B * H,)](
        K=k, IG=i, FG=f, N=state.n, M=state.m, N_OUT=out.n, M_OUT=out.m, DK=DK, BK=BK, STABILIZE=exp_gate,
    )
    return h, out
