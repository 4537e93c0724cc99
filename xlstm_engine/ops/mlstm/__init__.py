"""The mLSTM op: one entry point, several implementations with one calling convention.

    h, state = mlstm(q, k, v, i, f, initial_state=None, output_final_state=True)

Layout (batch-major, heads after the sequence, as the projections produce it):
    q, k [B, S, H, DK]; v [B, S, H, DV]; i, f [B, S, H] gate pre-activations; h [B, S, H, DV]
    state: mLSTMState(C [B, H, DK, DV], n [B, H, DK], m [B, H])
The math is in README.md.
"""

import importlib.util

import torch

from ..checks import check_mask, check_resets
from .chunkwise import mlstm_chunkwise
from .limits import SHORT_PROMPT, TRITON_CHUNK_SIZES, triton_head_dims_fit
from .naive import mlstm_parallel_naive, mlstm_recurrent_naive
from .state import mLSTMState
from .step import mlstm_step

BACKENDS = ("auto", "triton", "chunkwise", "step", "naive_recurrent", "naive_parallel")
INPUT_GATES = ("exp", "sigmoid")

__all__ = ["BACKENDS", "INPUT_GATES", "SHORT_PROMPT", "check_resets", "check_state", "mLSTMState", "mlstm",
           "mlstm_chunkwise", "mlstm_parallel_naive", "mlstm_recurrent_naive", "mlstm_step"]


def mlstm(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i: torch.Tensor, f: torch.Tensor, *,
    initial_state: mLSTMState | None = None, output_final_state: bool = False,
    input_gate: str = "exp", eps: float = 1e-6, chunk_size: int = 64, backend: str = "auto",
    resets: torch.Tensor | None = None, inplace: bool = False, mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, mLSTMState | None]:
    """Run the mLSTM cell over a sequence.

    Args:
        q, k (Tensor): queries and keys `[B, S, H, DK]`. q is scaled by DK^-1/2 inside.
        v (Tensor): values `[B, S, H, DV]`.
        i, f (Tensor): input and forget gate pre-activations `[B, S, H]`.
        initial_state (mLSTMState, optional): memory to start from; zeros (with m = 0) if None.
        output_final_state (bool): also return the memory after the last token. Default: False.
        input_gate (str): "exp" (xLSTM, stabilized by m) or "sigmoid" (mLSTMsig, m stays 0). Default: "exp".
        eps (float): added to the denominator after the max. Default: 1e-6.
        chunk_size (int): tokens per chunk of the chunkwise form; any S works. Default: 64.
        backend (str): one of `BACKENDS`. "auto" takes the Triton kernels on CUDA (head dims multiples of 16 up
            to 512, chunk_size 16-128; without autograd, the fused step kernel for S = 1 and one launch for
            prompts of up to SHORT_PROMPT tokens), otherwise the PyTorch chunkwise form, or its single step for
            S = 1. The naive ones are the references. Default: "auto".
        resets (Tensor, optional): bool `[B, S]`; True empties the memory before that token, so that packed
            documents do not see each other (each runs as from an empty state).
        inplace (bool): write the final state into `initial_state`'s tensors and return those (for decoding
            with preallocated state, as in a CUDA graph). The Triton step kernel writes them where they lie.
        mask (Tensor, optional): bool `[B, S]`, True for a real token. A pad (False) leaves the memory (C, n, m)
            exactly unchanged, and its inputs get zero gradients: its gates are replaced by i = -inf (no write) and
            f = +inf (log sigmoid(f) = 0: no decay), in every backend. h at a pad reads the held memory. A reset
            must not mark a pad.

    Returns:
        h `[B, S, H, DV]` in q's dtype, and the final state (float32 or wider) or None.
    """
    _check_inputs(q, k, v, i, f, initial_state, input_gate, chunk_size, backend, resets, mask)
    if mask is not None:
        i, f = _hold_gates(i, f, mask)
    if inplace and initial_state is None:
        raise ValueError("inplace=True writes the final state into initial_state, which is None")
    S = q.shape[1]
    kwargs = dict(input_gate=input_gate, eps=eps)
    if backend == "auto":
        backend = "triton" if _triton_fits(q, v, chunk_size) else "step" if S == 1 else "chunkwise"
    if backend == "triton":
        _triton().check_inputs(q, k, v, chunk_size)
    needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v, i, f, *(initial_state or ())))
    if S == 1 and (backend == "step" or (backend == "triton" and not needs_grad)):
        h, state = _one_step(q, k, v, i, f, initial_state, resets, backend == "triton", inplace, **kwargs)
    elif backend == "triton" and not needs_grad and S <= SHORT_PROMPT and resets is None:
        h, state = _triton().mlstm_short_triton(q, k, v, i, f, initial_state, **kwargs)
    else:
        h, state = _sequence(backend, q, k, v, i, f, initial_state, resets, chunk_size, **kwargs)
    if inplace and state is not initial_state:
        for target, new in zip(initial_state, state, strict=True):
            target.copy_(new)
        state = initial_state
    return h, (state if output_final_state else None)


def _hold_gates(i: torch.Tensor, f: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The gate pre-activations with pads (mask False) replaced: i = -inf, so exp(i - m) = 0 and, for the sigmoid
    gate, sigmoid(i) = 0 (nothing is written), and f = +inf, so log sigmoid(f) = 0 (nothing decays) and the stabilizer
    m_t = max(0 + m_{t-1}, -inf) stays. Selected, not multiplied: no gradient reaches a pad's gates."""
    pad = ~mask[..., None]  # [B, S, 1]
    return i.masked_fill(pad, float("-inf")), f.masked_fill(pad, float("inf"))


def _sequence(backend: str, q, k, v, i, f, initial_state, resets, chunk_size: int, **kwargs):
    if backend == "step":
        raise ValueError(f"backend='step' handles one token, got a sequence of length S={q.shape[1]}")
    if backend == "triton":
        return _triton().mlstm_triton(q, k, v, i, f, initial_state, chunk_size=chunk_size, resets=resets, **kwargs)
    if backend == "chunkwise":
        return mlstm_chunkwise(q, k, v, i, f, initial_state, chunk_size=chunk_size, resets=resets, **kwargs)
    if backend == "naive_recurrent":
        return mlstm_recurrent_naive(q, k, v, i, f, initial_state, resets=resets, **kwargs)
    return mlstm_parallel_naive(q, k, v, i, f, initial_state, resets=resets, **kwargs)


def _one_step(q, k, v, i, f, initial_state, resets, use_triton: bool, inplace: bool, **kwargs):
    """S = 1: the fused Triton step (without autograd) or the PyTorch step."""
    B, _, H, DK = q.shape
    state = initial_state
    if state is None:
        state = mLSTMState.zeros(B, H, DK, v.shape[-1], device=q.device)
    elif resets is not None:  # an emptied memory is zeros with m = 0
        keep = ~resets[:, 0, None]  # replaced, not multiplied by 0: 0 * NaN is NaN
        state = mLSTMState(torch.where(keep[..., None, None], state.C, 0.0), torch.where(keep[..., None], state.n, 0.0),
                           torch.where(keep, state.m, 0.0))
    q, k, v, i, f = (x[:, 0] for x in (q, k, v, i, f))
    if not use_triton:
        h, state = mlstm_step(q, k, v, i, f, state, **kwargs)
        return h[:, None], state
    out = initial_state if inplace else None
    if out is None and state.C.dtype != torch.float32:  # a new state is float32 or wider, as from every backend
        out = mLSTMState(*(torch.empty_like(x, dtype=torch.promote_types(x.dtype, torch.float32)) for x in state))
    h, state = _triton().mlstm_step_triton(q, k, v, i, f, state, out=out, **kwargs)
    return h[:, None], state


def _triton():
    """The Triton kernels' package (triton/__init__.py), imported on first use, not at the top of this file:
    triton is an optional dependency (CPU installs lack it), and only the "triton" backend needs it."""
    from . import triton

    return triton


def _triton_fits(q: torch.Tensor, v: torch.Tensor, chunk_size: int) -> bool:
    """Whether "auto" takes the Triton kernels: CUDA tensors of shapes and dtypes they support (not float64: the
    PyTorch forms compute in it), and triton installed."""
    if not q.is_cuda or q.dtype == torch.float64 or not triton_head_dims_fit(q.shape[-1], v.shape[-1]) \
            or chunk_size not in TRITON_CHUNK_SIZES:
        return False
    return importlib.util.find_spec("triton") is not None


def _check_inputs(q, k, v, i, f, initial_state, input_gate, chunk_size, backend, resets, mask=None) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown mLSTM backend {backend!r}; expected one of {BACKENDS}")
    if input_gate not in INPUT_GATES:
        raise ValueError(f"unknown input_gate {input_gate!r}; expected one of {INPUT_GATES}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    for name, x in dict(q=q, k=k, v=v, i=i, f=f).items():
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if q.ndim != 4:
        raise ValueError(f"q must be [B, S, H, DK], got shape {tuple(q.shape)}")
    B, S, H, DK = q.shape
    if S == 0:
        raise ValueError("the sequence is empty (S = 0)")
    expected = dict(k=(B, S, H, DK), v=(B, S, H, v.shape[-1]), i=(B, S, H), f=(B, S, H))
    for name, x in dict(k=k, v=v, i=i, f=f).items():
        if tuple(x.shape) != expected[name]:
            raise ValueError(f"{name} must have shape {expected[name]} to match q {tuple(q.shape)}, "
                             f"got {tuple(x.shape)}")
    if initial_state is not None:
        check_state(initial_state, B, H, DK, v.shape[-1])
    check_resets(resets, B, S, q.device)
    check_mask(mask, B, S, q.device, resets)


def check_state(state: mLSTMState, B: int, H: int, DK: int, DV: int, where: str = "initial_state") -> None:
    """Raise ValueError unless `state` is an mLSTMState of the given sizes."""
    if not isinstance(state, tuple) or len(state) != 3:
        raise ValueError(f"{where} must be an mLSTMState (C, n, m), got {type(state).__name__}")
    expected = dict(C=(B, H, DK, DV), n=(B, H, DK), m=(B, H))
    for name, x in zip(("C", "n", "m"), state, strict=True):
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != expected[name]:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{where}.{name} must have shape {expected[name]} (B, H, ...), got {got}")
        if not x.is_floating_point():
            raise TypeError(f"{where}.{name} must be a floating-point tensor (float32 or wider), got dtype {x.dtype}")
