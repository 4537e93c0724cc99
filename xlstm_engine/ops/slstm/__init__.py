"""The sLSTM op: one entry point, a reference and a fast implementation with one calling convention.

    h, state = slstm(x, R, initial_state=None, output_final_state=False, function="slstm", resets=None, mask=None)

Layout (batch-major, as the input projection produces it):
    x [B, S, 4, H, D] gate pre-activations in the order (i, f, z, o), bias included
    R [H, D, 4, D] recurrent kernel, one block per head:
        raw[b, t, g, h, j] = x[b, t, g, h, j] + sum_k h_{t-1}[b, h, k] R[h, k, g, j]
    h [B, S, H, D]
    state: sLSTMState(h, c, n, m), each [B, H, D]
    resets [B, S] bool (optional): zero the state of sequence b just before step t (packed documents)
    mask [B, S] bool (optional): False marks a pad, where the state of sequence b is held (padded batches)
The math is in README.md.
"""

import torch

from ..checks import check_mask, check_resets
from .naive import slstm_naive
from .recurrent import slstm_recurrent
from .state import sLSTMState

BACKENDS = ("auto", "recurrent", "naive")
FUNCTIONS = ("slstm", "lstm")

__all__ = ["BACKENDS", "FUNCTIONS", "check_state", "sLSTMState", "slstm", "slstm_naive", "slstm_recurrent"]


def slstm(
    x: torch.Tensor, R: torch.Tensor, *, initial_state: sLSTMState | None = None, output_final_state: bool = False,
    function: str = "slstm", backend: str = "auto", resets: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, sLSTMState | None]:
    """Run the sLSTM cell over a sequence.

    Args:
        x (Tensor): gate pre-activations from the input `[B, S, 4, H, D]`, gates (i, f, z, o), bias included.
        R (Tensor): recurrent kernel `[H, D, 4, D]`, one dense block per head.
        initial_state (sLSTMState, optional): state to start from; all zeros if None.
        output_final_state (bool): also return the state after the last token. Default: False.
        function (str): "slstm" (exponential input gate, stabilized) or "lstm" (classic LSTM cell, n and m
            carried unchanged). Default: "slstm".
        backend (str): one of `BACKENDS`. "auto" takes "recurrent"; "naive" is the reference. Default: "auto".
        resets (Tensor, optional): bool `[B, S]`, for packed documents. Where `resets[b, t]` is True, the state
            (h, c, n, m) of sequence b is set to zero just before step t, which then runs as the first step of a
            fresh sequence (at t = 0 this replaces the initial state). No gradient flows through a reset.
        mask (Tensor, optional): bool `[B, S]`, True for a real token. At a pad (False) the state (h, c, n, m) of
            that sequence is held exactly (the step is computed and discarded, by selection), its output h is the
            held h, and the pad's x gets a zero gradient, while the gradient of the state passes through unchanged.
            A reset must not mark a pad.

    Returns:
        h `[B, S, H, D]` in x's dtype, and the final state (in float32, or float64 for float64 x) or None.
    """
    _check_inputs(x, R, initial_state, function, backend, resets, mask)
    impl = slstm_naive if backend == "naive" else slstm_recurrent
    h, state = impl(x, R, initial_state, function=function, resets=resets, mask=mask)
    return h, (state if output_final_state else None)


def _check_inputs(x, R, initial_state, function, backend, resets=None, mask=None) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown sLSTM backend {backend!r}; expected one of {BACKENDS}")
    if function not in FUNCTIONS:
        raise ValueError(f"unknown sLSTM function {function!r}; expected one of {FUNCTIONS}")
    for name, t in dict(x=x, R=R).items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if x.ndim != 5 or x.shape[2] != 4:
        raise ValueError(f"x must be [B, S, 4, H, D] (gates i, f, z, o), got shape {tuple(x.shape)}")
    B, S, _, H, D = x.shape
    if S == 0:
        raise ValueError("the sequence is empty (S = 0)")
    if tuple(R.shape) != (H, D, 4, D):
        raise ValueError(f"R must have shape {(H, D, 4, D)} (H, D, 4, D) to match x {tuple(x.shape)}, "
                         f"got {tuple(R.shape)}")
    if R.device != x.device:
        raise ValueError(f"R is on {R.device} but x is on {x.device}")
    if initial_state is not None:
        check_state(initial_state, B, H, D)
        for name, t in zip(sLSTMState._fields, initial_state, strict=True):
            if not t.is_floating_point():
                raise TypeError(f"initial_state.{name} must be a floating-point tensor, got dtype {t.dtype}")
            if t.device != x.device:
                raise ValueError(f"initial_state.{name} is on {t.device} but x is on {x.device}")
    check_resets(resets, B, S, x.device)
    check_mask(mask, B, S, x.device, resets)


def check_state(state: sLSTMState, B: int, H: int, D: int, where: str = "initial_state") -> None:
    """Raise ValueError unless `state` is an sLSTMState of tensors of shape [B, H, D]."""
    if not isinstance(state, tuple) or len(state) != 4:
        raise ValueError(f"{where} must be an sLSTMState (h, c, n, m), got {type(state).__name__}")
    for name, t in zip(sLSTMState._fields, state, strict=True):
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (B, H, D):
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{where}.{name} must have shape {(B, H, D)} (B, H, D), got {got}")
