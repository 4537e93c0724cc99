"""The NeurIPS mLSTM layer (the pre-up-projection block body), on the chunkwise mLSTM op.

    [x_m | z] = proj_up(x);  x_c = SiLU(conv(x_m));  q, k = headwise(x_c);  v = headwise(x_m)
    h = GroupNorm(mLSTM(q, k, v, gates(q, k, v)));  y = Dropout(proj_down((h + skip * x_c) * SiLU(z)))

The official cell runs the quadratic form over a fixed `context_length`; this one runs the chunkwise form from
any state, so there is no length limit and memory is linear. Both use the recurrent stabilizer of the official
step form (m_0 = 0), which the official parallel form differs from only in the eps term (< 1e-6 relative).
"""

import torch
import torch.nn.functional as F
from torch import nn

from ...config import RuntimeOptions
from ...config.neurips import mLSTMLayerConfig
from ...ops.mlstm import mlstm
from ..state import mLSTMLayerState
from .components import CausalConv1d, LinearHeadwiseExpand, MultiHeadLayerNorm, small_init_, wang_init_


class mLSTMCell(nn.Module):
    """Gates from [q, k, v], the mLSTM memory, and a per-head group norm of its output."""

    def __init__(self, inner_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.igate = nn.Linear(3 * inner_dim, num_heads)
        self.fgate = nn.Linear(3 * inner_dim, num_heads)
        self.outnorm = MultiHeadLayerNorm(inner_dim, weight=True, bias=False)

    def forward(self, q, k, v, state, runtime: RuntimeOptions, resets=None, inplace: bool = False,
                attention_mask=None):
        """q, k, v [B, S, I] -> h [B, S, I], new mLSTMState (with inplace, `state`, written by the op).
        attention_mask [B, S] bool (True: a token) or None: the memory holds still at pads."""
        qkv = torch.cat([q, k, v], dim=-1)
        i, f = self.igate(qkv), self.fgate(qkv)  # [B, S, H]
        q, k, v = (t.unflatten(-1, (self.num_heads, -1)) for t in (q, k, v))  # [B, S, H, D]
        h, state = mlstm(q, k, v, i, f, initial_state=state, output_final_state=True,
                         chunk_size=runtime.chunk_size, backend=runtime.mlstm_backend, resets=resets,
                         inplace=inplace, mask=attention_mask)
        return self.outnorm(h), state

    def reset_parameters(self) -> None:
        self.outnorm.reset_parameters()
        nn.init.zeros_(self.fgate.weight)
        with torch.no_grad():
            self.fgate.bias.copy_(torch.linspace(3.0, 6.0, self.num_heads))
        nn.init.zeros_(self.igate.weight)
        nn.init.normal_(self.igate.bias, std=0.1)


class mLSTMLayer(nn.Module):
    def __init__(self, config: mLSTMLayerConfig):
        super().__init__()
        self.config = config
        dim, inner = config.embedding_dim, config.inner_dim
        self.proj_up = nn.Linear(dim, 2 * inner, bias=config.bias)
        num_proj_heads = inner // config.qkv_proj_blocksize
        self.q_proj = LinearHeadwiseExpand(inner, num_proj_heads, bias=config.bias)
        self.k_proj = LinearHeadwiseExpand(inner, num_proj_heads, bias=config.bias)
        self.v_proj = LinearHeadwiseExpand(inner, num_proj_heads, bias=config.bias)
        self.conv1d = CausalConv1d(inner, config.conv1d_kernel_size) if config.conv1d_kernel_size > 0 else None
        self.mlstm_cell = mLSTMCell(inner, config.num_heads)
        self.learnable_skip = nn.Parameter(torch.ones(inner))
        self.proj_down = nn.Linear(inner, dim, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, state: mLSTMLayerState | None, runtime: RuntimeOptions,
                resets: torch.Tensor | None = None, inplace: bool = False,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, mLSTMLayerState]:
        """x [B, S, E] -> y [B, S, E], new state. resets [B, S]: documents start there (packed sequences).
        inplace: the new state is written into the tensors of `state` (conv history and mLSTM memory).
        attention_mask [B, S] bool (True: a token) or None: the conv history and the memory hold still at pads."""
        conv_state, cell_state = (None, None) if state is None else state
        x_m, z = self.proj_up(x).split(self.config.inner_dim, dim=-1)
        if self.conv1d is None:  # the official layer cannot run without a conv; like its sLSTM: no activation
            x_c = x_m
        else:
            x_c, new_conv_state = self.conv1d(x_m, conv_state, resets, attention_mask)
            conv_state = conv_state.copy_(new_conv_state) if inplace else new_conv_state
            x_c = F.silu(x_c)
        h, cell_state = self.mlstm_cell(self.q_proj(x_c), self.k_proj(x_c), self.v_proj(x_m), cell_state, runtime,
                                         resets, inplace, attention_mask)
        h = (h + self.learnable_skip * x_c) * F.silu(z)
        return self.dropout(self.proj_down(h)), mLSTMLayerState(conv_state, cell_state)

    def reset_parameters(self) -> None:
        E = self.config.embedding_dim
        small_init_(self.proj_up.weight, E)
        wang_init_(self.proj_down.weight, E, self.config._num_blocks)
        for linear in (self.proj_up, self.proj_down):
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)
        nn.init.ones_(self.learnable_skip)
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            proj.reset_parameters(dim=E)  # the embedding dim, not the inner dim, as the official code
        if self.conv1d is not None:
            self.conv1d.reset_parameters()
        self.mlstm_cell.reset_parameters()
