"""Building blocks of the NeurIPS xLSTM, with the official parameter names and layouts.

Initialization follows the official recipe (model/README.md, "NeurIPS initialization"): `small_init`
N(0, sqrt(2 / (5 E))) and `wang_init` N(0, 2 / L / sqrt(E)), both on the model's embedding dim E.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..norm import Norm


def small_init_(weight: torch.Tensor, dim: int) -> torch.Tensor:
    return nn.init.normal_(weight, std=math.sqrt(2 / (5 * dim)))


def wang_init_(weight: torch.Tensor, dim: int, num_blocks: int) -> torch.Tensor:
    return nn.init.normal_(weight, std=2 / num_blocks / math.sqrt(dim))


class LayerNorm(Norm):
    """LayerNorm (eps 1e-5) whose stored weight is an offset: the scale is 1 + weight."""

    def __init__(self, dim: int, weight: bool = True, bias: bool = False, eps: float = 1e-5):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.zeros(dim)) if weight else None
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def scale(self) -> torch.Tensor | None:
        return None if self.weight is None else 1.0 + self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (self.dim,), weight=self.scale(), bias=self.bias, eps=self.eps)

    def reset_parameters(self) -> None:
        for p in (self.weight, self.bias):
            if p is not None:
                nn.init.zeros_(p)


class MultiHeadLayerNorm(LayerNorm):
    """Group norm with one group per head: [B, S, H, D] -> [B, S, H * D], normalized over each head's D."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, S, H, D = x.shape
        y = F.group_norm(x.reshape(B * S, H * D), num_groups=H, weight=self.scale(), bias=self.bias, eps=self.eps)
        return y.view(B, S, H * D)


class LinearHeadwiseExpand(nn.Module):
    """Block-diagonal linear map: weight [H, D_out, D_in], y[..., h, o] = sum_d W[h, o, d] x[..., h, d] (+ bias)."""

    def __init__(self, in_features: int, num_heads: int, bias: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.weight = nn.Parameter(torch.empty(num_heads, in_features // num_heads, in_features // num_heads))
        self.bias = nn.Parameter(torch.zeros(in_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("...hd,hod->...ho", x.unflatten(-1, (self.num_heads, -1)), self.weight).flatten(-2)
        return y if self.bias is None else y + self.bias

    def reset_parameters(self, dim: int) -> None:
        small_init_(self.weight, dim)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class CausalConv1d(nn.Module):
    """Depthwise causal convolution over time, [B, S, D] -> [B, S, D], that can continue from a state.

    The state is the last K - 1 inputs [B, K - 1, D]; zeros stand for "no history". The parameters sit in
    `self.conv` (an nn.Conv1d) so that the state_dict keys are the official `conv1d.conv.weight` / `.bias`.
    """

    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(dim, dim, kernel_size, groups=dim, bias=True)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None, resets: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, S, D], state [B, K-1, D] or None -> y [B, S, D], new state [B, K-1, D].

        resets [B, S] (bool, optional): a document starts at these tokens; no output sees inputs (or state)
        from before the start of its document, and the new state holds only the last document's inputs.
        mask [B, S] (bool, optional): False marks a pad, which the conv skips: the output at a real position sees
        the last K-1 real inputs before it (the state where there are fewer), and the new state is the last K-1 real
        inputs (with the state in front where there are fewer). Outputs at pads are finite but unspecified.
        """
        history = self.kernel_size - 1
        x = F.pad(x, (0, 0, history, 0)) if state is None else torch.cat([state.to(x.dtype), x], dim=1)
        if mask is None:
            return self._convolve(x, resets)
        # Each row's pads move to its front, stably (ahead of the state, which counts as real): the real inputs then
        # follow the state without a gap, and a pad meets only pads. dest: where each input goes; order: its inverse.
        B, S = mask.shape
        real = torch.cat([mask.new_ones(B, history), mask], dim=1)  # [B, K-1+S]
        pads = (~real).sum(1, keepdim=True)
        dest = torch.where(real, pads + real.cumsum(1) - 1, (~real).cumsum(1) - 1)
        order = torch.empty_like(dest).scatter_(1, dest, torch.arange(S + history, device=dest.device).expand_as(dest))
        compact = x.gather(1, order[..., None].expand_as(x))
        if resets is not None:
            resets = torch.cat([resets.new_zeros(B, history), resets], dim=1).gather(1, order)
        # from a zero history: outputs for every position of `compact` (the state's included), in compact order
        y, new_state = self._convolve(F.pad(compact, (0, 0, history, 0)), resets)
        return y.gather(1, dest[:, history:, None].expand(-1, -1, y.shape[-1])), new_state

    def _convolve(self, x: torch.Tensor, resets: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, K-1+S, D] (the history, then the inputs), resets [B, S] or None -> y [B, S, D], new state."""
        history = self.kernel_size - 1
        if resets is None:
            y = F.conv1d(x.transpose(1, 2), self.conv.weight, self.conv.bias, groups=self.conv.groups)
            # a copy, not a view: a view would keep the whole padded input alive with the state
            return y.transpose(1, 2), x[:, x.shape[1] - history:].clone()
        S = resets.shape[1]
        # distance of each position (history included) to the start of its document; "far" without a reset
        position = torch.arange(-history, S, device=x.device)
        far = -(2 * self.kernel_size + S)  # a "start" before all history
        start = torch.where(resets, position[history:], far).cummax(-1).values  # [B, S]
        start = torch.cat([start.new_full((start.shape[0], history), far), start], dim=1)
        since_start = position - start  # [B, K-1+S]
        w = self.conv.weight[:, 0]  # [D, K]; w[:, K-1] multiplies the current input
        y = self.conv.bias.expand(*x.shape[:1], S, -1)
        # inputs of other documents are selected away, not multiplied by 0: 0 * NaN is NaN
        for lag in range(self.kernel_size):  # y_t += w_lag x_{t-lag}, if x_{t-lag} is in t's document
            valid = since_start[:, history:] >= lag
            y = y + torch.where(valid[..., None], w[:, history - lag] * x[:, history - lag:history - lag + S], 0.0)
        last_start = start[:, -1:]  # the last document's start; older history is dropped from the state
        new_state = torch.where((position[S:] >= last_start)[..., None], x[:, S:], 0.0)
        return y, new_state

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()  # PyTorch's default, as the official code (which never redraws it)


ACTIVATIONS = {
    "gelu": F.gelu,
    "relu": F.relu,
    "relu^2": lambda x: F.relu(x).square(),
    "sigmoid": torch.sigmoid,
    "swish": F.silu,
    "selu": F.selu,
}


class GatedFeedForward(nn.Module):
    """W_down(act(g) * u) with [g | u] = W_up x (g the first half), then dropout."""

    def __init__(self, dim: int, hidden_dim: int, act_fn: str, bias: bool, dropout: float):
        super().__init__()
        self.hidden_dim, self.act = hidden_dim, ACTIVATIONS[act_fn]
        self.proj_up = nn.Linear(dim, 2 * hidden_dim, bias=bias)
        self.proj_down = nn.Linear(hidden_dim, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.proj_up(x).split(self.hidden_dim, dim=-1)
        return self.dropout(self.proj_down(self.act(gate) * up))

    def reset_parameters(self, dim: int, num_blocks: int) -> None:
        small_init_(self.proj_up.weight, dim)
        wang_init_(self.proj_down.weight, dim, num_blocks)
        for linear in (self.proj_up, self.proj_down):
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)
