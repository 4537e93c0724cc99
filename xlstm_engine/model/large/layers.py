"""The layers of xLSTM Large: soft-capping, norms with float32 reductions, the SwiGLU FFN, the mLSTM layer and the
pre-norm block.

Class names carry "Large" where the NeurIPS family has a namesake of another meaning (its `mLSTMLayer` and
`MultiHeadLayerNorm` in model/neurips/, its `FeedForwardConfig`): the weights differ (here a norm's weight is the
scale itself, there an offset from 1). Module attribute names are the checkpoint's and never change.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ...config import RuntimeOptions, xLSTMLargeConfig
from ...ops.mlstm import mlstm, mLSTMState
from ..norm import Norm


def soft_cap(x: torch.Tensor, cap: float | None) -> torch.Tensor:
    """cap * tanh(x / cap): smooth clipping to (-cap, cap). Identity when cap is None."""
    return x if cap is None else cap * torch.tanh(x / cap)


class RMSNorm(Norm):
    """x / rms(x) over the last dim, then weight (and bias). The cast back precedes the affine step."""

    def __init__(self, dim: int, eps: float = 1e-6, use_bias: bool = False, force_float32: bool = True):
        super().__init__()
        self.eps, self.force_float32 = eps, force_float32
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if use_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.rms_norm(x.float() if self.force_float32 else x, x.shape[-1:], eps=self.eps).to(x.dtype)
        y = y * self.weight
        return y if self.bias is None else y + self.bias


class LargeMultiHeadLayerNorm(Norm):
    """LayerNorm of each head without its own affine: [B, S, H, D] -> [B, S, H * D], then weight (and bias)."""

    def __init__(self, num_heads: int, head_dim: int, eps: float = 1e-6, use_bias: bool = False,
                 force_float32: bool = True):
        super().__init__()
        self.eps, self.force_float32 = eps, force_float32
        self.weight = nn.Parameter(torch.ones(num_heads * head_dim))
        self.bias = nn.Parameter(torch.zeros(num_heads * head_dim)) if use_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.float() if self.force_float32 else x, x.shape[-1:], eps=self.eps).to(x.dtype)
        y = y.flatten(-2) * self.weight
        return y if self.bias is None else y + self.bias


class LargeFeedForward(nn.Module):
    """SwiGLU: W_down(SiLU(W_gate x) * (W_up x)), with W_gate and W_up stacked in one projection."""

    def __init__(self, dim: int, hidden_dim: int, use_bias: bool = False):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.proj_up_gate_z = nn.Linear(dim, 2 * hidden_dim, bias=use_bias)  # rows: [gate | up]
        self.proj_down = nn.Linear(hidden_dim, dim, bias=use_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, z = self.proj_up_gate_z(x).split(self.hidden_dim, dim=-1)
        return self.proj_down(F.silu(gate) * z)


class LargeMLSTMLayer(nn.Module):
    """Projections, soft-capped gates, the mLSTM cell, per-head LayerNorm, sigmoid output gate, out_proj."""

    def __init__(self, config: xLSTMLargeConfig):
        super().__init__()
        self.config = config
        qk, v, H = config.qk_dim, config.v_dim, config.num_heads
        self.qkv_opreact = nn.Linear(config.embedding_dim, 2 * qk + 2 * v, bias=config.use_bias)  # [q|k|v|o]
        self.ifgate_preact = nn.Linear(config.embedding_dim, 2 * H, bias=True)  # [i|f]
        self.multihead_norm = LargeMultiHeadLayerNorm(H, config.v_head_dim, eps=config.norm_eps,
                                                      use_bias=config.use_bias,
                                                      force_float32=config.norm_reduction_force_float32)
        self.out_proj = nn.Linear(v, config.embedding_dim, bias=config.use_bias)

    def forward(self, x: torch.Tensor, state: mLSTMState | None, runtime: RuntimeOptions,
                resets: torch.Tensor | None = None, inplace: bool = False,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, mLSTMState]:
        """x [B, S, d] -> y [B, S, d], new state (with inplace, `state` itself, written by the op).
        attention_mask [B, S] bool (True: a token) or None: the memory holds still at pads."""
        c = self.config
        q, k, v, o = self.qkv_opreact(x).split([c.qk_dim, c.qk_dim, c.v_dim, c.v_dim], dim=-1)
        i, f = soft_cap(self.ifgate_preact(x), c.gate_soft_cap).split(c.num_heads, dim=-1)  # [B, S, H] each
        q, k, v = (t.unflatten(-1, (c.num_heads, -1)) for t in (q, k, v))  # [B, S, H, D]
        h, state = mlstm(q, k, v, i, f, initial_state=state, output_final_state=True, eps=c.eps,
                         chunk_size=runtime.chunk_size, backend=runtime.mlstm_backend, resets=resets,
                         inplace=inplace, mask=attention_mask)
        return self.out_proj(torch.sigmoid(o) * self.multihead_norm(h)), state


class LargeMLSTMBlock(nn.Module):
    """x + mLSTM(RMSNorm(x)), then x + FFN(RMSNorm(x))."""

    def __init__(self, config: xLSTMLargeConfig):
        super().__init__()
        norm = dict(eps=config.norm_eps, use_bias=config.use_bias, force_float32=config.norm_reduction_force_float32)
        self.norm_mlstm = RMSNorm(config.embedding_dim, **norm)
        self.mlstm_layer = LargeMLSTMLayer(config)
        self.norm_ffn = RMSNorm(config.embedding_dim, **norm)
        self.ffn = LargeFeedForward(config.embedding_dim, config.ffn_dim, use_bias=config.use_bias)

    def forward(self, x: torch.Tensor, state: mLSTMState | None, runtime: RuntimeOptions,
                resets: torch.Tensor | None = None, inplace: bool = False,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, mLSTMState]:
        """x [B, S, d] -> [B, S, d], new state. attention_mask [B, S] bool (True: a token) or None."""
        h, state = self.mlstm_layer(self.norm_mlstm(x), state, runtime, resets, inplace, attention_mask)
        x = x + h
        return x + self.ffn(self.norm_ffn(x)), state
