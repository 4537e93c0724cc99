"""Reference mLSTM implementations: the ground truth that every fast path is tested against.

Two views of the same math (README.md): a plain time loop over the stabilized recurrence, and the
quadratic parallel form. Both run in any float dtype (tests use float64) and are differentiated by autograd.

Layout: q, k [B, S, H, DK]; v [B, S, H, DV]; i, f [B, S, H] gate pre-activations; h [B, S, H, DV].
"""

import torch
import torch.nn.functional as F

from .common import cut_at_resets, segment_sum
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
            keep = (~resets[:, t]).to(q.dtype)[:, None]  # [B, 1]
            C, n, m = C * keep[..., None, None], n * keep[..., None], m * keep
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

    restart = None
    if resets is not None:  # nothing passes a reset; after it the stabilizer restarts as from an empty memory
        lf, restart = cut_at_resets(lf, resets[:, None, :].expand_as(lf))
    F_cum = lf.cumsum(-1)  # log decay from the start to t, inclusive
    # log weight of token j in the memory at time t: sum_{j<r<=t} lf_r + li_j
    D = segment_sum(lf) + li[..., None, :]  # [B, H, S, S]
    log_w0 = F_cum + m0[..., None]  # log weight of the initial memory at time t
    m = torch.maximum(log_w0, D.max(-1).values) if input_gate == "exp" else torch.zeros_like(log_w0)  # [B, H, S]
    if input_gate == "exp" and restart is not None:
        m = torch.maximum(m, restart)

    W = torch.exp(D - m[..., None])
    w0 = torch.exp(log_w0 - m)
    scores = (q @ k.transpose(-1, -2)) * W
    num = scores @ v + w0[..., None] * (q @ C0)
    den = scores.sum(-1) + w0 * (q @ n0[..., None]).squeeze(-1)
    den = torch.maximum(den.abs(), torch.exp(-m)) + eps
    h = (num / den[..., None]).transpose(1, 2)

    # the final memory is the last row of the same weights
    w_last, w0_last = W[..., -1, :], w0[..., -1]
    C = w0_last[..., None, None] * C0 + (k * w_last[..., None]).transpose(-1, -2) @ v
    n = w0_last[..., None] * n0 + (k * w_last[..., None]).sum(-2)
    return h, mLSTMState(C, n, m[..., -1])
