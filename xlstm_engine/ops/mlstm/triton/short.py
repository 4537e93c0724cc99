"""Short prompts (up to SHORT_PROMPT = 64 tokens, no autograd) in one Triton launch: gates, outputs, new memory.

The chunkwise path spends more time launching than computing on a few tokens (gate preparation, two kernels,
memories written between them); here one program per (DV tile, sequence-head) treats the prompt as one chunk and
computes its log gates and their cumulative sums itself. Same math as one chunk of the chunkwise form (README.md).
"""

import torch
import triton
import triton.language as tl

from ..limits import SHORT_PROMPT
from ..state import mLSTMState
from .forward import _attend, _dot
from .gates import log_sigmoid
from .utils import check_inputs, dot_args


@triton.jit
def _short_sequence(
    Q, K, V, IG, FG, C0, N0, M0, C_OUT, N_OUT, M_OUT, H_OUT,
    S, H, stride_qb, stride_qs, stride_qh, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh,
    stride_gb, stride_gs, stride_gh, stride_hb, stride_hs, stride_hh, scale, eps,
    DK: tl.constexpr, DV: tl.constexpr, SP: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    STABILIZE: tl.constexpr, PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
):
    """q, k [B, S, H, DK]; v, h [B, S, H, DV]; gate pre-activations [B, S, H]; memory (C0, N0, M0) [BH, ...] in,
    (C_OUT, N_OUT, M_OUT) out (other tensors: every program reads all of n0 and m0). SP: S padded to a power of 2.
    As in the chunkwise outputs kernel, a NaN or inf reaches no earlier row."""
    pid_v, pid_bh = tl.program_id(0), tl.program_id(1).to(tl.int64)  # 64-bit offsets
    b, h = pid_bh // H, pid_bh % H
    rs = tl.arange(0, SP).to(tl.int64)
    ms = rs < S
    rv = pid_v * BV + tl.arange(0, BV)
    mv = rv < DV
    gates = b * stride_gb + rs * stride_gs + h * stride_gh
    log_f = tl.where(ms, log_sigmoid(tl.load(FG + gates, mask=ms, other=0.0).to(tl.float32)), 0.0)
    log_i = tl.load(IG + gates, mask=ms, other=0.0).to(tl.float32)
    if not STABILIZE:
        log_i = log_sigmoid(log_i)
    log_i = tl.where(ms, log_i, float("-inf"))  # padding: no input, no decay
    b_cum = tl.cumsum(log_f, axis=0)
    g = tl.sum(log_f, axis=0)
    # log weight of token l in the new memory: sum_{r>l} log f_r + log i_l, a reverse cumsum of the next token's
    # log f (g - b_l would cancel)
    following = rs + 1 < S
    log_f_next = tl.load(FG + gates + stride_gs, mask=following, other=0.0).to(tl.float32)
    log_f_next = tl.where(following, log_sigmoid(log_f_next), 0.0)
    a = tl.cumsum(log_f_next, axis=0, reverse=True) + log_i
    m0 = tl.load(M0 + pid_bh).to(tl.float32)
    log_decay = tl.where(rs[:, None] >= rs[None, :], b_cum[:, None] - b_cum[None, :] + log_i[None, :],
                         float("-inf"))
    log_w_in = b_cum + m0  # log weight of the old memory at row j
    if STABILIZE:
        m_new = tl.maximum(g + m0, tl.max(a, axis=0))
        m_row = tl.maximum(log_w_in, tl.max(log_decay, axis=1))
    else:
        m_new = m0 * 0.0
        m_row = tl.zeros([SP], dtype=tl.float32)
    decay = tl.exp(g + m0 - m_new)
    w_out = tl.exp(a - m_new)

    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + h * stride_kh
    v = tl.load(V + b * stride_vb + h * stride_vh + rs[:, None] * stride_vs + rv[None, :],
                mask=ms[:, None] & mv[None, :], other=0.0)
    state = pid_bh * DK * DV
    scores = tl.zeros([SP, SP], dtype=tl.float32)
    q_C = tl.zeros([SP, BV], dtype=tl.float32)
    for k0 in range(0, DK, BK):  # reads: dots only (see forward.py on elementwise use of a dot operand)
        rk = k0 + tl.arange(0, BK)
        mk = rk < DK
        q = tl.load(q_base + rs[:, None] * stride_qs + rk[None, :], mask=ms[:, None] & mk[None, :], other=0.0)
        k = tl.load(k_base + rs[:, None] * stride_ks + rk[None, :], mask=ms[:, None] & mk[None, :], other=0.0)
        scores += _dot(q, tl.trans(k), PRECISION, DOT_F32)
        C = tl.load(C0 + state + rk[:, None] * DV + rv[None, :], mask=mk[:, None] & mv[None, :], other=0.0)
        q_C += _dot(q, C.to(q.dtype), PRECISION, DOT_F32)
    q_n = tl.zeros([SP], dtype=tl.float32)
    for k0 in range(0, DK, BK):  # the new memory, and q . n0
        rk = k0 + tl.arange(0, BK)
        mk = rk < DK
        k = tl.load(k_base + rs[:, None] * stride_ks + rk[None, :], mask=ms[:, None] & mk[None, :], other=0.0)
        k_out = k.to(tl.float32) * w_out[:, None]
        C = tl.load(C0 + state + rk[:, None] * DV + rv[None, :], mask=mk[:, None] & mv[None, :], other=0.0)
        C = decay * C.to(tl.float32) + _dot(tl.trans(k_out.to(v.dtype)), v, PRECISION, DOT_F32)
        tl.store(C_OUT + state + rk[:, None] * DV + rv[None, :], C.to(C_OUT.dtype.element_ty),
                 mask=mk[:, None] & mv[None, :])
        n0 = tl.load(N0 + pid_bh * DK + rk, mask=mk, other=0.0).to(tl.float32)
        q = tl.load(q_base + rs[:, None] * stride_qs + rk[None, :], mask=ms[:, None] & mk[None, :], other=0.0)
        q_n += tl.sum(q.to(tl.float32) * n0[None, :], axis=1)
        if pid_v == 0:
            n = decay * n0 + tl.sum(k_out, axis=0)
            tl.store(N_OUT + pid_bh * DK + rk, n.to(N_OUT.dtype.element_ty), mask=mk)
    if pid_v == 0:
        tl.store(M_OUT + pid_bh, m_new.to(M_OUT.dtype.element_ty))

    visible = log_decay != float("-inf")
    weights = tl.where(visible, scores * scale * tl.exp(log_decay - m_row[:, None]), 0.0)
    w_in = tl.exp(log_w_in - m_row) * scale
    num = _attend(weights.to(v.dtype), visible, v, PRECISION, DOT_F32) + w_in[:, None] * q_C
    den = tl.maximum(tl.abs(tl.sum(weights, axis=1) + w_in * q_n), tl.exp(-m_row)) + eps
    tl.store(H_OUT + b * stride_hb + h * stride_hh + rs[:, None] * stride_hs + rv[None, :],
             (num / den[:, None]).to(H_OUT.dtype.element_ty), mask=ms[:, None] & mv[None, :])


def mlstm_short_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i: torch.Tensor, f: torch.Tensor,
    initial_state: mLSTMState | None = None, *, input_gate: str = "exp", eps: float = 1e-6,
) -> tuple[torch.Tensor, mLSTMState]:
    """A prompt of S <= SHORT_PROMPT tokens, without autograd. Layout of `mlstm`; returns h in q's dtype and a
    new float32 state."""
    B, S, H, DK = q.shape
    DV = v.shape[-1]
    if S > SHORT_PROMPT:
        raise ValueError(f"the short-prompt kernel takes up to {SHORT_PROMPT} tokens, got S={S}")
    check_inputs(q, k, v)
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    if initial_state is None:
        initial_state = mLSTMState.zeros(B, H, DK, DV, device=q.device)
    C0, n0, m0 = (x.contiguous() for x in initial_state)
    f32 = torch.float32
    out = mLSTMState(torch.empty(B, H, DK, DV, device=q.device, dtype=f32),
                     torch.empty(B, H, DK, device=q.device, dtype=f32), torch.empty(B, H, device=q.device, dtype=f32))
    h = torch.empty(B, S, H, DV, device=q.device, dtype=q.dtype)
    BV = min(32 if B * H <= 16 else 64, triton.next_power_of_2(DV))  # small batches: more programs
    i, f = i.contiguous(), f.contiguous()  # one set of strides for both
    _short_sequence[(triton.cdiv(DV, BV), B * H)](
        Q=q, K=k, V=v, IG=i, FG=f, C0=C0, N0=n0, M0=m0, C_OUT=out.C, N_OUT=out.n, M_OUT=out.m, H_OUT=h, S=S, H=H,
        stride_qb=q.stride(0), stride_qs=q.stride(1), stride_qh=q.stride(2),
        stride_kb=k.stride(0), stride_ks=k.stride(1), stride_kh=k.stride(2),
        stride_vb=v.stride(0), stride_vs=v.stride(1), stride_vh=v.stride(2),
        stride_gb=i.stride(0), stride_gs=i.stride(1), stride_gh=i.stride(2),
        stride_hb=h.stride(0), stride_hs=h.stride(1), stride_hh=h.stride(2),
        scale=DK**-0.5, eps=eps, DK=DK, DV=DV, SP=max(16, triton.next_power_of_2(S)),
        BK=min(64, triton.next_power_of_2(DK)), BV=BV, STABILIZE=input_gate == "exp", **dot_args(q.dtype),
    )
    return h, out
