"""The gate side of the Triton mLSTM, on [B, H, S] tensors (small next to q, k, v).

forward: log gates and their in-chunk cumulative sums, padded to whole chunks, as the kernels read them (one
small kernel, packed documents included);
backward: the kernels' per-tile gate-gradient parts turned into d(log i), d(log f), plus the gradient that flows
through the stabilizers m, which the kernels hold constant.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
import triton
import triton.language as tl


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
    IG, FG, RESETS, B_DECAY, B_INFLOW, LOG_I, A, SEGMENT, RESTART, G, M_CHUNK, S, H, NC,
    stride_ib, stride_is, stride_ih, stride_fb, stride_fs, stride_fh, stride_rb, stride_rs,
    L: tl.constexpr, STABILIZE: tl.constexpr, HAS_RESETS: tl.constexpr,
):
    """One chunk of one sequence-head: gate pre-activations [B, S, H] (and resets [B, S]) in; out [BH, NC*L]:
    B_DECAY (in-chunk cumsum of log f, restarted at each reset), LOG_I, A (log weight in the chunk-end memory), and
    with resets B_INFLOW (B_DECAY up to the first reset, then -inf: the log weight of the entering memory), SEGMENT
    (document index in the chunk), RESTART (log weight of the empty memory a reset put in place, -inf before one);
    out [BH, NC]: G (log decay over the chunk, -inf with a reset), M_CHUNK (max of A and the last RESTART).
    Padding past S: no input, no decay. Across a reset, values are selected, never summed, so that a NaN or inf in
    one document's gates reaches no other document. Without resets, RESETS, SEGMENT and RESTART are None (unread)."""
    c, pid_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    rl = tl.arange(0, L)
    t = c * L + rl
    mt = t < S
    b, h = pid_bh // H, pid_bh % H
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
    out = pid_bh * NC * L + c * L + rl
    last = rl == L - 1
    if HAS_RESETS:
        segment = tl.cumsum(tl.load(RESETS + b * stride_rb + t * stride_rs, mask=mt, other=0).to(tl.int32), axis=0)
        same = (rl[:, None] >= rl[None, :]) & (segment[:, None] == segment[None, :])
        b_decay = tl.sum(tl.where(same, log_f[None, :], 0.0), axis=1)  # a cumsum within each document
        inflow = segment == 0
        restart = tl.where(inflow, float("-inf"), b_decay)
        carries = tl.max(segment, axis=0) == 0
        a = tl.where(segment == tl.max(segment, axis=0), a, float("-inf"))
        g = tl.where(carries, tl.sum(tl.where(last, b_decay, 0.0), axis=0), float("-inf"))
        m_chunk = tl.maximum(tl.max(a, axis=0), tl.max(tl.where(last, restart, float("-inf")), axis=0))
        tl.store(B_INFLOW + out, tl.where(inflow, b_decay, float("-inf")))
        tl.store(SEGMENT + out, segment)
        tl.store(RESTART + out, restart)
    else:
        b_decay = tl.cumsum(log_f, axis=0)
        g = tl.sum(tl.where(last, b_decay, 0.0), axis=0)  # exactly the last b
        m_chunk = tl.max(a, axis=0)
    tl.store(B_DECAY + out, b_decay)
    tl.store(LOG_I + out, log_i)
    tl.store(A + out, a)
    tl.store(G + pid_bh * NC + c, g)
    tl.store(M_CHUNK + pid_bh * NC + c, m_chunk)


class ChunkGates(NamedTuple):
    """The gate quantities that the chunkwise kernels read: float32, padded to NC * L tokens (padding: no input, no
    decay). Token fields are [BH, NC * L], chunk fields [BH, NC].

    Without resets, `b_inflow` IS `b_decay` (the same tensor: the entering memory reaches every row of the chunk),
    and `segment` and `restart` are None: the kernels read them only under HAS_RESETS, so None is what they get.
    """

    b_decay: torch.Tensor  # in-chunk cumsum of log f, restarted at each reset
    b_inflow: torch.Tensor  # log weight of the entering memory: b_decay up to the chunk's first reset, then -inf
    log_i: torch.Tensor  # log input gate (log sigmoid of i for the sigmoid gate), -inf on padding
    a: torch.Tensor  # log weight of each token in the chunk-end memory (-inf before the chunk's last reset)
    segment: torch.Tensor | None  # int32 document index in the chunk (number of resets so far); None without resets
    restart: torch.Tensor | None  # log weight of the empty memory that a reset put in place (-inf before one)
    g: torch.Tensor  # [BH, NC] log decay over the chunk (-inf with a reset)
    m_chunk: torch.Tensor  # [BH, NC] max of a, joined with the chunk's last restart


def prepare_gates(i: torch.Tensor, f: torch.Tensor, input_gate: str, resets: torch.Tensor | None, L: int,
                  NC: int) -> ChunkGates:
    """The gate quantities of the kernels (ChunkGates) from gate pre-activations i, f [B, S, H] and resets [B, S]
    (bool) or None, for NC chunks of L tokens."""
    B, S, H = i.shape
    tokens = dict(device=i.device, dtype=torch.float32)
    b_decay, log_i, a = (torch.empty(B * H, NC * L, **tokens) for _ in range(3))
    g, m_chunk = torch.empty(2, B * H, NC, **tokens)
    if resets is None:
        b_inflow, segment, restart = b_decay, None, None
        resets_int8, stride_rb, stride_rs = None, 0, 0
    else:
        b_inflow, restart = torch.empty(B * H, NC * L, **tokens), torch.empty(B * H, NC * L, **tokens)
        segment = torch.empty(B * H, NC * L, device=i.device, dtype=torch.int32)
        resets_int8 = resets.view(torch.int8)
        stride_rb, stride_rs = resets_int8.stride()
    _chunk_gates[(NC, B * H)](
        IG=i, FG=f, RESETS=resets_int8, B_DECAY=b_decay, B_INFLOW=b_inflow, LOG_I=log_i, A=a, SEGMENT=segment,
        RESTART=restart, G=g, M_CHUNK=m_chunk, S=S, H=H, NC=NC,
        stride_ib=i.stride(0), stride_is=i.stride(1), stride_ih=i.stride(2),
        stride_fb=f.stride(0), stride_fs=f.stride(1), stride_fh=f.stride(2),
        stride_rb=stride_rb, stride_rs=stride_rs,
        L=L, STABILIZE=input_gate == "exp", HAS_RESETS=resets is not None,
    )
    return ChunkGates(b_decay=b_decay, b_inflow=b_inflow, log_i=log_i, a=a, segment=segment, restart=restart, g=g,
                      m_chunk=m_chunk)


def log_gate_grads(db: torch.Tensor, da: torch.Tensor, dli: torch.Tensor, dg: torch.Tensor,
                   L: int) -> tuple[torch.Tensor, torch.Tensor]:
    """d(log i), d(log f) [BH, NC*L] with the stabilizers held constant, from the kernels' per-tile parts:
    db [nK, BH, NC*L] (of the in-chunk cumsum b_j), da (of the chunk-end weight a_l = sum_{r>l} log f_r + log i_l),
    dli (of log i directly), dg [nK*nV, BH, NC] (of the chunk's total log decay)."""
    db, da, dli = (x.sum(0) for x in (db, da, dli))
    BH, NL = db.shape
    db, da = db.view(BH, -1, L), da.view(BH, -1, L)
    dlf = db.flip(-1).cumsum(-1).flip(-1) + F.pad(da[..., :-1].cumsum(-1), (1, 0)) + dg.sum(0)[..., None]
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
