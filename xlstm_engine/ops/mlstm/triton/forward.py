"""Triton kernels of the chunkwise mLSTM forward (README.md, "Chunkwise form").

Two launches:
1. `_chunk_states`: one program per (DK tile, DV tile, sequence-head) walks the chunks in order and writes the
   memory (C, n, m) that enters each chunk, and the final memory. fp32 throughout.
2. `_chunk_outputs`: one program per (chunk, sequence-head) computes the chunk's outputs from the L x L
   intra-chunk decay matrix and the entering memory, under one stabilizer per row (the recurrent m_t).

Gate preprocessing (log gates, in-chunk cumsums, padding of the gates to whole chunks) happens before, on
[B, H, S] tensors, which are small next to q, k, v (gates.py); q, k, v are read in place ([B, S, H, D], any S,
masked).
"""

import triton
import triton.language as tl


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, DOT_F32: tl.constexpr):
    """a @ b with fp32 accumulation. DOT_F32: upcast the operands first (Triton's interpreter gets bf16 dots
    wrong; the operands keep their bf16 rounding)."""
    if DOT_F32:
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        out = tl.dot(a, b, input_precision=PRECISION)
    return out


@triton.jit
def _chunk_states(
    K, V, A, G, M_CHUNK, C0, N0, M0, C_IN, N_IN, M_IN, C_OUT, N_OUT, M_OUT,
    S, H, NC, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh,
    DK: tl.constexpr, DV: tl.constexpr, L: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_INITIAL: tl.constexpr, HAS_RESETS: tl.constexpr, STABILIZE: tl.constexpr, PRECISION: tl.constexpr,
    DOT_F32: tl.constexpr,
):
    """A, G, M_CHUNK: per-token log weight in the chunk-end memory [BH, NC*L] (-inf for tokens that do not reach
    it), per-chunk log decay (-inf with a reset) and max of A (joined with the restart of a reset) [BH, NC].
    C_IN [BH, NC, DK, DV], N_IN [BH, NC, DK], M_IN [BH, NC]. C0, N0, M0 are None without an initial state."""
    pid_k, pid_v, pid_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    b, h = pid_bh // H, pid_bh % H
    rk = pid_k * BK + tl.arange(0, BK)
    rv = pid_v * BV + tl.arange(0, BV)
    rl = tl.arange(0, L)
    mk, mv = rk < DK, rv < DV
    mkv = mk[:, None] & mv[None, :]
    state_kv = pid_bh * DK * DV + rk[:, None] * DV + rv[None, :]
    if HAS_INITIAL:
        C = tl.load(C0 + state_kv, mask=mkv, other=0.0).to(tl.float32)
        n = tl.load(N0 + pid_bh * DK + rk, mask=mk, other=0.0).to(tl.float32)
        m = tl.load(M0 + pid_bh).to(tl.float32)
    else:
        C = tl.zeros([BK, BV], dtype=tl.float32)
        n = tl.zeros([BK], dtype=tl.float32)
        m = tl.sum(tl.zeros([1], dtype=tl.float32), axis=0)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    for c in range(NC):
        chunk_kv = (pid_bh * NC + c) * DK * DV + rk[:, None] * DV + rv[None, :]
        tl.store(C_IN + chunk_kv, C.to(C_IN.dtype.element_ty), mask=mkv)
        if pid_v == 0:
            tl.store(N_IN + (pid_bh * NC + c) * DK + rk, n, mask=mk)
            if pid_k == 0:
                tl.store(M_IN + pid_bh * NC + c, m)
        t = c * L + rl.to(tl.int64)  # 64-bit: t * stride passes 2^31 on long sequences of wide projections
        mt = t < S
        a = tl.load(A + pid_bh * NC * L + t)
        g = tl.load(G + pid_bh * NC + c)
        if HAS_RESETS:  # a reset in the chunk (g = -inf): the old memory is gone, whatever it held (0 * NaN is NaN)
            gone = g == float("-inf")
            C, n, m = tl.where(gone, 0.0, C), tl.where(gone, 0.0, n), tl.where(gone, 0.0, m)
        if STABILIZE:  # noqa: SIM108 (a compile-time branch)
            m_new = tl.maximum(g + m, tl.load(M_CHUNK + pid_bh * NC + c))
        else:
            m_new = m * 0.0  # the sigmoid gate keeps m at 0 (an initial m still scales the initial memory)
        decay = tl.exp(g + m - m_new)
        weight = tl.exp(a - m_new)  # [L]
        k = tl.load(k_base + t[:, None] * stride_ks + rk[None, :], mask=mt[:, None] & mk[None, :], other=0.0)
        v = tl.load(v_base + t[:, None] * stride_vs + rv[None, :], mask=mt[:, None] & mv[None, :], other=0.0)
        k_weighted = k.to(tl.float32) * weight[:, None]  # [L, BK]
        if HAS_RESETS:  # tokens before the chunk's last reset: left out, not weighted by 0
            reaches = (a != float("-inf"))[:, None]
            k_weighted, v = tl.where(reaches, k_weighted, 0.0), tl.where(reaches, v, 0.0)
        C = decay * C + _dot(tl.trans(k_weighted.to(v.dtype)), v, PRECISION, DOT_F32)
        n = decay * n + tl.sum(k_weighted, axis=0)
        m = m_new
    tl.store(C_OUT + state_kv, C, mask=mkv)
    if pid_v == 0:
        tl.store(N_OUT + pid_bh * DK + rk, n, mask=mk)
        if pid_k == 0:
            tl.store(M_OUT + pid_bh, m)


@triton.jit
def _chunk_outputs(
    Q, K, V, B_DECAY, B_INFLOW, LOG_I, SEGMENT, RESTART, C_IN, N_IN, M_IN, NONFINITE, H_OUT, M_ROW, SUM_ROW,
    S, H, NC, stride_qb, stride_qs, stride_qh, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh,
    stride_hb, stride_hs, stride_hh, scale, eps,
    DK: tl.constexpr, DV: tl.constexpr, L: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_RESETS: tl.constexpr, STABILIZE: tl.constexpr, PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
):
    """One chunk: the L x L weights once, then h tile by tile over DV (the weights are shared by all DV tiles).
    B_DECAY [BH, NC*L]: in-chunk cumsum of the log forget gates (for the decay between two tokens of one
    document); B_INFLOW: the same with -inf from a reset on (the log weight of the entering memory); LOG_I: log
    input gates (-inf on padding); SEGMENT: document index of each token; RESTART: log weight of the empty memory
    a reset put in place (-inf without one); SEGMENT and RESTART are None without resets (and B_INFLOW is
    B_DECAY); NONFINITE [BH, NC]: whether the chunk's v holds a NaN or inf. Writes
    h, and for the backward the row stabilizer and the signed normalizer sum q . n of every row (padding rows
    included).

    Entries that the math leaves out are selected away, never multiplied by a zero weight, so that a NaN or inf
    reaches no earlier row and no other document. A chunk whose v holds one takes a slower branch (`_attend`)."""
    c, pid_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)  # 64-bit offsets (t * stride)
    b, h = pid_bh // H, pid_bh % H
    rows = tl.arange(0, L)  # position in the chunk
    t = c * L + rows
    mt = t < S
    q_base = Q + b * stride_qb + h * stride_qh + t[:, None] * stride_qs
    k_base = K + b * stride_kb + h * stride_kh + t[:, None] * stride_ks
    v_base = V + b * stride_vb + h * stride_vh + t[:, None] * stride_vs
    chunk = pid_bh * NC + c

    scores = tl.zeros([L, L], dtype=tl.float32)
    for k0 in range(0, DK, BK):
        rk = k0 + tl.arange(0, BK)
        mk = mt[:, None] & (rk < DK)[None, :]
        q = tl.load(q_base + rk[None, :], mask=mk, other=0.0)
        k = tl.load(k_base + rk[None, :], mask=mk, other=0.0)
        scores += _dot(q, tl.trans(k), PRECISION, DOT_F32)
    # q . n_in in a loop of its own: with q also in elementwise math inside a pipelined dot loop, Triton 3.6
    # (num_stages >= 2, bf16 C_in) computed wrong outputs on an H200
    q_n = tl.zeros([L], dtype=tl.float32)
    for k0 in range(0, DK, BK):
        rk = k0 + tl.arange(0, BK)
        q = tl.load(q_base + rk[None, :], mask=mt[:, None] & (rk < DK)[None, :], other=0.0)
        q_n += tl.sum(q.to(tl.float32) * tl.load(N_IN + chunk * DK + rk, mask=rk < DK, other=0.0)[None, :], axis=1)

    first = pid_bh * NC * L + c * L  # the chunk's first gate
    b_decay = tl.load(B_DECAY + first + rows)
    if HAS_RESETS:  # noqa: SIM108 (a compile-time branch)
        segment = tl.load(SEGMENT + first + rows)
    else:
        segment = rows
    log_w_in = tl.load(B_INFLOW + first + rows) + tl.load(M_IN + chunk)
    inflow = segment == 0  # rows that read the entering memory: all but those after a reset (HAS_RESETS)
    if HAS_RESETS:
        log_w_in = tl.where(inflow, log_w_in, float("-inf"))
    log_decay = _log_decay(B_DECAY, LOG_I, SEGMENT, first, rows, rows, b_decay, segment, HAS_RESETS)
    if STABILIZE:  # the recurrent m of each row: the largest log weight it sees
        m_row = tl.maximum(log_w_in, tl.max(log_decay, axis=1))
        if HAS_RESETS:
            m_row = tl.maximum(m_row, tl.load(RESTART + first + rows))
    else:
        m_row = tl.zeros([L], dtype=tl.float32)
    weights = tl.where(log_decay != float("-inf"), scores * scale * tl.exp(log_decay - m_row[:, None]), 0.0)
    w_in = tl.exp(log_w_in - m_row) * scale
    read_n = w_in * q_n
    if HAS_RESETS:
        read_n = tl.where(inflow, read_n, 0.0)
    sum_row = tl.sum(weights, axis=1) + read_n
    den = tl.maximum(tl.abs(sum_row), tl.exp(-m_row)) + eps
    weights = weights.to(V.dtype.element_ty)
    h_base = H_OUT + b * stride_hb + h * stride_hh + t[:, None] * stride_hs
    C_chunk = C_IN + chunk * DK * DV
    if tl.load(NONFINITE + chunk) != 0:  # rare, and a branch of its own, so the usual loop stays as it was
        visible = rows[:, None] >= rows[None, :]
        if HAS_RESETS:
            visible = visible & (segment[:, None] == segment[None, :])
        _output_tiles(q_base, v_base, h_base, C_chunk, weights, w_in, inflow, den, mt, visible,
                      DK=DK, DV=DV, BK=BK, BV=BV, HAS_RESETS=HAS_RESETS, SAFE=True, PRECISION=PRECISION,
                      DOT_F32=DOT_F32)
    else:
        _output_tiles(q_base, v_base, h_base, C_chunk, weights, w_in, inflow, den, mt, weights,
                      DK=DK, DV=DV, BK=BK, BV=BV, HAS_RESETS=HAS_RESETS, SAFE=False, PRECISION=PRECISION,
                      DOT_F32=DOT_F32)
    tl.store(M_ROW + first + rows, m_row)
    tl.store(SUM_ROW + first + rows, sum_row)


@triton.jit
def _output_tiles(
    q_base, v_base, h_base, C_in, weights, w_in, inflow, den, mt, visible,
    DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, HAS_RESETS: tl.constexpr,
    SAFE: tl.constexpr, PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
):
    """h of one chunk, DV tile by tile: (weights v + w_in q C_in) / den. SAFE: v may hold a NaN or inf (`_attend`;
    `visible` is unread otherwise)."""
    for v0 in range(0, DV, BV):
        rv = v0 + tl.arange(0, BV)
        mv = rv < DV
        q_C = tl.zeros([weights.shape[0], BV], dtype=tl.float32)
        for k0 in range(0, DK, BK):
            rk = k0 + tl.arange(0, BK)
            mk = rk < DK
            q = tl.load(q_base + rk[None, :], mask=mt[:, None] & mk[None, :], other=0.0)
            C = tl.load(C_in + rk[:, None] * DV + rv[None, :], mask=mk[:, None] & mv[None, :], other=0.0)
            q_C += _dot(q, C.to(q.dtype), PRECISION, DOT_F32)
        v = tl.load(v_base + rv[None, :], mask=mt[:, None] & mv[None, :], other=0.0)
        read_C = w_in[:, None] * q_C
        if HAS_RESETS:
            read_C = tl.where(inflow[:, None], read_C, 0.0)
        if SAFE:
            num = _attend(weights, visible, v, PRECISION, DOT_F32) + read_C
        else:
            num = _dot(weights, v, PRECISION, DOT_F32) + read_C
        tl.store(h_base + rv[None, :], (num / den[:, None]).to(h_base.dtype.element_ty), mask=mt[:, None] & mv[None, :])


@triton.jit
def _attend(weights, visible, v, PRECISION: tl.constexpr, DOT_F32: tl.constexpr):
    """weights [L, L] @ v [L, BV], weights zero outside `visible`, for a v that may hold a NaN or inf: v_l reaches
    only the rows that see l (in a plain dot, 0 * NaN spreads it to every row). The non-finite values are zeroed
    for the dot and put back as NaN where `visible` says they arrive."""
    bad = ~(tl.abs(v.to(tl.float32)) < float("inf"))
    out = _dot(weights, tl.where(bad, 0.0, v).to(v.dtype), PRECISION, DOT_F32)
    one, zero = tl.full([1, 1], 1.0, v.dtype), tl.zeros([1, 1], v.dtype)
    reached = _dot(tl.where(visible, one, zero), tl.where(bad, one, zero), PRECISION, DOT_F32) > 0
    return tl.where(reached, float("nan"), out)


@triton.jit
def _nonfinite_chunks(
    V, FLAGS, S, H, NC, stride_vb, stride_vs, stride_vh, DV: tl.constexpr, L: tl.constexpr, BV: tl.constexpr,
):
    """FLAGS [BH, NC] int32: 1 where the chunk's v [B, S, H, DV] holds a NaN or inf, else 0 (one read of v)."""
    c, pid_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    t = c * L + tl.arange(0, L)
    v_base = V + (pid_bh // H) * stride_vb + (pid_bh % H) * stride_vh + t[:, None] * stride_vs
    bad = tl.zeros([L], dtype=tl.int32)
    for v0 in range(0, DV, BV):
        rv = v0 + tl.arange(0, BV)
        v = tl.load(v_base + rv[None, :], mask=(t < S)[:, None] & (rv < DV)[None, :], other=0.0)
        bad = tl.maximum(bad, tl.max((~(tl.abs(v.to(tl.float32)) < float("inf"))).to(tl.int32), axis=1))
    tl.store(FLAGS + pid_bh * NC + c, tl.max(bad, axis=0))


@triton.jit
def _log_decay(B_DECAY, LOG_I, SEGMENT, first, rows, cols, b_rows, segment_rows, HAS_RESETS: tl.constexpr):
    """D [rows, cols] = b_j - b_l + log i_l where token l reaches row j (l <= j, one document), else -inf."""
    log_decay = b_rows[:, None] - tl.load(B_DECAY + first + cols)[None, :] + tl.load(LOG_I + first + cols)[None, :]
    visible = rows[:, None] >= cols[None, :]
    if HAS_RESETS:
        visible = visible & (segment_rows[:, None] == tl.load(SEGMENT + first + cols)[None, :])
    return tl.where(visible, log_decay, float("-inf"))
