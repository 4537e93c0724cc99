"""The fast sLSTM in plain PyTorch: a time loop with a hand-written backward (exact BPTT).

At the sizes of an sLSTM layer a time step is a few thousand numbers, so the cost is the number of ops issued
per step (and the tensor views they need), not the flops. Both loops therefore work on a few fixed buffers whose
views are made once, with in-place and `out=` ops only:

* forward, per step: one in-place `baddbmm` for all heads (x_t + h_{t-1} R, kept for the backward), a copy into
  the workspace, 12 pointwise ops for the sLSTM (7 for the LSTM), and a copy of the new state into the history;
* backward, per step: the gradient of one step is *linear* in the gradient of its output state, with
  coefficients that depend only on forward values. They are computed for a chunk of steps at once, vectorized
  over time; a step is then 7 small ops for the sLSTM (4 for the LSTM), one `baddbmm` for
  dh_{t-1} = draw_t Rᵀ + (output gradient) and two copies. dR is one batched matmul per chunk; dx is the draw.

Layout inside: time-major and head-major, `[S, H, B, 4, D]`, gates in the external order (i, f, z, o). The pairs a
step needs are then adjacent or strided slots: (i, lf) for the stabilizer, (i, i·tanh z) at stride 2 for the
(n, c) update, (z, o) for the output gradients. The history `[S + 1, H, B, 4, D]` holds (h, n, c, m) after every
step (row 0 is the initial state). Memory: the pre-activations and the history are kept for the backward, 8
numbers per step and channel; the backward adds dx and chunk-sized buffers.

Resets (packed documents): before a step where some sequence is reset, its carried state is set in place (after
it was saved: the history keeps the outputs) to (h, n, c, m) = (0, 0, 0, -inf) for the sLSTM, zeros for the LSTM:
one multiply by a 0/1 mask, and for the sLSTM one add of 0/-inf to m. m = -inf makes the plain step compute the
first step of a fresh sequence exactly: lf = -inf, so m = max(i, lf) = i (the first-step rule), i = 1 and f = 0
(no clamp needed). The backward takes the same states before the steps (one op per chunk) and cuts the gradient
of the state before a reset: the coefficients there cut (dm, dn, dc) (see _RESET_FILL), and dh_{t-1} is cut by
one multiply of the (stored) draw by the mask. Steps without a reset, and calls without resets, run as before.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .state import sLSTMState

# steps whose backward coefficients are computed at once: about this many numbers per coefficient and chunk
_CHUNK_ELEMENTS = 1 << 16


def slstm_recurrent(
    x: torch.Tensor, R: torch.Tensor, initial_state: sLSTMState | None = None, *, function: str = "slstm",
    resets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, sLSTMState]:
    """x [B, S, 4, H, D] (i, f, z, o); R [H, D, 4, D]; resets [B, S] bool or None (see slstm).

    Returns (h [B, S, H, D] in x's dtype, final state).
    """
    B, _, _, H, D = x.shape
    dtype = torch.promote_types(x.dtype, torch.float32)
    if initial_state is None:
        initial_state = sLSTMState.zeros(B, H, D, dtype=dtype, device=x.device)
    reset_steps = None
    if resets is not None:
        reset_steps = resets.any(0).tolist()  # one bool per step: does any sequence reset there
        if not any(reset_steps):
            resets, reset_steps = None, None
    h, *state = _sLSTMFunction.apply(x.to(dtype), R.to(dtype), *initial_state.to(dtype), function == "lstm",
                                     resets, reset_steps)
    return h.to(x.dtype), sLSTMState(*state)


class _Resets(NamedTuple):
    """The resets as the loops use them, for a state [H, B, 4, D] before step t."""

    steps: list[bool]  # [S]: does any sequence reset before step t
    mask: torch.Tensor  # [S, 1, B, 1, 1] bool
    keep: torch.Tensor  # [S, 1, B, 1, 1] 1 - mask in the compute dtype
    fill: torch.Tensor | None  # [1, 1, 4, 1]: the reset state (h, n, c, m), see _RESET_FILL (forward only)

    @classmethod
    def make(cls, resets: torch.Tensor, steps: list[bool], x: torch.Tensor, lstm: bool) -> "_Resets":
        S, B = len(steps), resets.shape[0]
        mask = resets.t().reshape(S, 1, B, 1, 1)
        return cls(steps, mask, (~mask).to(x.dtype), _reset_fill(x, lstm).view(1, 1, 4, 1))


class _sLSTMFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, R, h0, c0, n0, m0, lstm: bool, resets, reset_steps):
        B, S, _, H, D = x.shape
        Rk = R.reshape(H, D, 4 * D)
        # [S, H, B, 4, D]: x_t, then the pre-activations x_t + h_{t-1} R. Always a copy (the loop writes into it;
        # `.contiguous()` would return x itself where the permutation is trivial, as for B = H = 1)
        X = x.new_empty(S, H, B, 4, D).copy_(x.permute(1, 3, 0, 2, 4))
        St = x.new_empty(S + 1, H, B, 4, D)  # history of (h, n, c, m); row 0 is the initial state
        St[0] = torch.stack((h0, n0, c0, m0), dim=2).transpose(0, 1)
        # The history holds the states after each step, before any reset (the outputs); only row 0, the initial
        # state, is stored after its reset.
        rs = None if resets is None else _Resets.make(resets, reset_steps, x, lstm)
        if rs is not None and reset_steps[0]:
            torch.where(rs.mask[0], rs.fill, St[0], out=St[0])
        (_lstm_forward if lstm else _slstm_forward)(X, Rk, St, rs)
        ctx.save_for_backward(X, Rk, St, *((None, None) if rs is None else (rs.mask, rs.keep)))
        ctx.lstm, ctx.reset_steps = lstm, reset_steps
        h, n, c, m = St[S].transpose(0, 1).unbind(2)  # [B, H, D]
        return St[1:, :, :, 0].permute(2, 0, 1, 3).contiguous(), h.contiguous(), c.contiguous(), n.contiguous(), \
            m.contiguous()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dh_seq, dhS, dcS, dnS, dmS):
        X, Rk, St, mask, keep = ctx.saved_tensors
        S, H, B, _, D = X.shape
        lstm, reset_steps = ctx.lstm, ctx.reset_steps
        rs = None if reset_steps is None else _Resets(reset_steps, mask, keep, None)
        gout = dh_seq.permute(1, 2, 0, 3)  # [S, H, B, D], a view
        # gradient of the state after the current step: (dm, dn, dc, dh) for the sLSTM, (dc, dh) for the LSTM
        TOT = X.new_empty(2 if lstm else 4, H, B, D)
        TOT[-1] = gout[S - 1] + dhS.transpose(0, 1)
        TOT[-2] = dcS.transpose(0, 1)
        if not lstm:
            TOT[0], TOT[1] = dmS.transpose(0, 1), dnS.transpose(0, 1)
        coefficients, step = (_lstm_coefficients, _lstm_backward) if lstm else (_slstm_coefficients, _slstm_backward)
        T = min(S, max(16, _CHUNK_ELEMENTS // (H * B * D)))
        rule_always = bool((St[0, :, :, 1] < 0).any())  # see _slstm_forward
        fill = None if rs is None else _reset_fill(X, lstm).view(4, 1, 1, 1, 1)
        DR = X.new_empty(H, T, B, 4, D)  # gradient of the pre-activations of one chunk of steps, head-major
        dx = X.new_empty(B, S, 4, H, D)
        dR = torch.zeros_like(Rk)
        RT = Rk.transpose(1, 2)
        for t1 in range(S, 0, -T):
            t0 = max(0, t1 - T)
            # the pre-activations of steps t0..t1-1 and the states around them, gate-major
            G = X[t0:t1].permute(3, 0, 1, 2, 4).contiguous()  # [(i, f, z, o), T, H, B, D]
            P = St[t0:t1 + 1].permute(3, 0, 1, 2, 4).contiguous()  # [(h, n, c, m), T + 1, H, B, D]
            before, after = P[:, :-1], P[:, 1:]  # the states before and after each step
            dr = DR[:, :t1 - t0]
            reset = reset_steps is not None and any(reset_steps[t0:t1])
            if reset:  # the states as the steps saw them, after their resets
                chunk_mask = mask[t0:t1].view(1, t1 - t0, 1, B, 1)
                before = torch.where(chunk_mask, fill, before)
            rule = slice(None) if rule_always else slice(0, 1) if t0 == 0 else None
            C = coefficients(G, before, after, rule)  # [T, K, H, B, D]
            if reset:  # the last coefficient, f, carries (dn, dc) back through the step: cut at the resets
                C[:, -1].masked_fill_(chunk_mask[0], 0.0)
            step(C, gout, dr, TOT, RT, t0, t1, rs)
            h_prev = before[0].transpose(0, 1).reshape(H, -1, D)  # [H, T B, D]
            dR.baddbmm_(h_prev.transpose(1, 2), dr.reshape(H, -1, 4 * D))
            dx[:, t0:t1] = dr.permute(2, 1, 3, 0, 4)
        if lstm:
            dc0, dh0 = (t.transpose(0, 1) for t in TOT)
            dn0, dm0 = dnS, dmS  # carried unchanged, unless a reset zeroed them
            if rs is not None:
                reset_rows = mask.any(0).view(B, 1, 1)
                dn0, dm0 = dn0.masked_fill(reset_rows, 0.0), dm0.masked_fill(reset_rows, 0.0)
        else:
            dm0, dn0, dc0, dh0 = (t.transpose(0, 1) for t in TOT)
        return dx, dR.view(H, D, 4, D), dh0, dc0, dn0, dm0, None, None, None


def _neg_log_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(x) = softplus(-x). F.logsigmoid is slower, and far slower with two threads on small tensors.

    Above its threshold softplus(x) returns x, off by log1p(e^-x); 40 instead of the default 20 keeps that below
    float64 rounding.
    """
    return F.softplus(-x, threshold=40.0)


def _forward_buffers(X: torch.Tensor, St: torch.Tensor):
    """The step workspace W [H, B, 4, D] and two state buffers used in turn, each with its slot views."""
    W = X.new_empty(X.shape[1:])
    bufs = [St[0].clone(), St[0].clone()]
    views = [(s, *s.unbind(2), s[:, :, 1:3], s[:, :, 3:4]) for s in bufs]  # all, h, n, c, m, (n, c), m
    H, B = W.shape[:2]
    return W, views, X.view(X.shape[0], H, B, -1).unbind(0), St.unbind(0)


def _slstm_forward(X: torch.Tensor, Rk: torch.Tensor, St: torch.Tensor, rs: _Resets | None) -> None:
    n0 = St[0, :, :, 1]
    # The first-step rule (m = i where n = 0) can only bind where n = 0. From n >= 0 every step leaves n > 0
    # (n = f n + i with i = 1 or f = 1), so the rule is needed at step 0 only, unless some n starts negative.
    # (After a reset, m = -inf applies it without a check; see _RESET_FILL.)
    rule_at_start = bool((n0 == 0).any())
    rule_always = bool((n0 < 0).any())
    W, views, xs, history = _forward_buffers(X, St)
    wi, wf, wz, wo = W.unbind(2)
    w_if, w_i_iz, wf1 = W[:, :, 0:2], W[:, :, 0::2], W[:, :, 1:2]
    for t in range(len(xs)):
        _, h_p, n_p, _, m_p, nc_p, _ = views[t % 2]
        new, h, n, c, m, nc, m1 = views[(t + 1) % 2]
        W.copy_(xs[t].baddbmm_(h_p, Rk).view(W.shape))  # raw = x_t + h_{t-1} R, kept in X for the backward
        torch.sub(m_p, _neg_log_sigmoid(wf), out=wf)  # lf = m + log sigmoid(f)
        torch.maximum(wi, wf, out=m)
        rule = rule_always or (rule_at_start and t == 0)
        if rule:
            torch.where(n_p == 0, wi, m, out=m)
        w_if.sub_(m1).exp_()  # (i, f) = exp((i, lf) - m)
        if rule:
            w_if.clamp_(max=1.0)  # only the first-step rule can leave f > 1
        wz.tanh_().mul_(wi)
        torch.addcmul(w_i_iz, wf1, nc_p, out=nc)  # (n, c) = f (n, c) + (i, i tanh z)
        torch.div(c, n, out=h).mul_(wo.sigmoid_())
        _save_and_reset(new, history, t + 1, rs)


def _lstm_forward(X: torch.Tensor, Rk: torch.Tensor, St: torch.Tensor, rs: _Resets | None) -> None:
    W, views, xs, history = _forward_buffers(X, St)  # n and m are carried unchanged in the buffers
    wi, wf, wz, wo = W.unbind(2)
    w_if = W[:, :, 0:2]
    for t in range(len(xs)):
        _, h_p, _, c_p, _, _, _ = views[t % 2]
        new, h, _, c, _, _, _ = views[(t + 1) % 2]
        W.copy_(xs[t].baddbmm_(h_p, Rk).view(W.shape))
        w_if.sigmoid_()
        wo.sigmoid_()
        wz.tanh_().mul_(wi)
        torch.addcmul(wz, wf, c_p, out=c)
        torch.tanh(c, out=h).mul_(wo)
        _save_and_reset(new, history, t + 1, rs)


# What a reset writes into the state (h, n, c, m) (selected, not multiplied by 0, so that a NaN or inf in one
# document's state reaches no later document). For the sLSTM m = -inf instead of 0: the step after it then
# computes exactly what the definition (m = 0, then the first-step rule) gives, with no extra op: lf = -inf, so
# m = max(i, lf) = i, i = 1, f = exp(lf - m) = 0. In the backward's coefficients (d = i - lf = +inf) the same
# values give i = 1, w = 1 and f = 0, hence Pn = Pc = 0 and dm_{t-1} = dm - (dm w + dn Pn + dc Pc) = 0: no
# gradient reaches m before the reset, and f = 0 stops (dn, dc). The -inf never leaves the op: the history keeps
# the states before resets, and the step overwrites m. The LSTM carries m unchanged, so it resets it to 0.
_RESET_FILL = {False: (0.0, 0.0, 0.0, -float("inf")), True: (0.0, 0.0, 0.0, 0.0)}


def _reset_fill(like: torch.Tensor, lstm: bool) -> torch.Tensor:
    return like.new_tensor(_RESET_FILL[lstm])


def _save_and_reset(new: torch.Tensor, history, t: int, rs: _Resets | None) -> None:
    """Store the state `new` [H, B, 4, D] after step t - 1 in the history, then reset the sequences reset before
    step t (if t < S): (h, n, c) = 0, m = -inf (sLSTM) or 0 (LSTM)."""
    history[t].copy_(new)
    if rs is not None and t < len(rs.steps) and rs.steps[t]:
        torch.where(rs.mask[t], rs.fill, new, out=new)


# The backward of one step maps the gradient of its output state linearly to the gradient of its pre-activations
# (draw, stored in DR) and of its input state (updated in place in TOT). The coefficients of that map are computed
# for the steps t0..t1-1 at once, as C [T, K, H, B, D]; each step copies its row into a fixed buffer, so that the
# views its ops need are made once.
#
# At a step t with a reset, the draw is that of a step from the reset state (the chunk's states before the steps
# are taken after their resets), and the gradient of the state before it is cut: (dm, dn, dc) by the coefficients
# (see _RESET_FILL), dh_{t-1} by zeroing the draw of those sequences after it is stored, so that
# dh_{t-1} = draw Rᵀ + gout is the output gradient alone.


def _backward_buffers(C: torch.Tensor, DR: torch.Tensor, gout: torch.Tensor):
    H, _, B, _, D = DR.shape
    draw = DR.new_empty(H, B, 4, D)
    return C.new_empty(C.shape[1:]), draw, draw.view(H, B, 4 * D), C.unbind(0), gout.unbind(0), DR.unbind(1)


def _slstm_coefficients(G: torch.Tensor, before: torch.Tensor, after: torch.Tensor, rule: slice | None):
    """G: pre-activations (i, f, z, o) [4, T, H, B, D]; before, after: the states (h, n, c, m) [4, T, H, B, D]
    before each step (after its reset) and after it.

    `rule`: the steps where the first-step rule may bind (see _slstm_forward), or None.
    """
    i_raw, f_raw, z_raw, o_raw = G
    n_p, c_p, m_p = before[1], before[2], before[3]
    h, n = after[0], after[1]
    d = i_raw - torch.sub(m_p, _neg_log_sigmoid(f_raw))  # i_raw - lf, lf as the forward computes it; m = max(i_raw, lf)
    i = torch.exp(d.clamp(max=0.0))  # exp(i_raw - m)
    f = torch.exp(d.clamp(min=0.0).neg_())  # exp(lf - m)
    w = torch.sign(d).add_(1.0).mul_(0.5)  # the share of dm that torch.maximum routes to i_raw: 1, 0, 1/2 at ties
    df = f  # d f / d(lf - m)
    if rule is not None and bool((first := n_p[rule] == 0).any()):
        # the first-step rule: m = i_raw, so i = 1, and f = min(exp(-d), 1) passes no gradient at d < 0
        i[rule] = torch.where(first, 1.0, i[rule])
        w[rule] = torch.where(first, 1.0, w[rule])
        df = f.clone()
        df[rule] = torch.where(first & (d[rule] < 0), 0.0, f[rule])
    zt = torch.tanh(z_raw)
    o = torch.sigmoid(o_raw)
    iw, wdf = (1 - w) * i, w * df
    Pn = iw - wdf * n_p  # d i_raw / d n_t, through i and through m
    Pc = iw * zt - wdf * c_p  # d i_raw / d c_t
    # (dh/dn, dh/dc), (dc/dz_raw, dh/do_raw), (di_raw/dm, di_raw/dn, di_raw/dc), d log sigmoid(f_raw), f
    return torch.stack([-h / n, o / n, i * (1 - zt * zt), h * (1 - o), w, Pn, Pc, torch.sigmoid(-f_raw), f], 1)


def _slstm_backward(C, gout, DR, TOT, RT, t0, t1, rs: _Resets | None) -> None:
    Cs, draw, draw_flat, rows, gouts, DRs = _backward_buffers(C, DR, gout)
    ba, q_ho, wPnPc, sf, f = Cs[0:2], Cs[2:4], Cs[4:7], Cs[7], Cs[8]
    dm, dnc, dmnc, dch, dh = TOT[0], TOT[1:3], TOT[0:3], TOT[2:4], TOT[3]
    di, df, draw_zo = draw[:, :, 0], draw[:, :, 1], draw[:, :, 2:4].permute(2, 0, 1, 3)
    prod = TOT.new_empty(3, *dh.shape)
    for t in range(t1 - 1, t0 - 1, -1):
        Cs.copy_(rows[t - t0])
        dnc.addcmul_(ba, dh)  # (dn, dc) += (dh/dn, dh/dc) dh
        torch.mul(dch, q_ho, out=draw_zo)  # (dz, do)
        torch.sum(torch.mul(dmnc, wPnPc, out=prod), 0, out=di)
        dm.sub_(di)  # dm_{t-1} = d lf
        torch.mul(dm, sf, out=df)
        dnc.mul_(f)
        DRs[t - t0].copy_(draw)
        if rs is not None and rs.steps[t]:
            draw.mul_(rs.keep[t])  # no dh_{t-1} through the reset
        if t > 0:
            torch.baddbmm(gouts[t - 1], draw_flat, RT, out=dh)
        else:
            torch.bmm(draw_flat, RT, out=dh)


def _lstm_coefficients(G: torch.Tensor, before: torch.Tensor, after: torch.Tensor, rule: slice | None):
    z_raw, o_raw = G[2], G[3]
    c_p, c = before[2], after[2]
    (i, f), o = torch.sigmoid(G[0:2]), torch.sigmoid(o_raw)
    zt = torch.tanh(z_raw)
    tc = torch.tanh(c)
    # dh/dc, (dc/di_raw, dc/df_raw), (dc/dz_raw, dh/do_raw), f
    return torch.stack([o * (1 - tc * tc), zt * i * (1 - i), c_p * f * (1 - f), i * (1 - zt * zt),
                        tc * o * (1 - o), f], 1)


def _lstm_backward(C, gout, DR, TOT, RT, t0, t1, rs: _Resets | None) -> None:
    Cs, draw, draw_flat, rows, gouts, DRs = _backward_buffers(C, DR, gout)
    a, ri_rf, q_ho, f = Cs[0], Cs[1:3], Cs[3:5], Cs[5]
    dc, dh = TOT[0], TOT[1]
    draw_if, draw_zo = draw[:, :, 0:2].permute(2, 0, 1, 3), draw[:, :, 2:4].permute(2, 0, 1, 3)
    for t in range(t1 - 1, t0 - 1, -1):
        Cs.copy_(rows[t - t0])
        dc.addcmul_(a, dh)
        torch.mul(dc, ri_rf, out=draw_if)  # (di, df)
        torch.mul(TOT, q_ho, out=draw_zo)  # (dz, do)
        dc.mul_(f)
        DRs[t - t0].copy_(draw)
        if rs is not None and rs.steps[t]:
            draw.mul_(rs.keep[t])  # no dh_{t-1} through the reset
        if t > 0:
            torch.baddbmm(gouts[t - 1], draw_flat, RT, out=dh)
        else:
            torch.bmm(draw_flat, RT, out=dh)
