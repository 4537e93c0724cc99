"""The gate side of the Triton mLSTM, on [B, H, S] tensors (small next to q, k, v).

forward: log gates and their in-chunk cumulative sums, padded to whole chunks, as the kernels read them (one
small kernel; packed documents in PyTorch);
backward: the kernels' per-tile gate-gradient parts turned into d(log i), d(log f), plus the gradient that flows
through the stabilizers m, which the kernels hold constant.
"""

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ..common import cut_at_resets


@triton.jit
def log_sigmoid(x):
    """log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)), with log1p to float32 accuracy for any e = exp(-|x|):
    log(u) e / (u - 1) with u = 1 + e rounded (Goldberg's correction), and e itself where u rounds to 1."""
    e = tl.exp(-tl.abs(x))
    u = 1.0 + e
    rounds_to_one = u == 1.0
    return tl.minimum(x, 0.0) - tl.where(rounds_to_one, e, tl.log(u) * (e / tl.where(rounds_to_one, 1.0, u - 1.0)))


@triton.jit
def _chunk_gates(
    IG, FG, B_CUM, LOG_I, A, G, M_CHUNK, S, H, NC, stride_ib, stride_is, stride_ih, stride_fb, stride_fs, stride_fh,
    L: tl.constexpr, STABILIZE: tl.constexpr,
):
    """One chunk of one sequence-head: gate pre-activations [B, S, H] in; B_CUM (in-chunk cumsum of log f), LOG_I,
    A (log weight in the chunk-end memory) [BH, NC*L] and G (log decay over the chunk), M_CHUNK (max of A) [BH, NC]
    out. Padding past S: no input, no decay."""
    c, pid_bh = tl.program_id(0), tl.program_id(1)
    rl = tl.arange(0, L)
    t = c * L + rl
    mt = t < S
    b, h = (pid_bh // H).to(tl.int64), pid_bh % H
    f_base = FG + b * stride_fb + h * stride_fh
    log_f = tl.where(mt, log_sigmoid(tl.load(f_base + t * stride_fs, mask=mt, other=0.0).to(tl.float32)), 0.0)
    log_i = tl.load(IG + b * stride_ib + h * stride_ih + t * stride_is, mask=mt, other=0.0).to(tl.float32)
    if not STABILIZE:
        log_i = log_sigmoid(log_i)
    log_i = tl.where(mt, log_i, float("-inf"))
    # a_l = sum_{r>l} log f_r + log i_l: a reverse cumsum of the next token's log f (g - b_l would cancel)
    following = (t + 1 < S) & (rl + 1 < L)
    log_f_next = tl.load(f_base + (t + 1) * stride_fs, mask=following, other=0.0).to(tl.float32)
    a = tl.cumsum(tl.where(following, log_sigmoid(log_f_next), 0.0), axis=0, reverse=True) + log_i
    b_cum = tl.cumsum(log_f, axis=0)
    out = pid_bh.to(tl.int64) * NC * L + c * L + rl
    tl.store(B_CUM + out, b_cum)
    tl.store(LOG_I + out, log_i)
    tl.store(A + out, a)
    tl.store(G + pid_bh * NC + c, tl.sum(tl.where(rl == L - 1, b_cum, 0.0), axis=0))  # exactly the last b
    tl.store(M_CHUNK + pid_bh * NC + c, tl.max(a, axis=0))


def prepare_gates(i, f, input_gate: str, resets, L: int, NC: int) -> dict[str, torch.Tensor]:
    """The gate quantities of the kernels, float32, padded to NC * L tokens (padding: no input, no decay).

    [BH, NC * L]: b_decay, b_inflow, log_i, a, segment (int32: document index), restart; [BH, NC]: g, m_chunk.
    Without resets (one kernel), b_inflow is b_decay, and segment and restart are unread.
    """
    B, S, H = i.shape
    if resets is None:
        out = {name: torch.empty(B * H, NC * L, device=i.device, dtype=torch.float32) for name in ("b", "log_i", "a")}
        g, m_chunk = torch.empty(2, B * H, NC, device=i.device, dtype=torch.float32)
        _chunk_gates[(NC, B * H)](i, f, out["b"], out["log_i"], out["a"], g, m_chunk, S, H, NC, *i.stride(),
                                  *f.stride(), L=L, STABILIZE=input_gate == "exp")
        b = out.pop("b")
        return dict(out, b_decay=b, b_inflow=b, g=g, m_chunk=m_chunk, segment=out["log_i"], restart=out["log_i"])
    # packed documents, in PyTorch: the log decay is cut at each reset, and the stabilizer restarts there
    pad = NC * L - S
    log_i = (i.float() if input_gate == "exp" else F.logsigmoid(i.float())).transpose(1, 2)  # [B, H, S]
    log_f = F.logsigmoid(f.float()).transpose(1, 2)
    log_i = F.pad(log_i, (0, pad), value=float("-inf")).reshape(B * H, NC, L)
    log_f = F.pad(log_f, (0, pad), value=0.0).reshape(B * H, NC, L)
    r = torch.zeros(B, NC * L, dtype=torch.bool, device=resets.device)
    r[:, :S] = resets
    r = r[:, None, :].expand(B, H, NC * L).reshape(B * H, NC, L)
    cut, restart = cut_at_resets(log_f, r)
    b_inflow = cut.cumsum(-1)
    a = torch.cat([cut.flip(-1).cumsum(-1).flip(-1)[..., 1:], torch.zeros_like(cut[..., :1])], -1) + log_i
    m_chunk = torch.maximum(a.max(-1).values, restart[..., -1])
    out = dict(b_decay=log_f.cumsum(-1), b_inflow=b_inflow, log_i=log_i, a=a, g=b_inflow[..., -1], m_chunk=m_chunk,
               restart=restart)
    out = {name: x.reshape(B * H, -1).contiguous() for name, x in out.items()}
    return dict(out, segment=r.reshape(B * H, NC * L).cumsum(-1).to(torch.int32))


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
