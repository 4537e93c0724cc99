"""The sLSTM layer: causal conv, block-diagonal gate projections, the sLSTM cell, per-head group norm.

    x_c = SiLU(conv(x));  (i, f) from x_c;  (z, o) from x;  h = sLSTM(gates + bias, R);  y = GroupNorm(Dropout(h))

The official layer names its input-gate projection `fgate` and its forget-gate projection `igate` (kept for
checkpoint compatibility, NX-AI/xlstm#98). This one keeps those module names, since they are the state_dict keys,
and maps them to the gates in one place (sLSTMLayer.__init__).

The official sLSTM stores the recurrent kernel and the bias in one of two weight layouts, named after its two
backends (ops/slstm/README.md, "Official weight layouts"):
    vanilla: _recurrent_kernel_ [H, 4D, D] with [h, g*D + j, k];  _bias_ [g*E + h*D + d]
    cuda:    _recurrent_kernel_ [H, D, 4D] with [h, k, g*D + j];  _bias_ [h*4D + g*D + d]
Both hold the canonical R[h, k, g, j] (h_{t-1}[k] -> gate g, unit j) and b[g, h, d]. A cell stores the weight
layout of its config (`sLSTMLayerConfig.weight_layout`, the official field `backend`), so its state_dict equals
the official one; loading the other layout converts it (the kernel's shape tells which one it is), and
`convert_slstm_state_dict` converts explicitly. Either layout runs the same PyTorch sLSTM.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...config import RuntimeOptions
from ...config.neurips import SLSTM_WEIGHT_LAYOUTS, sLSTMLayerConfig
from ...ops.slstm import slstm
from ..state import sLSTMLayerState
from .components import CausalConv1d, LinearHeadwiseExpand, MultiHeadLayerNorm

GATES = 4  # i, f, z, o


def detect_weight_layout(kernel_shape: torch.Size) -> tuple[str, int, int]:
    """(weight layout, heads, head dim) of a stored `_recurrent_kernel_`, from its shape."""
    H, a, b = kernel_shape
    if a == GATES * b:
        return "vanilla", H, b
    if b == GATES * a:
        return "cuda", H, a
    raise ValueError(f"_recurrent_kernel_ of shape {tuple(kernel_shape)} is neither [H, 4D, D] (vanilla) "
                     "nor [H, D, 4D] (cuda)")


def canonical_recurrent_kernel(stored: torch.Tensor, weight_layout: str) -> torch.Tensor:
    """Stored kernel -> R [H, D, 4, D] (a view)."""
    _, H, D = detect_weight_layout(stored.shape)
    if weight_layout == "cuda":
        return stored.view(H, D, GATES, D)
    return stored.view(H, GATES, D, D).permute(0, 3, 1, 2)


def canonical_bias(stored: torch.Tensor, weight_layout: str, num_heads: int) -> torch.Tensor:
    """Stored bias [4 E] -> b [4, H, D] (a view)."""
    if weight_layout == "cuda":
        return stored.view(num_heads, GATES, -1).transpose(0, 1)
    return stored.view(GATES, num_heads, -1)


def to_weight_layout(R: torch.Tensor, b: torch.Tensor, weight_layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical R [H, D, 4, D] and b [4, H, D] -> (stored kernel, stored bias [4 E]) in `weight_layout`."""
    H, D = R.shape[0], R.shape[1]
    if weight_layout == "cuda":
        return R.reshape(H, D, GATES * D), b.transpose(0, 1).reshape(-1)
    return R.permute(0, 2, 3, 1).reshape(H, GATES * D, D), b.reshape(-1)


def convert_slstm_state_dict(state_dict: dict[str, torch.Tensor], to: str) -> dict[str, torch.Tensor]:
    """A copy of `state_dict` with every sLSTM cell's `_recurrent_kernel_` and `_bias_` in the weight layout `to`
    ("vanilla" or "cuda"), whichever layout they are in."""
    if to not in SLSTM_WEIGHT_LAYOUTS:
        raise ValueError(f"to must be 'vanilla' or 'cuda' (a weight layout), got {to!r}")
    out = dict(state_dict)
    for key, kernel in state_dict.items():
        if not key.endswith("slstm_cell._recurrent_kernel_"):
            continue
        bias_key = key.removesuffix("_recurrent_kernel_") + "_bias_"
        if bias_key not in state_dict:
            raise KeyError(f"{key} has no matching {bias_key}")
        weight_layout, H, _ = detect_weight_layout(kernel.shape)
        R = canonical_recurrent_kernel(kernel, weight_layout)
        b = canonical_bias(state_dict[bias_key], weight_layout, H)
        out[key], out[bias_key] = to_weight_layout(R, b, to)
    return out


class sLSTMCell(nn.Module):
    """Holds the recurrent kernel and bias in the official weight layout `config.weight_layout`."""

    def __init__(self, config: sLSTMLayerConfig):
        super().__init__()
        self.config = config
        self.weight_layout = config.weight_layout
        H, D, E = config.num_heads, config.head_dim, config.embedding_dim
        shape = (H, D, GATES * D) if self.weight_layout == "cuda" else (H, GATES * D, D)
        self._recurrent_kernel_ = nn.Parameter(torch.empty(shape))
        self._bias_ = nn.Parameter(torch.empty(GATES * E))
        self._register_load_state_dict_pre_hook(self._convert_weight_layout)

    @property
    def recurrent_kernel(self) -> torch.Tensor:
        """R [H, D, 4, D]: R[h, k, g, j] maps h_{t-1}[h, k] to gate g, unit j."""
        return canonical_recurrent_kernel(self._recurrent_kernel_, self.weight_layout)

    @property
    def bias(self) -> torch.Tensor:
        """b [4, H, D], gates (i, f, z, o)."""
        return canonical_bias(self._bias_, self.weight_layout, self.config.num_heads)

    def _convert_weight_layout(self, state_dict, prefix, *args) -> None:
        """Load pre-hook: a kernel and bias stored in the other weight layout are converted to ours."""
        keys = (prefix + "_recurrent_kernel_", prefix + "_bias_")
        if not all(key in state_dict for key in keys) or state_dict[keys[0]].ndim != 3:
            return
        try:
            weight_layout = detect_weight_layout(state_dict[keys[0]].shape)[0]
        except ValueError:
            return  # load_state_dict reports the shape mismatch
        if weight_layout != self.weight_layout:
            converted = convert_slstm_state_dict({key: state_dict[key] for key in keys}, to=self.weight_layout)
            state_dict.update(converted)

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
        forget_bias = b[1]  # [H, D]: only the forget gate gets a nonzero bias
        if c.bias_init == "small_init":
            forget_bias.copy_(torch.linspace(3.0, 6.0, c.head_dim))
        elif c.bias_init == "powerlaw_blockdependent":
            ratio = c._block_idx / (c._num_blocks - 1) if c._num_blocks > 1 else 0.0
            # from +5 at unit 0 to -7 at the last unit; the official code divides 0 by 0 for D = 1 (we give +5)
            position = torch.arange(c.head_dim) / max(c.head_dim - 1, 1)
            forget_bias.copy_(-(-5.0 + 12.0 * position ** (0.3 + 1.3 * ratio)))


class sLSTMLayer(nn.Module):
    def __init__(self, config: sLSTMLayerConfig):
        super().__init__()
        self.config = config
        E, H = config.embedding_dim, config.num_heads
        if config.conv1d_kernel_size > 0:
            self.conv1d = CausalConv1d(E, config.conv1d_kernel_size)
        # The gate projections under the official module names, which are their state_dict keys. The official
        # layer swaps two of them (NX-AI/xlstm#98): `fgate` computes the INPUT gate and `igate` the FORGET gate.
        # This is the one place that maps the names to the gates; the code reaches them through _gate_projections.
        self.fgate = LinearHeadwiseExpand(E, H)  # input gate i
        self.igate = LinearHeadwiseExpand(E, H)  # forget gate f
        self.zgate = LinearHeadwiseExpand(E, H)  # cell input z
        self.ogate = LinearHeadwiseExpand(E, H)  # output gate o
        self.slstm_cell = sLSTMCell(config)
        self.group_norm = MultiHeadLayerNorm(E, weight=config.group_norm_weight)
        self.dropout = nn.Dropout(config.dropout)

    def _gate_projections(self) -> tuple[LinearHeadwiseExpand, ...]:
        """(input, forget, cell input, output): the op's gate order (i, f, z, o)."""
        return self.fgate, self.igate, self.zgate, self.ogate

    def forward(self, x: torch.Tensor, state: sLSTMLayerState | None, runtime: RuntimeOptions,
                resets: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, sLSTMLayerState]:
        """x [B, S, E] -> y [B, S, E], new state. resets [B, S]: documents start there (packed sequences).
        attention_mask [B, S] bool (True: a token) or None: the conv history and the cell state hold still at pads."""
        c = self.config
        conv_state, cell_state = (None, None) if state is None else state
        if c.conv1d_kernel_size > 0:
            x_c, conv_state = self.conv1d(x, conv_state, resets, attention_mask)
            x_c = F.silu(x_c)
        else:
            x_c = x
        W_i, W_f, W_z, W_o = (proj.weight for proj in self._gate_projections())  # [H, D, D] each
        heads = (c.num_heads, c.head_dim)
        # i and f from the conv branch, z and o from the input: [B, S, 2, H, D] each
        i_f = torch.einsum("bshd,ghod->bsgho", x_c.unflatten(-1, heads), torch.stack([W_i, W_f]))
        z_o = torch.einsum("bshd,ghod->bsgho", x.unflatten(-1, heads), torch.stack([W_z, W_o]))
        gates = torch.cat([i_f, z_o], dim=2) + self.slstm_cell.bias  # [B, S, 4, H, D]
        h, cell_state = slstm(gates, self.slstm_cell.recurrent_kernel, initial_state=cell_state,
                              output_final_state=True, function=c.function, backend=runtime.slstm_backend,
                              resets=resets, mask=attention_mask)
        return self.group_norm(self.dropout(h)), sLSTMLayerState(conv_state, cell_state)

    def reset_parameters(self) -> None:
        self.slstm_cell.reset_parameters()
        self.group_norm.reset_parameters()
        input_proj, forget_proj, cell_input_proj, output_proj = self._gate_projections()
        # in the official order (forget gate first), which decides the random numbers each one draws
        for proj in (forget_proj, input_proj, cell_input_proj, output_proj):
            proj.reset_parameters(dim=self.config.embedding_dim)
        if self.config.conv1d_kernel_size > 0:
            self.conv1d.reset_parameters()
