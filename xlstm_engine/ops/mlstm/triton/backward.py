"""Triton kernels of the chunkwise mLSTM backward (README.md, "Backward").

The memory entering each chunk is recomputed by the forward's `_chunk_states`; then three launches:
1. `_chunk_states_backward`: one program per (DK tile, DV tile, sequence-head) walks the chunks in reverse and
   writes dC, dn of the memory that leaves each chunk (fp32), the gradient of the initial memory, and per-tile
   parts of the gradient of each chunk's log decay.
2. `_chunk_grads_qk`: one program per (DK tile, chunk, sequence-head): dq, dk, and per-tile parts of the
   gradients of the log gates (row and column sums of dD, the inflow weight's and the chunk-end weight's).
3. `_chunk_grads_v`: one program per (DV tile, chunk, sequence-head): dv.

Every stabilizer m is held constant here; the gradient that flows through the stabilizers (only the eps term
of the denominator and the final state's m depend on them) is added in PyTorch (gates.py, chunkwise.py).
The normalizer n rides along as one more value column: v' = [v, 1], C' = [C, n], dh' = [dh / den, ds].
"""

import triton
import triton.language as tl

from .forward import _dot


@triton.jit
def _chunk_states_backward(
    Q, DH, INV_DEN, DSUM, B_INFLOW, M_ROW, M_IN, M_NEXT, G, C_IN, N_IN, DC_FINAL, DN_FINAL,
    DC_OUT, DN_OUT, DC0, DN0, DG_PART,
    S, H, NC, stride_qb, stride_qs, stride_qh, stride_hb, stride_hs, stride_hh, scale,
    DK: tl.constexpr, DV: tl.constexpr, L: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_FINAL_GRAD: tl.constexpr, PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
):
    """INV_DEN, DSUM [BH, NC*L]: 1 / den and the gradient of the signed normalizer sum of each row (0 past S).
    M_NEXT [BH, NC]: the stabilizer of the memory leaving each chunk. Writes DC_OUT [BH, NC, DK, DV] and
    DN_OUT [BH, NC, DK] (gradient of the memory leaving chunk c), DC0, DN0, and DG_PART [nK * nV, BH, NC].
    DC_FINAL, DN_FINAL are None when no gradient reaches the final memory."""
    pid_k, pid_v, pid_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)  # 64-bit offsets
    b, h = pid_bh // H, pid_bh % H
    rk = pid_k * BK + tl.arange(0, BK)
    rv = pid_v * BV + tl.arange(0, BV)
    rl = tl.arange(0, L)
    mk, mv = rk < DK, rv < DV
    mkv = mk[:, None] & mv[None, :]
    state_kv = pid_bh * DK * DV + rk[:, None] * DV + rv[None, :]
    if HAS_FINAL_GRAD:
        dC = tl.load(DC_FINAL + state_kv, mask=mkv, other=0.0).to(tl.float32)
        dn = tl.load(DN_FINAL + pid_bh * DK + rk, mask=mk, other=0.0).to(tl.float32)
    else:
        dC = tl.zeros([BK, BV], dtype=tl.float32)
        dn = tl.zeros([BK], dtype=tl.float32)
    q_base = Q + b * stride_qb + h * stride_qh
    dh_base = DH + b * stride_hb + h * stride_hh
    part = (pid_k * tl.num_programs(1) + pid_v) * tl.num_programs(2) + pid_bh
    for c in range(NC - 1, -1, -1):
        chunk = pid_bh * NC + c
        tl.store(DC_OUT + chunk * DK * DV + rk[:, None] * DV + rv[None, :], dC.to(DC_OUT.dtype.element_ty), mask=mkv)
        m_in = tl.load(M_IN + chunk)
        decay = tl.exp(tl.load(G + chunk) + m_in - tl.load(M_NEXT + chunk))
        C = tl.load(C_IN + chunk * DK * DV + rk[:, None] * DV + rv[None, :], mask=mkv, other=0.0)
        dg = tl.sum(tl.sum(dC * C.to(tl.float32), axis=1), axis=0)
        if pid_v == 0:
            tl.store(DN_OUT + chunk * DK + rk, dn, mask=mk)
            dg += tl.sum(dn * tl.load(N_IN + chunk * DK + rk, mask=mk, other=0.0), axis=0)
        tl.store(DG_PART + part * NC + c, dg * decay)

        t = c * L + rl.to(tl.int64)  # 64-bit offsets
        mt = t < S
        gates = chunk * L + rl
        w_in = tl.exp(tl.load(B_INFLOW + gates) + m_in - tl.load(M_ROW + gates)) * scale  # [L]
        q = tl.load(q_base + t[:, None] * stride_qs + rk[None, :], mask=mt[:, None] & mk[None, :], other=0.0)
        q_in = q.to(tl.float32) * w_in[:, None]  # [L, BK]
        dh = tl.load(dh_base + t[:, None] * stride_hs + rv[None, :], mask=mt[:, None] & mv[None, :], other=0.0)
        d_num = dh.to(tl.float32) * tl.load(INV_DEN + gates)[:, None]  # [L, BV]
        dC = decay * dC + _dot(tl.trans(q_in.to(q.dtype)), d_num.to(q.dtype), PRECISION, DOT_F32)
        dn = decay * dn + tl.sum(q_in * tl.load(DSUM + gates)[:, None], axis=0)
    tl.store(DC0 + state_kv, dC, mask=mkv)
    if pid_v == 0:
        tl.store(DN0 + pid_bh * DK + rk, dn, mask=mk)


@triton.jit
def _decay_matrix(B_DECAY, LOG_I, SEGMENT, M_ROW, gates, rl, HAS_RESETS: tl.constexpr):
    """exp(D - m_row) [L, L] of one chunk: the stabilized weight of token l in the output of row j."""
    b_decay = tl.load(B_DECAY + gates)
    log_decay = b_decay[:, None] - b_decay[None, :] + tl.load(LOG_I + gates)[None, :]
    visible = rl[:, None] >= rl[None, :]
    if HAS_RESETS:
        segment = tl.load(SEGMENT + gates)
        visible = visible & (segment[:, None] == segment[None, :])
    return tl.exp(tl.where(visible, log_decay - tl.load(M_ROW + gates)[:, None], float("-inf")))


@triton.jit
def _chunk_grads_qk(
    Q, K, V, DH, INV_DEN, DSUM, B_DECAY, B_INFLOW, LOG_I, A, SEGMENT, M_ROW, M_IN, M_NEXT, N_IN, C_IN, DC_OUT,
    DN_OUT, DQ, DKEY, DB_PART, DLI_PART, DA_PART,
    S, H, NC, stride_qb, stride_qs, stride_qh, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh,
    stride_hb, stride_hs, stride_hh, scale,
    DK: tl.constexpr, DV: tl.constexpr, L: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_RESETS: tl.constexpr, PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
):
    """dq, dk of one DK tile of one chunk, and this tile's parts [nK, BH, NC*L] of the gate gradients:
    DB_PART: d(in-chunk cumsum of log f) at row j; DLI_PART: d(log i); DA_PART: d(chunk-end log weight a).
    SEGMENT is None without resets."""
    pid_k, c, pid_bh = tl.program_id(0), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    b, h = pid_bh // H, pid_bh % H
    rk = pid_k * BK + tl.arange(0, BK)
    rl = tl.arange(0, L)
    mk = rk < DK
    t = c * L + rl
    mt = t < S
    mtk = mt[:, None] & mk[None, :]
    chunk = pid_bh * NC + c
    gates = chunk * L + rl
    q = tl.load(Q + b * stride_qb + h * stride_qh + t[:, None] * stride_qs + rk[None, :], mask=mtk,
                other=0.0)
    k = tl.load(K + b * stride_kb + h * stride_kh + t[:, None] * stride_ks + rk[None, :], mask=mtk,
                other=0.0)
    v_base = V + b * stride_vb + h * stride_vh
    dh_base = DH + b * stride_hb + h * stride_hh
    inv_den = tl.load(INV_DEN + gates)

    d_weights = tl.zeros([L, L], dtype=tl.float32)  # dW_jl = dh'_j . v'_l
    d_q_in = tl.zeros([L, BK], dtype=tl.float32)  # dh'_j C'_in^T: the gradient of q_j's read of the memory
    d_k_out = tl.zeros([L, BK], dtype=tl.float32)  # v'_l dC'_out^T: the gradient of k_l's write into it
    for v0 in range(0, DV, BV):
        rv = v0 + tl.arange(0, BV)
        mv = rv < DV
        v = tl.load(v_base + t[:, None] * stride_vs + rv[None, :], mask=mt[:, None] & mv[None, :], other=0.0)
        dh = tl.load(dh_base + t[:, None] * stride_hs + rv[None, :], mask=mt[:, None] & mv[None, :], other=0.0)
        d_num = (dh.to(tl.float32) * inv_den[:, None]).to(v.dtype)
        d_weights += _dot(d_num, tl.trans(v), PRECISION, DOT_F32)
        state = chunk * DK * DV + rk[:, None] * DV + rv[None, :]
        C = tl.load(C_IN + state, mask=mk[:, None] & mv[None, :], other=0.0)
        dC = tl.load(DC_OUT + state, mask=mk[:, None] & mv[None, :], other=0.0)
        d_q_in += _dot(d_num, tl.trans(C.to(v.dtype)), PRECISION, DOT_F32)
        d_k_out += _dot(v, tl.trans(dC.to(v.dtype)), PRECISION, DOT_F32)
    d_sum = tl.load(DSUM + gates)
    d_weights += d_sum[:, None]
    d_q_in += d_sum[:, None] * tl.load(N_IN + chunk * DK + rk, mask=mk, other=0.0)[None, :]
    d_k_out += tl.load(DN_OUT + chunk * DK + rk, mask=mk, other=0.0)[None, :]

    m_row = tl.load(M_ROW + gates)
    decay = _decay_matrix(B_DECAY, LOG_I, SEGMENT, M_ROW, gates, rl, HAS_RESETS)
    d_scores = d_weights * decay * scale  # d(q_j . k_l)
    w_in = tl.where(mt, tl.exp(tl.load(B_INFLOW + gates) + tl.load(M_IN + chunk) - m_row) * scale, 0.0)
    w_out = tl.exp(tl.load(A + gates) - tl.load(M_NEXT + chunk))  # weight of k_l in the memory leaving the chunk
    d_q_in *= w_in[:, None]
    d_k_out *= w_out[:, None]
    dq = _dot(d_scores.to(k.dtype), k, PRECISION, DOT_F32) + d_q_in
    dk = _dot(tl.trans(d_scores).to(q.dtype), q, PRECISION, DOT_F32) + d_k_out
    tl.store(DQ + b * stride_qb + h * stride_qh + t[:, None] * stride_qs + rk[None, :],
             dq.to(DQ.dtype.element_ty), mask=mtk)
    tl.store(DKEY + b * stride_kb + h * stride_kh + t[:, None] * stride_ks + rk[None, :],
             dk.to(DKEY.dtype.element_ty), mask=mtk)

    # the log-gate gradients from dD = dW * W (this tile's part of q . k). D_jl = b_j - b_l + log i_l, so b gets
    # row minus column sums; the diagonal (log i_j alone) is left out of both, where it would only cancel
    d_log_decay = d_scores * _dot(q, tl.trans(k), PRECISION, DOT_F32)
    diagonal = rl[:, None] == rl[None, :]
    d_diagonal = tl.sum(tl.where(diagonal, d_log_decay, 0.0), axis=1)
    d_log_decay = tl.where(diagonal, 0.0, d_log_decay)
    col = tl.sum(d_log_decay, axis=0)
    d_inflow = tl.sum(q.to(tl.float32) * d_q_in, axis=1)  # d(log w_in_j)
    d_a = tl.sum(k.to(tl.float32) * d_k_out, axis=1)
    part = (pid_k * tl.num_programs(2) + pid_bh) * NC * L + c * L + rl
    tl.store(DB_PART + part, tl.sum(d_log_decay, axis=1) - col + d_inflow)
    tl.store(DLI_PART + part, col + d_diagonal + d_a)
    tl.store(DA_PART + part, d_a)


@triton.jit
def _chunk_grads_v(
    Q, K, DH, INV_DEN, B_DECAY, LOG_I, SEGMENT, M_ROW, A, M_NEXT, DC_OUT, DV_OUT,
    S, H, NC, stride_qb, stride_qs, stride_qh, stride_kb, stride_ks, stride_kh, stride_hb, stride_hs, stride_hh,
    stride_vb, stride_vs, stride_vh, scale,
    DK: tl.constexpr, DV: tl.constexpr, L: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_RESETS: tl.constexpr, PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
):
    """dv of one DV tile of one chunk: dv_l = sum_j W_jl dh_j / den_j + w_out_l dC_out^T k_l. SEGMENT is None
    without resets."""
    pid_v, c, pid_bh = tl.program_id(0), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    b, h = pid_bh // H, pid_bh % H
    rv = pid_v * BV + tl.arange(0, BV)
    rl = tl.arange(0, L)
    mv = rv < DV
    t = c * L + rl
    mt = t < S
    chunk = pid_bh * NC + c
    gates = chunk * L + rl
    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + h * stride_kh
    scores = tl.zeros([L, L], dtype=tl.float32)
    k_dC = tl.zeros([L, BV], dtype=tl.float32)
    for k0 in range(0, DK, BK):
        rk = k0 + tl.arange(0, BK)
        mk = rk < DK
        q = tl.load(q_base + t[:, None] * stride_qs + rk[None, :], mask=mt[:, None] & mk[None, :], other=0.0)
        k = tl.load(k_base + t[:, None] * stride_ks + rk[None, :], mask=mt[:, None] & mk[None, :], other=0.0)
        scores += _dot(q, tl.trans(k), PRECISION, DOT_F32)
        dC = tl.load(DC_OUT + chunk * DK * DV + rk[:, None] * DV + rv[None, :], mask=mk[:, None] & mv[None, :],
                     other=0.0)
        k_dC += _dot(k, dC.to(k.dtype), PRECISION, DOT_F32)
    weights = scores * scale * _decay_matrix(B_DECAY, LOG_I, SEGMENT, M_ROW, gates, rl, HAS_RESETS)
    dh = tl.load(DH + b * stride_hb + h * stride_hh + t[:, None] * stride_hs + rv[None, :],
                 mask=mt[:, None] & mv[None, :], other=0.0)
    d_num = (dh.to(tl.float32) * tl.load(INV_DEN + gates)[:, None]).to(dh.dtype)
    w_out = tl.exp(tl.load(A + gates) - tl.load(M_NEXT + chunk))
    dv = _dot(tl.trans(weights).to(dh.dtype), d_num, PRECISION, DOT_F32) + w_out[:, None] * k_dC
    tl.store(DV_OUT + b * stride_vb + h * stride_vh + t[:, None] * stride_vs + rv[None, :],
             dv.to(DV_OUT.dtype.element_ty), mask=mt[:, None] & mv[None, :])


@triton.jit
def _output_dot(H, DH, OUT, N, DV: tl.constexpr, ROWS: tl.constexpr, BV: tl.constexpr):
    """OUT[r] = sum_v H[r, v] * DH[r, v] in fp32 over N rows of length DV (contiguous): one read of h and dh."""
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    mr = rows < N
    total = tl.zeros([ROWS], dtype=tl.float32)
    for v0 in range(0, DV, BV):
        rv = v0 + tl.arange(0, BV)
        mask = mr[:, None] & (rv < DV)[None, :]
        offsets = rows[:, None] * DV + rv[None, :]
        h = tl.load(H + offsets, mask=mask, other=0.0).to(tl.float32)
        total += tl.sum(h * tl.load(DH + offsets, mask=mask, other=0.0).to(tl.float32), axis=1)
    tl.store(OUT + rows, total, mask=mr)
