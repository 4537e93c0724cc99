"""Reference sLSTM: the ground truth that the fast path is tested against.

A plain time loop over the formulas of README.md, differentiated by autograd, in any float dtype (tests use
float64). Layout: x [B, S, 4, H, D] gate pre-activations (i, f, z, o); R [H, D, 4, D]; h [B, S, H, D].
"""

import torch
import torch.nn.functional as F

from .state import sLSTMState


def slstm_naive(
    x: torch.Tensor, R: torch.Tensor, initial_state: sLSTMState | None = None, *, function: str = "slstm",
    resets: torch.Tensor | None = None, mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, sLSTMState]:
    """One time step at a time. Returns (h in x's dtype, final state in the compute dtype).

    `resets` [B, S] bool: where True, the state (h, c, n, m) of that sequence is set to zero just before the step.
    `mask` [B, S] bool: where False (a pad), the step keeps the state (h, c, n, m) it got, and its output is that h.
    """
    B, S, _, H, D = x.shape
    dtype = torch.promote_types(x.dtype, torch.float32)
    if initial_state is None:
        initial_state = sLSTMState.zeros(B, H, D, dtype=dtype, device=x.device)
    h, c, n, m = initial_state.to(dtype)  # each [B, H, D]
    x_compute, R = x.to(dtype), R.to(dtype)
    outputs = []
    for t in range(S):
        held = (h, c, n, m)
        if resets is not None:  # a fresh, empty memory; torch.where passes no gradient to the state it replaces
            reset = resets[:, t, None, None]  # [B, 1, 1]
            h, c, n, m = (torch.where(reset, 0.0, v) for v in (h, c, n, m))
        raw = x_compute[:, t] + torch.einsum("bhk,hkgj->bghj", h, R)  # x_t + h_{t-1} R: [B, 4, H, D]
        i_raw, f_raw, z_raw, o_raw = raw.unbind(1)
        if function == "slstm":
            lf = m + F.logsigmoid(f_raw)
            # the first-step rule: an empty memory (n = 0) takes the input gate as its stabilizer
            m = torch.where(n == 0, i_raw, torch.maximum(i_raw, lf))
            i = torch.exp(i_raw - m).clamp(max=1.0)
            f = torch.exp(lf - m).clamp(max=1.0)
            c = f * c + i * torch.tanh(z_raw)
            n = f * n + i
            h = torch.sigmoid(o_raw) * c / n
        else:  # classic LSTM; n and m are carried unchanged
            c = torch.sigmoid(f_raw) * c + torch.sigmoid(i_raw) * torch.tanh(z_raw)
            h = torch.sigmoid(o_raw) * torch.tanh(c)
        if mask is not None:  # a pad: the state it got, selected (no gradient reaches the step's inputs)
            real = mask[:, t, None, None]  # [B, 1, 1]
            h, c, n, m = (torch.where(real, new, old) for new, old in zip((h, c, n, m), held, strict=True))
        outputs.append(h)
    return torch.stack(outputs, dim=1).to(x.dtype), sLSTMState(h, c, n, m)
