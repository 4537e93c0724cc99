"""Chunkwise-parallel mLSTM in PyTorch: exact, differentiable by autograd, memory linear in S.

The sequence is cut into chunks of L tokens. A short sequential scan carries the memory across chunk
boundaries; inside a chunk, outputs come from an L x L decay matrix plus the memory that entered the
chunk (README.md, "Chunkwise form"). The stabilizer of every position equals the recurrent m_t, so the
result equals the recurrence up to rounding, including the eps term of the denominator.

A length that is not a multiple of L runs as whole chunks followed by one shorter chunk: callers never pad.
"""

import torch
import torch.nn.functional as F

from .common import attend, documents, log_decay, restart, segment_sum, visibility
from .state import mLSTMState


def mlstm_chunkwise(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i: torch.Tensor, f: torch.Tensor,
    initial_state: mLSTMState | None = None, *, input_gate: str = "exp", eps: float = 1e-6, chunk_size: int = 64,
    resets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, mLSTMState]:
    """mLSTM over a whole sequence. Layout as in `xlstm_engine.ops.mlstm.mlstm`; returns (h, final state).

    resets [B, S] (bool, optional): the memory is emptied before these tokens (packed documents).

    Runs in float32 for half-precision inputs (float64 stays float64); h is cast back to q's dtype.
    """
    B, S, H, DK = q.shape
    out_dtype, dtype = q.dtype, torch.promote_types(q.dtype, torch.float32)
    i, f = i.to(dtype).transpose(1, 2), f.to(dtype).transpose(1, 2)  # [B, H, S]
    li, lf = (i if input_gate == "exp" else F.logsigmoid(i)), F.logsigmoid(f)
    q, k, v = (x.to(dtype).transpose(1, 2) for x in (q, k, v))  # [B, H, S, D]
    if initial_state is None:
        state = mLSTMState.zeros(B, H, DK, v.shape[-1], dtype=dtype, device=q.device)
    else:
        state = initial_state.to(dtype)

    exp_gate = input_gate == "exp"
    resets = None if resets is None else resets[:, None, :].expand_as(lf)  # [B, H, S]
    S_full = S // chunk_size * chunk_size
    hs = []
    for start, end, L in ((0, S_full, chunk_size), (S_full, S, S - S_full)):
        if end > start:
            h, state = _chunks(q[:, :, start:end], k[:, :, start:end], v[:, :, start:end], li[..., start:end],
                               lf[..., start:end], None if resets is None else resets[..., start:end], state, L,
                               exp_gate, eps)
            hs.append(h)
    h = torch.cat(hs, dim=2) if len(hs) > 1 else hs[0]
    return h.transpose(1, 2).to(out_dtype), state


def _chunks(q, k, v, li, lf, resets, state: mLSTMState, L: int, exp_gate: bool, eps: float):
    """Chunkwise mLSTM for S a multiple of L. q, k, v [B, H, S, D]; li, lf, resets (or None) [B, H, S]."""
    B, H, S, DK = q.shape
    NC = S // L
    q = q.reshape(B, H, NC, L, DK) * DK**-0.5
    k = k.reshape(B, H, NC, L, DK)
    v = v.reshape(B, H, NC, L, -1)
    li, lf = li.reshape(B, H, NC, L), lf.reshape(B, H, NC, L)
    resets = None if resets is None else resets.reshape(B, H, NC, L)
    document = documents(resets)  # packed documents: nothing passes a reset (masks, never zero weights)
    visible = visibility(L, document, q.device)
    sums = segment_sum(lf)
    D = log_decay(sums, li, visible)  # [B, H, NC, L, L]

    b = lf.cumsum(-1)  # log decay from the chunk start to j, inclusive
    g = b[..., -1]  # log decay over the whole chunk
    # log weight of token j in the chunk-end memory: sum_{s>j} lf_s + li_j (a reverse cumsum, not g - b,
    # which would cancel)
    a = torch.cat([lf.flip(-1).cumsum(-1).flip(-1)[..., 1:], torch.zeros_like(lf[..., :1])], -1) + li
    fresh = None  # the log weight of the empty memory a reset put in place, in the stabilizer's max
    if document is not None:
        inflow = document == 0  # rows that still read the memory entering the chunk
        outflow = document == document[..., -1:]  # tokens that reach the memory leaving it
        carries = inflow[..., -1]  # [B, H, NC]: no reset in the chunk
        a, b, g = a.masked_fill(~outflow, float("-inf")), b.masked_fill(~inflow, float("-inf")), \
            g.masked_fill(~carries, float("-inf"))
        fresh = restart(sums, lf, resets)

    # 1. the memory entering each chunk: a sequential scan over the NC chunks
    m_local = a.max(-1).values if exp_gate else torch.zeros_like(g)  # [B, H, NC]
    if exp_gate and fresh is not None:
        m_local = torch.maximum(m_local, fresh[..., -1])
    # a chunk where no token writes (every log input gate -inf: all padding) has m_local = -inf and a zero local
    # memory; it is scaled by e^0 instead, as exp(a - m_local) would be exp(-inf + inf) = NaN
    m_scale = m_local.masked_fill(m_local == float("-inf"), 0.0)
    k_weighted = k * torch.exp(a - m_scale[..., None])[..., None]
    if document is not None:
        k_weighted = torch.where(outflow[..., None], k_weighted, 0.0)
        v_out = torch.where(outflow[..., None], v, 0.0)
    C_local = k_weighted.transpose(-1, -2) @ (v if document is None else v_out)  # [B, H, NC, DK, DV]
    n_local = k_weighted.sum(-2)  # [B, H, NC, DK]
    C, n, m = state
    C_in, n_in, m_in = [], [], []
    for c in range(NC):
        C_in.append(C), n_in.append(n), m_in.append(m)
        if document is not None:  # a reset in the chunk: the old memory is gone, whatever it held
            keep = carries[..., c]
            C, n, m = torch.where(keep[..., None, None], C, 0.0), torch.where(keep[..., None], n, 0.0), \
                torch.where(keep, m, 0.0)
        m_new = torch.maximum(g[..., c] + m, m_local[..., c]) if exp_gate else torch.zeros_like(m)
        decay = torch.exp(g[..., c] + m - m_new)
        weight = torch.exp(m_local[..., c] - m_new)
        C = decay[..., None, None] * C + weight[..., None, None] * C_local[:, :, c]
        n = decay[..., None] * n + weight[..., None] * n_local[:, :, c]
        m = m_new
    final = mLSTMState(C, n, m)
    C_in, n_in, m_in = torch.stack(C_in, 2), torch.stack(n_in, 2), torch.stack(m_in, 2)

    # 2. outputs: the intra-chunk decay matrix plus the entering memory, under one stabilizer per row
    log_w_in = b + m_in[..., None]  # log weight of the entering memory at row j
    if document is not None:
        log_w_in = log_w_in.masked_fill(~inflow, float("-inf"))
    m_row = torch.maximum(log_w_in, D.max(-1).values) if exp_gate else torch.zeros_like(b)
    if exp_gate and fresh is not None:
        m_row = torch.maximum(m_row, fresh)
    scores = torch.where(visible, (q @ k.transpose(-1, -2)) * torch.exp(D - m_row[..., None]), 0.0)
    w_in = torch.exp(log_w_in - m_row)
    read_C, read_n = w_in[..., None] * (q @ C_in), w_in * (q @ n_in[..., None]).squeeze(-1)
    if document is not None:
        read_C, read_n = torch.where(inflow[..., None], read_C, 0.0), torch.where(inflow, read_n, 0.0)
    num = attend(scores, visible, v) + read_C
    den = scores.sum(-1) + read_n
    den = torch.maximum(den.abs(), torch.exp(-m_row)) + eps
    h = num / den[..., None]
    return h.reshape(B, H, S, -1), final
