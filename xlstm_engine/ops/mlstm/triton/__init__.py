"""Triton mLSTM kernels: the chunkwise forward on the GPU (and, with TRITON_INTERPRET=1, on the CPU for tests).

    h, state = mlstm_triton(q, k, v, i, f, initial_state, input_gate="exp", eps=1e-6, chunk_size=64, resets=None)

Same layout and result as `mlstm_chunkwise`. The backward recomputes the forward with the PyTorch chunkwise
form under autograd (exact gradients, including the initial state's); a Triton backward replaces it next.
"""

import math
import os

import torch
import torch.nn.functional as F
import triton

from ..chunkwise import mlstm_chunkwise
from ..common import cut_at_resets
from ..state import mLSTMState
from .forward import _chunk_outputs, _chunk_states

PRECISIONS = {torch.float32: "ieee", torch.float64: "ieee", torch.bfloat16: "tf32", torch.float16: "tf32"}


def mlstm_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i: torch.Tensor, f: torch.Tensor,
    initial_state: mLSTMState | None = None, *, input_gate: str = "exp", eps: float = 1e-6, chunk_size: int = 64,
    resets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, mLSTMState]:
    """mLSTM over a whole sequence with the Triton kernels. q, k [B, S, H, DK]; v [B, S, H, DV]; i, f [B, S, H].

    DK and DV must be multiples of 16 (<= 512); chunk_size a power of two in [16, 128]. Returns h in q's dtype and
    the final state in float32.
    """
    DK, DV = q.shape[-1], v.shape[-1]
    if DK % 16 or DV % 16 or max(DK, DV) > 512:
        raise ValueError(f"the Triton mLSTM needs head dims that are multiples of 16 up to 512, got DK={DK}, DV={DV}")
    if chunk_size not in (16, 32, 64, 128):
        raise ValueError(f"the Triton mLSTM needs chunk_size in (16, 32, 64, 128), got {chunk_size}")
    if q.dtype not in PRECISIONS or not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share one float dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    C0, n0, m0 = (None, None, None) if initial_state is None else initial_state
    h, C, n, m = _TritonChunkwise.apply(q, k, v, i, f, C0, n0, m0, resets, input_gate, eps, chunk_size)
    return h, mLSTMState(C, n, m)


class _TritonChunkwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, i, f, C0, n0, m0, resets, input_gate, eps, chunk_size):
        h, state, _ = _forward(q, k, v, i, f, None if C0 is None else (C0, n0, m0), resets, input_gate, eps,
                               chunk_size)
        ctx.save_for_backward(q, k, v, i, f, C0, n0, m0, resets)
        ctx.options = dict(input_gate=input_gate, eps=eps, chunk_size=chunk_size)
        return h, *state

    @staticmethod
    def backward(ctx, dh, dC, dn, dm):
        q, k, v, i, f, C0, n0, m0, resets = ctx.saved_tensors
        inputs = [x.detach().requires_grad_(need) if x is not None else None
                  for x, need in zip((q, k, v, i, f, C0, n0, m0), ctx.needs_input_grad[:8], strict=True)]
        with torch.enable_grad():
            state = None if C0 is None else mLSTMState(*inputs[5:])
            h, final = mlstm_chunkwise(*inputs[:5], state, resets=resets, **ctx.options)
            outputs, grads = zip(*[(o, g) for o, g in zip((h, *final), (dh, dC, dn, dm), strict=True)
                                   if g is not None and o.requires_grad], strict=True)
            wanted = [x for x in inputs if x is not None and x.requires_grad]
            found = iter(torch.autograd.grad(outputs, wanted, grads, allow_unused=True))
        return (*(next(found) if x is not None and x.requires_grad else None for x in inputs), None, None, None, None)


def _forward(q, k, v, i, f, initial_state, resets, input_gate: str, eps: float, L: int):
    """Launch the two forward kernels. Returns h, the final (C, n, m) and the per-row (m, den) [BH, NC*L]."""
    B, S, H, DK = q.shape
    DV = v.shape[-1]
    NC = math.ceil(S / L)
    gates = _gates(i, f, input_gate, resets, L, NC)
    BH, dev, f32 = B * H, q.device, torch.float32
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    C_in = torch.empty(BH, NC, DK, DV, device=dev, dtype=f32)
    n_in = torch.empty(BH, NC, DK, device=dev, dtype=f32)
    m_in = torch.empty(BH, NC, device=dev, dtype=f32)
    C = torch.empty(B, H, DK, DV, device=dev, dtype=f32)
    n = torch.empty(B, H, DK, device=dev, dtype=f32)
    m = torch.empty(B, H, device=dev, dtype=f32)
    initial = None if initial_state is None else [x.to(f32).contiguous() for x in initial_state]
    shapes = dict(DK=DK, DV=DV, L=L, BK=min(64, triton.next_power_of_2(DK)), BV=min(64, triton.next_power_of_2(DV)),
                  STABILIZE=input_gate == "exp", PRECISION=PRECISIONS[q.dtype],
                  DOT_F32=q.dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1")
    BK, BV = shapes["BK"], shapes["BV"]
    _chunk_states[(triton.cdiv(DK, BK), triton.cdiv(DV, BV), BH)](
        k, v, gates["a"], gates["g"], gates["m_chunk"], *(initial or (C, n, m)), C_in, n_in, m_in, C, n, m,
        S, H, NC, *k.stride()[:3], *v.stride()[:3],
        HAS_INITIAL=initial is not None, **shapes,
    )
    h = torch.empty(B, S, H, DV, device=dev, dtype=q.dtype)
    m_row = torch.empty(BH, NC * L, device=dev, dtype=f32)
    den = torch.empty(BH, NC * L, device=dev, dtype=f32)
    _chunk_outputs[(triton.cdiv(DV, BV), NC, BH)](
        q, k, v, gates["b_decay"], gates["b_inflow"], gates["log_i"], gates["segment"], gates["restart"],
        C_in, n_in, m_in, h, m_row, den,
        S, H, NC, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *h.stride()[:3], DK**-0.5, eps,
        HAS_RESETS=resets is not None, **shapes,
    )
    return h, (C, n, m), (m_row, den)


def _gates(i, f, input_gate: str, resets, L: int, NC: int) -> dict[str, torch.Tensor]:
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

