"""Building blocks shared by the models: soft-capping, norms with float32 reductions, the SwiGLU FFN."""

import torch
import torch.nn.functional as F
from torch import nn


def soft_cap(x: torch.Tensor, cap: float | None) -> torch.Tensor:
    """cap * tanh(x / cap): smooth clipping to (-cap, cap). Identity when cap is None."""
    return x if cap is None else cap * torch.tanh(x / cap)


class RMSNorm(nn.Module):
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


class MultiHeadLayerNorm(nn.Module):
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


class FeedForward(nn.Module):
    """SwiGLU: W_down(SiLU(W_gate x) * (W_up x)), with W_gate and W_up stacked in one projection."""

    def __init__(self, dim: int, hidden_dim: int, use_bias: bool = False):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.proj_up_gate_z = nn.Linear(dim, 2 * hidden_dim, bias=use_bias)  # rows: [gate | up]
        self.proj_down = nn.Linear(hidden_dim, dim, bias=use_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, z = self.proj_up_gate_z(x).split(self.hidden_dim, dim=-1)
        return self.proj_down(F.silu(gate) * z)
