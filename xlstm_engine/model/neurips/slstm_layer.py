"""The sLSTM layer: causal conv, block-diagonal gate projections, the sLSTM cell, per-head group norm.

    x_c = SiLU(conv(x));  (i, f) from x_c;  (z, o) from x;  h = sLSTM(gates + bias, R);  y = GroupNorm(Dropout(h))

The official layer names its input-gate projection `fgate` and its forget-gate projection `igate` (kept for
checkpoint compatibility, NX-AI/xlstm#98); so does this one.

The official backends store the recurrent kernel and the bias in different layouts (spec xlstm_neurips.md §3.1):
    vanilla: _recurrent_kernel_ [H, 4D, D] with [h, g*D + j, k];  _bias_ [g*E + h*D + d]
    cuda:    _recurrent_kernel_ [H, D, 4D] with [h, k, g*D + j];  _bias_ [h*4D + g*D + d]
Both hold the canonical R[h, k, g, j] (h_{t-1}[k] -> gate g, unit j) and b[g, h, d]. A cell stores the layout of
its config's backend, so its state_dict equals the official one; loading the other layout converts it (the
kernel's shape tells which backend wrote it), and `convert_slstm_state_dict` does it explicitly.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...config.neurips import sLSTMLayerConfig
from ...ops.slstm import slstm
from ..runtime import RuntimeOptions
from ..state import sLSTMLayerState
from .components import CausalConv1d, LinearHeadwiseExpand, MultiHeadLayerNorm

GATES = 4  # i, f, z, o


def recurrent_kernel_layout(shape: torch.Size) -> tuple[str, int, int]:
    """(backend layout, heads, head dim) of a stored `_recurrent_kernel_`."""
    H, a, b = shape
    if a == GATES * b:
        return "vanilla", H, b
    if b == GATES * a:
        return "cuda", H, a
    raise ValueError(f"_recurrent_kernel_ of shape {tuple(shape)} is neither [H, 4D, D] (vanilla) "
                     "nor [H, D, 4D] (cuda)")


def canonical_recurrent_kernel(stored: torch.Tensor, layout: str) -> torch.Tensor:
    """Stored kernel -> R [H, D, 4, D] (a view)."""
    _, H, D = recurrent_kernel_layout(stored.shape)
    if layout == "cuda":
        return stored.view(H, D, GATES, D)
    return stored.view(H, GATES, D, D).permute(0, 3, 1, 2)


def canonical_bias(stored: torch.Tensor, layout: str, num_heads: int) -> torch.Tensor:
    """Stored bias -> b [4, H, D] (a view)."""
    if layout == "cuda":
        return stored.view(num_heads, GATES, -1).transpose(0, 1)
    return stored.view(GATES, num_heads, -1)


def store(R: torch.Tensor, b: torch.Tensor, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical R [H, D, 4, D] and b [4, H, D] -> (stored kernel, stored bias) in `layout`."""
    H, D = R.shape[0], R.shape[1]
    if layout == "cuda":
        return R.reshape(H, D, GATES * D), b.transpose(0, 1).reshape(-1)
    return R.permute(0, 2, 3, 1).reshape(H, GATES * D, D), b.reshape(-1)


def convert_slstm_state_dict(state_dict: dict[str, torch.Tensor], to: str) -> dict[str, torch.Tensor]:
    """A copy of `state_dict` with every sLSTM cell's `_recurrent_kernel_` and `_bias_` in the `to` layout
    ("vanilla" or "cuda"), whichever official backend wrote them."""
    if to not in ("vanilla", "cuda"):
        raise ValueError(f"to must be 'vanilla' or 'cuda', got {to!r}")
    out = dict(state_dict)
    for key, kernel in state_dict.items():
        if not key.endswith("slstm_cell._recurrent_kernel_"):
            continue
        bias_key = key.removesuffix("_recurrent_kernel_") + "_bias_"
        if bias_key not in state_dict:
            raise KeyError(f"{key} has no matching {bias_key}")
        layout, H, _ = recurrent_kernel_layout(kernel.shape)
        R, b = canonical_recurrent_kernel(kernel, layout), canonical_bias(state_dict[bias_key], layout, H)
        out[key], out[bias_key] = store(R, b, to)
    return out


class sLSTMCell(nn.Module):
    """Holds the recurrent kernel and bias in the official layout of `config.backend`."""

    def __init__(self, config: sLSTMLayerConfig):
        super().__init__()
        self.config = config
        self.layout = config.backend
        H, D, E = config.num_heads, config.head_dim, config.embedding_dim
        shape = (H, D, GATES * D) if self.layout == "cuda" else (H, GATES * D, D)
        self._recurrent_kernel_ = nn.Parameter(torch.empty(shape))
        self._bias_ = nn.Parameter(torch.empty(GATES * E))
        self._register_load_state_dict_pre_hook(self._convert_layout)

    @property
    def recurrent_kernel(self) -> torch.Tensor:
        """R [H, D, 4, D]: R[h, k, g, j] maps h_{t-1}[h, k] to gate g, unit j."""
        return canonical_recurrent_kernel(self._recurrent_kernel_, self.layout)

    @property
    def bias(self) -> torch.Tensor:
        """b [4, H, D]."""
        return canonical_bias(self._bias_, self.layout, self.config.num_heads)

    def _convert_layout(self, state_dict, prefix, *args) -> None:
        """Load pre-hook: a kernel and bias written by the other official backend are converted to ours."""
        keys = (prefix + "_recurrent_kernel_", prefix + "_bias_")
        if not all(key in state_dict for key in keys) or state_dict[keys[0]].ndim != 3:
            return
        try:
            layout = recurrent_kernel_layout(state_dict[keys[0]].shape)[0]
        except ValueError:
            return  # load_state_dict reports the shape mismatch
        if layout != self.layout:
            state_dict.update(convert_slstm_state_dict({key: state_dict[key] for key in keys}, to=self.layout))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        c = self.config
        bound = 1 / math.sqrt(c.embedding_dim)
        R, b = self.recurrent_kernel, self.bias
        if c.recurrent_weight_init == "zeros":
            R.zero_()
        else:
            R.uniform_(-bound, bound)
        if c.bias_init == "standard":
            b.uniform_(-bound, bound)
            return
        b.zero_()
        if c.bias_init == "small_init":
            b[1] = torch.linspace(3.0, 6.0, c.head_dim)
        elif c.bias_init == "powerlaw_blockdependent":
            ratio = c._block_idx / (c._num_blocks - 1) if c._num_blocks > 1 else 0.0
            # from +5 at unit 0 to -7 at the last unit; the official code divides 0 by 0 for D = 1 (we give +5)
            position = torch.arange(c.head_dim) / max(c.head_dim - 1, 1)
            b[1] = -(-5.0 + 12.0 * position ** (0.3 + 1.3 * ratio))


class sLSTMLayer(nn.Module):
    def __init__(self, config: sLSTMLayerConfig):
        super().__init__()
        self.config = config
        E, H = config.embedding_dim, config.num_heads
        if config.conv1d_kernel_size > 0:
            self.conv1d = CausalConv1d(E, config.conv1d_kernel_size)
        self.fgate = LinearHeadwiseExpand(E, H)  # the input gate (official naming)
        self.igate = LinearHeadwiseExpand(E, H)  # the forget gate
        self.zgate = LinearHeadwiseExpand(E, H)
        self.ogate = LinearHeadwiseExpand(E, H)
        self.slstm_cell = sLSTMCell(config)
        self.group_norm = MultiHeadLayerNorm(E, weight=config.group_norm_weight)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, state: sLSTMLayerState | None, runtime: RuntimeOptions,
                resets: torch.Tensor | None = None) -> tuple[torch.Tensor, sLSTMLayerState]:
        """x [B, S, E] -> y [B, S, E], new state. resets [B, S]: documents start there (packed sequences)."""
        c = self.config
        conv_state, cell_state = (None, None) if state is None else state
        if c.conv1d_kernel_size > 0:
            x_c, conv_state = self.conv1d(x, conv_state, resets)
            x_c = F.silu(x_c)
        else:
            x_c = x
        heads = (c.num_heads, c.head_dim)
        i_f = torch.einsum("bshd,ghod->bsgho", x_c.unflatten(-1, heads),
                           torch.stack([self.fgate.weight, self.igate.weight]))
        z_o = torch.einsum("bshd,ghod->bsgho", x.unflatten(-1, heads),
                           torch.stack([self.zgate.weight, self.ogate.weight]))
        gates = torch.cat([i_f, z_o], dim=2) + self.slstm_cell.bias  # [B, S, 4, H, D]
        h, cell_state = slstm(gates, self.slstm_cell.recurrent_kernel, initial_state=cell_state,
                              output_final_state=True, function=c.function, backend=runtime.slstm_backend,
                              resets=resets)
        return self.group_norm(self.dropout(h)), sLSTMLayerState(conv_state, cell_state)

    def reset_parameters(self) -> None:
        self.slstm_cell.reset_parameters()
        self.group_norm.reset_parameters()
        for proj in (self.igate, self.fgate, self.zgate, self.ogate):
            proj.reset_parameters(dim=self.config.embedding_dim)
        if self.config.conv1d_kernel_size > 0:
            self.conv1d.reset_parameters()
