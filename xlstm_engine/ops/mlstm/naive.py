"""Reference mLSTM implementations: the ground truth that every fast path is tested against.

Two views of the same math (README.md): a plain time loop over the stabilized recurrence, and the
quadratic parallel form. Both run in any float dtype (tests use float64) and are differentiated by autograd.

Layout: q, k [B, S, H, DK]; v [B, S, H, DV]; i, f [B, S, H] gate pre-activations; h [B, S, H, DV].
"""

import torch
import torch.nn.functional as F

from .common import attend, documents, log_decay, restart, segment_sum, visibility
from .state import mLSTMState


def _log_gates(i: torch.Tensor, f: torch.Tensor, input_gate: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Log input-gate and log forget-gate activations."""
    return (i if input_gate == "exp" else F.logsigmoid(i)), F.logsigmoid(f)


def _initial_state(q: torch.Tensor, v: torch.Tensor, initial_state: mLSTMState | None) -> mLSTMState:
    B, _, H, DK = q.shape
    if initial_state is None:
        return mLSTMState.zeros(B, H, DK, v.shape[-1], dtype=q.dtype, device=q.device)
    return initial_state.to(q.dtype)


def mlstm_recurrent_naive(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i: torch.Tensor, f: torch.Tensor,
    initial_state: mLSTMState | None = None, *, input_gate: str = "exp", eps: float = 1e-6,
    resets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, mLSTMState]:
    """The stabilized recurrence, one time step at a time. Returns (h, final state).

    resets [B, S] (bool, optional): the memory is emptied (C, n, m = 0) before these tokens.
    """
    C, n, m = _initial_state(q, v, initial_state)
    li, lf = _log_gates(i, f, input_gate)
    scale = q.shape[-1] ** -0.5
    hs = []
    for t in range(q.shape[1]):
        if resets is not None:
            keep = ~resets[:, t, None]  # [B, 1]; replaced, not multiplied by 0: 0 * NaN is NaN
            C, n, m = torch.where(keep[..., None, None], C, 0.0), torch.where(keep[..., None], n, 0.0), \
                torch.where(keep, m, 0.0)
        # the sigmoid input gate needs no stabilizer: every weight is <= 1, so m stays 0
        m_new = torch.maximum(lf[:, t] + m, li[:, t]) if input_gate == "exp" else torch.zeros_like(m)
        f_t = torch.exp(lf[:, t] + m - m_new)  # [B, H]
        i_t = torch.exp(li[:, t] - m_new)
        C = f_t[..., None, None] * C + i_t[..., None, None] * k[:, t, :, :, None] * v[:, t, :, None, :]
        n = f_t[..., None] * n + i_t[..., None] * k[:, t]
        q_t = q[:, t] * scale  # [B, H, DK]
        num = torch.einsum("bhk,bhkv->bhv", q_t, C)
        den = torch.maximum((q_t * n).sum(-1).abs(), torch.exp(-m_new)) + eps
        hs.append(num / den[..., None])
        m = m_new
    return torch.stack(hs, dim=1), mLSTMState(C, n, m)


def mlstm_parallel_naive(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i: torch.Tensor, f: torch.Tensor,
    initial_state: mLSTMState | None = None, *, input_gate: str = "exp", eps: float = 1e-6,
    resets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, mLSTMState]:
    """The quadratic form: an S x S decay matrix, like causal attention. Returns (h, final state)."""
    C0, n0, m0 = _initial_state(q, v, initial_state)
    li, lf = (x.transpose(1, 2) for x in _log_gates(i, f, input_gate))  # [B, H, S]
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))  # [B, H, S, D]
    q = q * q.shape[-1] ** -0.5

    # packed documents: nothing passes a reset (masks, never zero weights: 0 * NaN is NaN)
    resets = None if resets is None else resets[:, None, :].expand_as(lf)
    document = documents(resets)
    visible = visibility(lf.shape[-1], document, q.device)
    sums = segment_sum(lf)
    D = log_decay(sums, li, visible)  # [B, H, S, S]: log weight of token j in the memory at time t
    log_w0 = lf.cumsum(-1) + m0[..., None]  # log weight of the initial memory at time t
    if document is not None:
        log_w0 = log_w0.masked_fill(document > 0, float("-inf"))
    m = torch.maximum(log_w0, D.max(-1).values) if input_gate == "exp" else torch.zeros_like(log_w0)  # [B, H, S]
    if input_gate == "exp" and resets is not None:  # after a reset, the stabilizer restarts as from empty
        m = torch.maximum(m, restart(sums, lf, resets))

    W = torch.exp(D - m[..., None])
    w0 = torch.exp(log_w0 - m)
    scores = torch.where(visible, (q @ k.transpose(-1, -2)) * W, 0.0)
    read_C, read_n = w0[..., None] * (q @ C0), w0 * (q @ n0[..., None]).squeeze(-1)
    if document is not None:
        read_C, read_n = torch.where(document[..., None] == 0, read_C, 0.0), torch.where(document == 0, read_n, 0.0)
    num = attend(scores, visible, v) + read_C
    den = scores.sum(-1) + read_n
    den = torch.maximum(den.abs(), torch.exp(-m)) + eps
    h = (num / den[..., None]).transpose(1, 2)

    # the final memory is the last row of the same weights
    last = visible[..., -1, :, None]  # the tokens of the last document
    k_last = torch.where(last, k * W[..., -1, :, None], 0.0)
    C0_last, n0_last = w0[..., -1, None, None] * C0, w0[..., -1, None] * n0
    if document is not None:  # the initial memory reaches the end only without a reset
        C0_last = torch.where(document[..., -1, None, None] == 0, C0_last, 0.0)
        n0_last = torch.where(document[..., -1, None] == 0, n0_last, 0.0)
    C = C0_last + k_last.transpose(-1, -2) @ torch.where(last, v, 0.0)
    n = n0_last + k_last.sum(-2)
    return h, mLSTMState(C, n, m[..., -1])
