"""The fast sLSTM in plain PyTorch: a time loop with a hand-written backward (exact BPTT).

At the sizes of an sLSTM layer a time step is a few thousand numbers, so the cost is the number of ops issued
per step (and the tensor views they need), not the flops. Both loops therefore work on a few fixed buffers whose
views are made once, with in-place and `out=` ops only:

* forward, per step: one in-place `baddbmm` for all heads (x_t + h_{t-1} R, kept for the backward), a copy into
  the workspace, 12 pointwise ops for the sLSTM (7 for the LSTM), and a copy of the new state into the history;
* backward, per step: the gradient of one step is *linear* in the gradient of its output state, with
  coefficients that depend only on forward values. They are computed for a chunk of steps at once, vectorized
  over time; a step is then 7 small ops for the sLSTM (4 for the LSTM), one `baddbmm` for
  dh_{t-1} = d_raw_t Rᵀ + (output gradient) and two copies. dR is one batched matmul per chunk; dx is d_raw.
  The derivation is in README.md ("The backward").

Layout inside: time-major and head-major, `[S, H, B, slot, D]`. The pre-activations `raw` keep the op's gate order
(i, f, z, o); the states keep sLSTMState's order (h, c, n, m), in the history `[S + 1, H, B, 4, D]` of the states
after every step (row 0 is the initial state). The step workspace has one slot more, in front:
(i·tanh z, i, f, z, o), so that each pair a step needs is a view: (i, lf) for the stabilizer, and
(i·tanh z, i) for the update of (c, n). The backward's gradient of the state is (dm, dn, dc, dh), the state's order
reversed, for the same reason. Memory: the pre-activations and the history are kept for the backward, 8 numbers
per step and channel; the backward adds dx and chunk-sized buffers.

Resets (packed documents): before a step where some sequence is reset, its carried state is set in place (after
it was saved: the history keeps the outputs) to (h, c, n, m) = (0, 0, 0, -inf) for the sLSTM, zeros for the LSTM,
by one select. m = -inf makes the plain step compute the first step of a fresh sequence exactly (see
_RESET_FILL). The backward takes the same states before the steps (one op per chunk) and cuts the gradient of the
state before a reset: the coefficients there cut (dm, dn, dc), and dh_{t-1} is cut by one multiply of the (stored)
d_raw by the mask (README.md, "Resets"). Steps without a reset, and calls without resets, run as before.

Holds (padding, `mask` False): after a step computes the new state, the sequences that hold there get their previous
state back (one select with out=, like a reset), so the history stores the held state and the output is the held h.
The backward overwrites the coefficients of a held step (f = 1, all others 0: d_raw = 0, (dm, dn, dc) pass unchanged)
and adds the held dh to dh_{t-1} = d_raw Rᵀ + (output gradient) (one op); README.md, "Padding". With holds and some
initial n = 0, the first-step rule (m = i where n = 0) is checked at every step up to the first real step of the
sequence with the most leading pads (a sequence that starts padded from an empty state takes its first real step
later), not at step 0 only. Steps without a pad, and calls without a mask, run as before.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .state import sLSTMState

# steps whose backward coefficients are computed at once: about this many numbers per coefficient and chunk
_CHUNK_ELEMENTS = 1 << 16


def slstm_recurrent(
    x: torch.Tensor, R: torch.Tensor, initial_state: sLSTMState | None = None, *, function: str = "slstm",
    resets: torch.Tensor | None = None, mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, sLSTMState]:
    """x [B, S, 4, H, D] (i, f, z, o); R [H, D, 4, D]; resets, mask [B, S] bool or None (see slstm).

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
    hold_flags, hold_steps, lead = None, None, 0
    if mask is not None:
        hold_flags = ~mask
        # one read: per step, does any sequence hold (is padded) there; and the most leading pads of a sequence
        flags = torch.cat([hold_flags.any(0), hold_flags.long().cumprod(1).sum(1).amax(0, keepdim=True)]).tolist()
        hold_steps, lead = [bool(flag) for flag in flags[:-1]], flags[-1]
        if not any(hold_steps):
            hold_flags, hold_steps = None, None
    h, *state = _sLSTMFunction.apply(x.to(dtype), R.to(dtype), *initial_state.to(dtype), function == "lstm",
                                     resets, reset_steps, hold_flags, hold_steps, lead)
    return h.to(x.dtype), sLSTMState(*state)


class _Resets(NamedTuple):
    """The resets as the loops use them, for a state [H, B, 4, D] before step t."""

    steps: list[bool]  # [S]: does any sequence reset before step t
    mask: torch.Tensor  # [S, 1, B, 1, 1] bool
    keep: torch.Tensor  # [S, 1, B, 1, 1] 1 - mask in the compute dtype
    fill: torch.Tensor | None  # [1, 1, 4, 1]: the reset state (h, c, n, m), see _RESET_FILL (forward only)

    @classmethod
    def make(cls, reset_flags: torch.Tensor, steps: list[bool], x: torch.Tensor, lstm: bool) -> "_Resets":
        """reset_flags [B, S] bool; steps [S]: reset_flags.any(0)."""
        S, B = len(steps), reset_flags.shape[0]
        mask = reset_flags.t().reshape(S, 1, B, 1, 1)
        return cls(steps, mask, (~mask).to(x.dtype), _reset_fill(x, lstm).view(1, 1, 4, 1))


class _Holds(NamedTuple):
    """The pads (held steps) as the loops use them, for a state [H, B, 4, D] (forward) or [H, B, D] (backward)."""

    steps: list[bool]  # [S]: does any sequence hold at step t
    mask: torch.Tensor  # [S, 1, B, 1, 1] bool: True where the sequence holds
    held: torch.Tensor  # [S, 1, B, 1] mask in the compute dtype (1 where held), for the backward's dh
    lead: int  # the most leading pads of a sequence: its first real step (S for a sequence of pads only)

    @classmethod
    def make(cls, hold_flags: torch.Tensor, steps: list[bool], lead: int, x: torch.Tensor) -> "_Holds":
        """hold_flags [B, S] bool (True at a pad); steps [S]: hold_flags.any(0); lead: see the field."""
        S, B = len(steps), hold_flags.shape[0]
        mask = hold_flags.t().reshape(S, 1, B, 1, 1)
        return cls(steps, mask, mask.view(S, 1, B, 1).to(x.dtype), lead)


def _first_step_rule_until(n0: torch.Tensor, holds: _Holds | None, S: int) -> int:
    """The steps t < this where the first-step rule (m = i where n = 0) may bind, for an initial n0 with some n0 = 0.
    It binds only where n_{t-1} = 0, and from n >= 0 every real step leaves n > 0 (n = f n + i with i = 1 or f = 1):
    so at the first step, or, with holds, up to the first real step of the sequence with the most leading pads;
    everywhere where some n starts negative (n may cross 0 later)."""
    if bool((n0 < 0).any()):
        return S
    return 1 if holds is None else min(S, holds.lead + 1)


class _sLSTMFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, R, h0, c0, n0, m0, lstm: bool, reset_flags, reset_steps, hold_flags, hold_steps, lead):
        """x [B, S, 4, H, D]; R [H, D, 4, D]; h0, c0, n0, m0 [B, H, D]; reset_flags, hold_flags [B, S] bool or
        None (hold: a pad, where the state is kept).

        Returns h [B, S, H, D] and the final h, c, n, m [B, H, D].
        """
        B, S, _, H, D = x.shape
        R_flat = R.reshape(H, D, 4 * D)  # all gates of a head in one matmul
        # [S, H, B, 4, D]: x_t, then the pre-activations x_t + h_{t-1} R. Always a copy (the loop writes into it;
        # `.contiguous()` would return x itself where the permutation is trivial, as for B = H = 1)
        raw = x.new_empty(S, H, B, 4, D).copy_(x.permute(1, 3, 0, 2, 4))
        history = x.new_empty(S + 1, H, B, 4, D)  # the states (h, c, n, m); row 0 is the initial state
        history[0] = torch.stack((h0, c0, n0, m0), dim=2).transpose(0, 1)
        # The history holds the states after each step, before any reset (the outputs); only row 0, the initial
        # state, is stored after its reset.
        resets = None if reset_flags is None else _Resets.make(reset_flags, reset_steps, x, lstm)
        if resets is not None and reset_steps[0]:
            torch.where(resets.mask[0], resets.fill, history[0], out=history[0])
        holds = None if hold_flags is None else _Holds.make(hold_flags, hold_steps, lead, x)
        (_lstm_forward if lstm else _slstm_forward)(raw, R_flat, history, resets, holds)
        ctx.save_for_backward(raw, R_flat, history, *((None, None) if resets is None else (resets.mask, resets.keep)),
                              *((None, None) if holds is None else (holds.mask, holds.held)))
        ctx.lstm, ctx.reset_steps, ctx.hold_steps, ctx.lead = lstm, reset_steps, hold_steps, lead
        h, c, n, m = history[S].transpose(0, 1).unbind(2)  # [B, H, D]
        h_seq = history[1:, :, :, 0].permute(2, 0, 1, 3)  # [B, S, H, D]
        return h_seq.contiguous(), h.contiguous(), c.contiguous(), n.contiguous(), m.contiguous()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dh_seq, dh_last, dc_last, dn_last, dm_last):
        raw, R_flat, history, mask, keep, hold_mask, held = ctx.saved_tensors
        S, H, B, _, D = raw.shape
        lstm, reset_steps, hold_steps = ctx.lstm, ctx.reset_steps, ctx.hold_steps
        resets = None if reset_steps is None else _Resets(reset_steps, mask, keep, None)
        holds = None if hold_steps is None else _Holds(hold_steps, hold_mask, held, ctx.lead)
        dh_out = dh_seq.permute(1, 2, 0, 3)  # [S, H, B, D], a view: the gradient of each step's output
        # the gradient of the state after the current step: (dm, dn, dc, dh) for the sLSTM, (dc, dh) for the LSTM
        d_state = raw.new_empty(2 if lstm else 4, H, B, D)
        d_state[-1] = dh_out[S - 1] + dh_last.transpose(0, 1)
        d_state[-2] = dc_last.transpose(0, 1)
        if not lstm:
            d_state[0], d_state[1] = dm_last.transpose(0, 1), dn_last.transpose(0, 1)
        coefficients, backward_steps = (_lstm_coefficients, _lstm_backward) if lstm else \
            (_slstm_coefficients, _slstm_backward)
        chunk_len = min(S, max(16, _CHUNK_ELEMENTS // (H * B * D)))
        # the steps where the first-step rule may bind (_slstm_coefficients checks for n = 0 there)
        rule_until = _first_step_rule_until(history[0, :, :, 2], holds, S)
        fill = None if resets is None else _reset_fill(raw, lstm).view(4, 1, 1, 1, 1)
        d_raw_chunk = raw.new_empty(H, chunk_len, B, 4, D)  # gradient of the pre-activations of a chunk
        dx = raw.new_empty(B, S, 4, H, D)
        dR = torch.zeros_like(R_flat)
        R_flat_t = R_flat.transpose(1, 2)  # [H, 4D, D]
        for t1 in range(S, 0, -chunk_len):
            t0 = max(0, t1 - chunk_len)
            # the pre-activations of steps t0..t1-1 and the states around them, slot-major
            gates = raw[t0:t1].permute(3, 0, 1, 2, 4).contiguous()  # [(i, f, z, o), T, H, B, D]
            states = history[t0:t1 + 1].permute(3, 0, 1, 2, 4).contiguous()  # [(h, c, n, m), T + 1, H, B, D]
            before, after = states[:, :-1], states[:, 1:]  # the states before and after each step
            d_raw = d_raw_chunk[:, :t1 - t0]
            reset = reset_steps is not None and any(reset_steps[t0:t1])
            if reset:  # the states as the steps saw them, after their resets
                chunk_mask = mask[t0:t1].view(1, t1 - t0, 1, B, 1)
                before = torch.where(chunk_mask, fill, before)
            rule_steps = slice(0, min(t1, rule_until) - t0) if t0 < rule_until else None
            coeffs = coefficients(gates, before, after, rule_steps)  # [T, K, H, B, D]
            if reset:  # the last coefficient, f, carries (dn, dc) back through the step: cut at the resets
                coeffs[:, -1].masked_fill_(chunk_mask[0], 0.0)
            if holds is not None and any(hold_steps[t0:t1]):  # a held step: f = 1, all others 0 (d_raw = 0)
                chunk_hold = hold_mask[t0:t1].view(t1 - t0, 1, 1, B, 1)
                coeffs[:, :-1].masked_fill_(chunk_hold, 0.0)
                coeffs[:, -1:].masked_fill_(chunk_hold, 1.0)
            backward_steps(coeffs, dh_out, d_raw, d_state, R_flat_t, t0, t1, resets, holds)
            h_prev = before[0].transpose(0, 1).reshape(H, -1, D)  # [H, T B, D]
            dR.baddbmm_(h_prev.transpose(1, 2), d_raw.reshape(H, -1, 4 * D))
            dx[:, t0:t1] = d_raw.permute(2, 1, 3, 0, 4)
        if lstm:
            dc0, dh0 = (t.transpose(0, 1) for t in d_state)
            dn0, dm0 = dn_last, dm_last  # carried unchanged, unless a reset zeroed them
            if resets is not None:
                reset_rows = mask.any(0).view(B, 1, 1)
                dn0, dm0 = dn0.masked_fill(reset_rows, 0.0), dm0.masked_fill(reset_rows, 0.0)
        else:
            dm0, dn0, dc0, dh0 = (t.transpose(0, 1) for t in d_state)
        return dx, dR.view(H, D, 4, D), dh0, dc0, dn0, dm0, None, None, None, None, None, None


def _neg_log_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(x) = softplus(-x). F.logsigmoid is slower, and far slower with two threads on small tensors.

    Above its threshold softplus(x) returns x, off by log1p(e^-x); 40 instead of the default 20 keeps that below
    float64 rounding.
    """
    return F.softplus(-x, threshold=40.0)


class _StateViews(NamedTuple):
    """A state buffer [H, B, 4, D] in the order (h, c, n, m), and the views of it that a step needs."""

    all: torch.Tensor  # [H, B, 4, D]
    h: torch.Tensor  # [H, B, D]
    c: torch.Tensor
    n: torch.Tensor
    m: torch.Tensor
    cn: torch.Tensor  # [H, B, 2, D]: (c, n)
    m_keepdim: torch.Tensor  # [H, B, 1, D]: m, broadcast over a pair of slots


def _forward_buffers(raw: torch.Tensor, history: torch.Tensor):
    """The step workspace [H, B, 5, D] (slots (i·tanh z, i, f, z, o)), two state buffers used in turn (before and
    after a step) as _StateViews, the rows of raw ([H, B, 4 D] each) and the rows of history."""
    S, H, B, _, D = raw.shape
    work = raw.new_empty(H, B, 5, D)
    buffers = [history[0].clone(), history[0].clone()]
    states = [_StateViews(s, *s.unbind(2), s[:, :, 1:3], s[:, :, 3:4]) for s in buffers]
    return work, states, raw.view(S, H, B, 4 * D).unbind(0), history.unbind(0)


def _slstm_forward(raw: torch.Tensor, R_flat: torch.Tensor, history: torch.Tensor, resets: _Resets | None,
                   holds: _Holds | None) -> None:
    """The sLSTM steps. raw [S, H, B, 4, D]: x_t in, x_t + h_{t-1} R out; R_flat [H, D, 4 D]; history
    [S + 1, H, B, 4, D]: the initial state (h, c, n, m) in row 0, the state after each step written to the others."""
    n0 = history[0, :, :, 2]
    # The first-step rule (m = i where n = 0) can only bind where n = 0: at the steps t < rule_until
    # (_first_step_rule_until). (After a reset, m = -inf applies it without a check; see _RESET_FILL.)
    rule_until = _first_step_rule_until(n0, holds, raw.shape[0]) if bool((n0 <= 0).any()) else 0
    work, states, raw_rows, history_rows = _forward_buffers(raw, history)
    # each slot holds a pre-activation, then its gate: i, and f (via lf), are overwritten in place
    i_tanh_z, i, f, z, o = work.unbind(2)
    gates = work[:, :, 1:]  # (i, f, z, o)
    i_f, i_tanh_z_i, f_keepdim = work[:, :, 1:3], work[:, :, 0:2], work[:, :, 2:3]
    for t in range(len(raw_rows)):
        _, h_prev, _, n_prev, m_prev, cn_prev, _ = states[t % 2]
        new, h, c, n, m, cn, m_keepdim = states[(t + 1) % 2]
        # x_t + h_{t-1} R, kept in raw for the backward
        gates.copy_(raw_rows[t].baddbmm_(h_prev, R_flat).view(gates.shape))
        torch.sub(m_prev, _neg_log_sigmoid(f), out=f)  # lf = m_{t-1} + log sigmoid(f)
        torch.maximum(i, f, out=m)
        apply_rule = t < rule_until
        if apply_rule:
            torch.where(n_prev == 0, i, m, out=m)
        i_f.sub_(m_keepdim).exp_()  # (i, f) = exp((i, lf) - m)
        if apply_rule:
            i_f.clamp_(max=1.0)  # only the first-step rule can leave f > 1
        torch.mul(z.tanh_(), i, out=i_tanh_z)
        torch.addcmul(i_tanh_z_i, f_keepdim, cn_prev, out=cn)  # (c, n) = f (c, n) + (i tanh z, i)
        torch.div(c, n, out=h).mul_(o.sigmoid_())
        _hold(new, states[t % 2].all, t, holds)
        _save_and_reset(new, history_rows, t + 1, resets)


def _lstm_forward(raw: torch.Tensor, R_flat: torch.Tensor, history: torch.Tensor, resets: _Resets | None,
                  holds: _Holds | None) -> None:
    """The LSTM steps, as _slstm_forward; n and m are carried unchanged in the state buffers."""
    work, states, raw_rows, history_rows = _forward_buffers(raw, history)
    _, i, f, z, o = work.unbind(2)  # slot 0 is unused
    gates, i_f = work[:, :, 1:], work[:, :, 1:3]
    for t in range(len(raw_rows)):
        _, h_prev, c_prev, _, _, _, _ = states[t % 2]
        new, h, c, _, _, _, _ = states[(t + 1) % 2]
        gates.copy_(raw_rows[t].baddbmm_(h_prev, R_flat).view(gates.shape))
        i_f.sigmoid_()
        o.sigmoid_()
        z.tanh_().mul_(i)
        torch.addcmul(z, f, c_prev, out=c)
        torch.tanh(c, out=h).mul_(o)
        _hold(new, states[t % 2].all, t, holds)
        _save_and_reset(new, history_rows, t + 1, resets)


# What a reset writes into the state (h, c, n, m) (selected, not multiplied by 0, so that a NaN or inf in one
# document's state reaches no later document). For the sLSTM m = -inf instead of 0: the step after it then computes
# exactly what the definition gives (m = 0, then the first-step rule), with no extra op, and its backward cuts the
# gradient of (m, n, c) before it (README.md, "Resets"). The -inf never leaves the op: the history keeps the states
# before resets, and the step overwrites m. The LSTM carries m unchanged, so it resets it to 0.
_RESET_FILL = {False: (0.0, 0.0, 0.0, -float("inf")), True: (0.0, 0.0, 0.0, 0.0)}


def _reset_fill(like: torch.Tensor, lstm: bool) -> torch.Tensor:
    return like.new_tensor(_RESET_FILL[lstm])


def _hold(new: torch.Tensor, previous: torch.Tensor, t: int, holds: _Holds | None) -> None:
    """The sequences that hold at step t (pads) keep the state before it: `previous` [H, B, 4, D], selected into
    `new` (the state after step t). A held step has no reset, so `previous` is that state as the history has it."""
    if holds is not None and holds.steps[t]:
        torch.where(holds.mask[t], previous, new, out=new)


def _save_and_reset(new: torch.Tensor, history_rows, t: int, resets: _Resets | None) -> None:
    """Store the state `new` [H, B, 4, D] after step t - 1 in the history, then reset the sequences reset before
    step t (if t < S): (h, c, n) = 0, m = -inf (sLSTM) or 0 (LSTM)."""
    history_rows[t].copy_(new)
    if resets is not None and t < len(resets.steps) and resets.steps[t]:
        torch.where(resets.mask[t], resets.fill, new, out=new)


# The backward of one step maps the gradient of its output state linearly to the gradient of its pre-activations
# (d_raw) and of its input state (updated in place in d_state); README.md, "The backward", derives the map. Its
# coefficients are computed for the steps t0..t1-1 at once, as coeffs [T, K, H, B, D]; each step copies its row
# into a fixed buffer, so that the views its ops need are made once. A coefficient named `da_to_db` is what the
# gradient da is multiplied by to give (its share of) db.
#
# At a step t with a reset, d_raw is that of a step from the reset state (the chunk's states before the steps are
# taken after their resets), and the gradient of the state before it is cut: (dm, dn, dc) by the coefficients,
# dh_{t-1} by zeroing d_raw of those sequences after it is stored, so that dh_{t-1} = d_raw Rᵀ + dh_out is the
# output gradient alone.


def _previous_dh(dh, dh_out_rows, d_raw_step_flat, R_flat_t, carry, t: int, holds: _Holds | None) -> None:
    """dh_{t-1} = d_raw_t Rᵀ + (output gradient of h_{t-1}), written into dh (the gradient of h_t before); plus
    dh_t itself for the sequences that hold at step t (h_{t-1} is their h_t; their d_raw is 0). carry [H, B, D]."""
    if holds is not None and holds.steps[t]:
        if t > 0:
            torch.addcmul(dh_out_rows[t - 1], holds.held[t], dh, out=carry)
        else:
            torch.mul(holds.held[t], dh, out=carry)
        torch.baddbmm(carry, d_raw_step_flat, R_flat_t, out=dh)
    elif t > 0:
        torch.baddbmm(dh_out_rows[t - 1], d_raw_step_flat, R_flat_t, out=dh)
    else:
        torch.bmm(d_raw_step_flat, R_flat_t, out=dh)


def _backward_buffers(coeffs: torch.Tensor, d_raw: torch.Tensor, dh_out: torch.Tensor):
    """The buffers of one step: its coefficients [K, H, B, D], its d_raw [H, B, 4, D] (and flat, [H, B, 4 D]); and
    the rows of coeffs, dh_out and d_raw (the chunk's, [H, T, B, 4, D]) by step."""
    H, _, B, _, D = d_raw.shape
    d_raw_step = d_raw.new_empty(H, B, 4, D)
    return (coeffs.new_empty(coeffs.shape[1:]), d_raw_step, d_raw_step.view(H, B, 4 * D), coeffs.unbind(0),
            dh_out.unbind(0), d_raw.unbind(1))


def _slstm_coefficients(gates: torch.Tensor, before: torch.Tensor, after: torch.Tensor, rule_steps: slice | None):
    """The coefficients of the backward of steps t0..t1-1 [T, 9, H, B, D], in the order _slstm_backward reads them.

    gates: pre-activations (i, f, z, o) [4, T, H, B, D]; before, after: the states (h, c, n, m) [4, T, H, B, D]
    before each step (after its reset) and after it. rule_steps: the steps where the first-step rule may bind
    (see _slstm_forward), or None.
    """
    i_raw, f_raw, z_raw, o_raw = gates
    c_prev, n_prev, m_prev = before[1], before[2], before[3]
    h, n = after[0], after[2]
    # i_raw - lf, with lf as the forward computes it; m = max(i_raw, lf)
    i_minus_lf = i_raw - torch.sub(m_prev, _neg_log_sigmoid(f_raw))
    i = torch.exp(i_minus_lf.clamp(max=0.0))  # exp(i_raw - m)
    f = torch.exp(i_minus_lf.clamp(min=0.0).neg_())  # exp(lf - m)
    dm_di = torch.sign(i_minus_lf).add_(1.0).mul_(0.5)  # the share of dm that torch.maximum routes to i_raw
    df_dlf = f  # d f / d(lf - m)
    if rule_steps is not None and bool((empty := n_prev[rule_steps] == 0).any()):
        # the first-step rule: m = i_raw, so i = 1, and f = min(exp(lf - i_raw), 1) passes no gradient where it clamps
        i[rule_steps] = torch.where(empty, 1.0, i[rule_steps])
        dm_di[rule_steps] = torch.where(empty, 1.0, dm_di[rule_steps])
        df_dlf = f.clone()
        df_dlf[rule_steps] = torch.where(empty & (i_minus_lf[rule_steps] < 0), 0.0, f[rule_steps])
    tanh_z = torch.tanh(z_raw)
    o = torch.sigmoid(o_raw)
    di_di, neg_df_di = (1 - dm_di) * i, dm_di * df_dlf  # d i / d i_raw and -d f / d i_raw, both also through m
    dn_di = di_di - neg_df_di * n_prev  # d n / d i_raw
    dc_di = di_di * tanh_z - neg_df_di * c_prev  # d c / d i_raw
    # dh_to_dnc (d h / d n, d h / d c), dch_to_dzo (d c / d z_raw, d h / d o_raw), dmnc_to_di (d (m, n, c) / d i_raw),
    # dlf_to_df (d log sigmoid(f_raw) / d f_raw), f
    return torch.stack([-h / n, o / n, i * (1 - tanh_z * tanh_z), h * (1 - o), dm_di, dn_di, dc_di,
                        torch.sigmoid(-f_raw), f], 1)


def _slstm_backward(coeffs, dh_out, d_raw, d_state, R_flat_t, t0: int, t1: int, resets: _Resets | None,
                    holds: _Holds | None) -> None:
    """Steps t1-1 down to t0: d_state (dm, dn, dc, dh) [4, H, B, D], the gradient of the state after step t1 - 1
    (dh with its output gradient), becomes that of the state before step t0; d_raw [H, T, B, 4, D] is written.

    coeffs [T, 9, H, B, D] from _slstm_coefficients; dh_out [S, H, B, D]; R_flat_t [H, 4 D, D]."""
    step_coeffs, d_raw_step, d_raw_step_flat, coeff_rows, dh_out_rows, d_raw_rows = \
        _backward_buffers(coeffs, d_raw, dh_out)
    dh_to_dnc, dch_to_dzo, dmnc_to_di = step_coeffs[0:2], step_coeffs[2:4], step_coeffs[4:7]
    dlf_to_df, f = step_coeffs[7], step_coeffs[8]
    dm, dnc, dmnc, dch, dh = d_state[0], d_state[1:3], d_state[0:3], d_state[2:4], d_state[3]
    di, df, dzo = d_raw_step[:, :, 0], d_raw_step[:, :, 1], d_raw_step[:, :, 2:4].permute(2, 0, 1, 3)
    products = d_state.new_empty(3, *dh.shape)
    carry = None if holds is None else torch.empty_like(dh)
    for t in range(t1 - 1, t0 - 1, -1):
        step_coeffs.copy_(coeff_rows[t - t0])
        dnc.addcmul_(dh_to_dnc, dh)  # (dn, dc) += (d h / d n, d h / d c) dh
        torch.mul(dch, dch_to_dzo, out=dzo)  # (dz, do)
        torch.sum(torch.mul(dmnc, dmnc_to_di, out=products), 0, out=di)
        dm.sub_(di)  # dm_{t-1} = d lf = dm - di
        torch.mul(dm, dlf_to_df, out=df)
        dnc.mul_(f)  # (dn, dc)_{t-1}
        d_raw_rows[t - t0].copy_(d_raw_step)
        if resets is not None and resets.steps[t]:
            d_raw_step.mul_(resets.keep[t])  # no dh_{t-1} through the reset
        _previous_dh(dh, dh_out_rows, d_raw_step_flat, R_flat_t, carry, t, holds)


def _lstm_coefficients(gates: torch.Tensor, before: torch.Tensor, after: torch.Tensor, rule_steps: slice | None):
    """The LSTM's as _slstm_coefficients: [T, 6, H, B, D]. rule_steps is unused."""
    z_raw, o_raw = gates[2], gates[3]
    c_prev, c = before[1], after[1]
    (i, f), o = torch.sigmoid(gates[0:2]), torch.sigmoid(o_raw)
    tanh_z = torch.tanh(z_raw)
    tanh_c = torch.tanh(c)
    # dh_to_dc, dc_to_dif (d c / d i_raw, d c / d f_raw), dch_to_dzo (d c / d z_raw, d h / d o_raw), f
    return torch.stack([o * (1 - tanh_c * tanh_c), tanh_z * i * (1 - i), c_prev * f * (1 - f),
                        i * (1 - tanh_z * tanh_z), tanh_c * o * (1 - o), f], 1)


def _lstm_backward(coeffs, dh_out, d_raw, d_state, R_flat_t, t0: int, t1: int, resets: _Resets | None,
                   holds: _Holds | None) -> None:
    """As _slstm_backward, with d_state (dc, dh) [2, H, B, D] and coeffs from _lstm_coefficients."""
    step_coeffs, d_raw_step, d_raw_step_flat, coeff_rows, dh_out_rows, d_raw_rows = \
        _backward_buffers(coeffs, d_raw, dh_out)
    dh_to_dc, dc_to_dif, dch_to_dzo, f = step_coeffs[0], step_coeffs[1:3], step_coeffs[3:5], step_coeffs[5]
    dc, dh = d_state[0], d_state[1]
    dif, dzo = d_raw_step[:, :, 0:2].permute(2, 0, 1, 3), d_raw_step[:, :, 2:4].permute(2, 0, 1, 3)
    carry = None if holds is None else torch.empty_like(dh)
    for t in range(t1 - 1, t0 - 1, -1):
        step_coeffs.copy_(coeff_rows[t - t0])
        dc.addcmul_(dh_to_dc, dh)
        torch.mul(dc, dc_to_dif, out=dif)  # (di, df)
        torch.mul(d_state, dch_to_dzo, out=dzo)  # (dz, do)
        dc.mul_(f)
        d_raw_rows[t - t0].copy_(d_raw_step)
        if resets is not None and resets.steps[t]:
            d_raw_step.mul_(resets.keep[t])  # no dh_{t-1} through the reset
        _previous_dh(dh, dh_out_rows, d_raw_step_flat, R_flat_t, carry, t, holds)
