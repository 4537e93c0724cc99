"""The gate side of the Triton mLSTM, in PyTorch on [B, H, S] tensors (small next to q, k, v).

forward: log gates and their in-chunk cumulative sums, padded to whole chunks, as the kernels read them;
backward: the kernels' per-tile gate-gradient parts turned into d(log i), d(log f), plus the gradient that flows
through the stabilizers m, which the kernels hold constant.
"""

import torch
import torch.nn.functional as F

from ..common import cut_at_resets


def prepare_gates(i, f, input_gate: str, resets, L: int, NC: int) -> dict[str, torch.Tensor]:
    """The gate quantities of the kernels, float32, padded to NC * L tokens (padding: no input, no decay).

    [BH, NC * L]: b_decay, b_inflow, log_i, a, segment (int32), restart; [BH, NC]: g, m_chunk.
    """
    B, S, H = i.shape
    pad = NC * L - S
    log_i = (i.float() if input_gate == "exp" else F.logsigmoid(i.float())).transpose(1, 2)  # [B, H, S]
    log_f = F.logsigmoid(f.float()).transpose(1, 2)
    log_i = F.pad(log_i, (0, pad), value=float("-inf")).reshape(B * H, NC, L)
    log_f = F.pad(log_f, (0, pad), value=0.0).reshape(B * H, NC, L)
    out = {}
    if resets is None:
        cut, restart, segment = log_f, None, None
    else:
        r = torch.zeros(B, NC * L, dtype=torch.bool, device=resets.device)
        r[:, :S] = resets
        r = r[:, None, :].expand(B, H, NC * L).reshape(B * H, NC, L)
        cut, restart = cut_at_resets(log_f, r)
        segment = r.reshape(B * H, NC * L).cumsum(-1).to(torch.int32)
    b_inflow = cut.cumsum(-1)
    a = torch.cat([cut.flip(-1).cumsum(-1).flip(-1)[..., 1:], torch.zeros_like(cut[..., :1])], -1) + log_i
    m_chunk = a.max(-1).values
    if restart is not None:
        m_chunk = torch.maximum(m_chunk, restart[..., -1])
    out.update(b_decay=log_f.cumsum(-1), b_inflow=b_inflow, log_i=log_i, a=a, g=b_inflow[..., -1], m_chunk=m_chunk)
    out = {name: x.reshape(B * H, -1).contiguous() for name, x in out.items()}
    out["segment"] = segment if segment is not None else out["log_i"]  # unread without resets
    out["restart"] = restart.reshape(B * H, -1).contiguous() if restart is not None else out["log_i"]
    return out


def log_gate_grads(parts: dict[str, torch.Tensor], L: int) -> tuple[torch.Tensor, torch.Tensor]:
    """d(log i), d(log f) [BH, NC*L] with the stabilizers held constant, from the kernels' parts:
    db [nK, BH, NC*L] (of the in-chunk cumsum b_j), da (of the chunk-end weight a_l = sum_{r>l} log f_r + log i_l),
    dli (of log i directly), dg [nK*nV, BH, NC] (of the chunk's total log decay)."""
    db, da, dli = (parts[name].sum(0) for name in ("db", "da", "dli"))
    BH, NL = db.shape
    db, da = db.view(BH, -1, L), da.view(BH, -1, L)
    dlf = db.flip(-1).cumsum(-1).flip(-1) + F.pad(da[..., :-1].cumsum(-1), (1, 0)) + parts["dg"].sum(0)[..., None]
    return dli, dlf.view(BH, NL)


def stabilizer_grads(d_m: torch.Tensor, m: torch.Tensor, log_i: torch.Tensor, resets: torch.Tensor | None):
    """The gradient that flows through the stabilizers (exponential input gate).

    m_t = max(log f_t + m_{t-1}, log i_t), with m_{t-1} = 0 before a reset: each m_t equals a sum of log gates along
    one path back to its source (an input gate, a reset, or the initial m0). d_m, m, log_i [B, H, S] (d_m: the
    loss's derivative by m_t at fixed inputs); resets [B, S] or None. Returns d(log i), d(log f) [B, H, S] and
    d(m0) [B, H].
    """
    S = m.shape[-1]
    source = m == log_i  # the input gate wins at t: m_t = log i_t
    stop = source if resets is None else source | resets[:, None, :]
    # Delta_t = sum of d_m over t..(next stop after t) - 1: a segmented reverse cumsum, in float64
    tail = F.pad(d_m.double().flip(-1).cumsum(-1).flip(-1), (0, 1))  # [B, H, S + 1], tail[S] = 0
    position = torch.arange(S, device=m.device).expand_as(m)
    next_stop = torch.where(stop, position, S).flip(-1).cummin(-1).values.flip(-1)
    next_stop = F.pad(next_stop[..., 1:], (0, 1), value=S)  # the first stop after t
    delta = (tail[..., :S] - tail.gather(-1, next_stop)).to(d_m.dtype)
    zero = torch.zeros_like(delta)
    return torch.where(source, delta, zero), torch.where(source, zero, delta), torch.where(stop[..., 0], 0.0,
                                                                                           delta[..., 0])
