"""One mLSTM time step for decoding: reads the memory, returns the new one."""

import torch
import torch.nn.functional as F

from .state import mLSTMState


def mlstm_step(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i: torch.Tensor, f: torch.Tensor,
    state: mLSTMState, *, input_gate: str = "exp", eps: float = 1e-6,
) -> tuple[torch.Tensor, mLSTMState]:
    """q, k [B, H, DK]; v [B, H, DV]; i, f [B, H]. Returns h [B, H, DV] in q's dtype, and the new state.

    Computes in the wider of q's and the state's precision, at least float32.
    """
    out_dtype = q.dtype
    dtype = torch.promote_types(torch.promote_types(q.dtype, state.C.dtype), torch.float32)
    C, n, m = state.to(dtype)
    q, k, v, i, f = (x.to(dtype) for x in (q, k, v, i, f))
    lf = F.logsigmoid(f)
    li = i if input_gate == "exp" else F.logsigmoid(i)
    m_new = torch.maximum(lf + m, li) if input_gate == "exp" else torch.zeros_like(m)
    f_t = torch.exp(lf + m - m_new)[..., None]  # [B, H, 1]
    i_t = torch.exp(li - m_new)[..., None]
    C = f_t[..., None] * C + (i_t * k)[..., None] * v[..., None, :]
    n = f_t * n + i_t * k
    q = q * q.shape[-1] ** -0.5
    num = (q[..., None, :] @ C).squeeze(-2)  # [B, H, DV]
    den = torch.maximum((q * n).sum(-1).abs(), torch.exp(-m_new)) + eps
    return (num / den[..., None]).to(out_dtype), mLSTMState(C, n, m_new)
