"""Pre-norm residual xLSTM blocks: x + Layer(LN(x)), then (sLSTM blocks) x + FFN(LN(x))."""

import torch
from torch import nn

from ...config import RuntimeOptions
from ...config.neurips import mLSTMBlockConfig, sLSTMBlockConfig
from ..state import copy_state_, mLSTMLayerState, sLSTMLayerState
from .components import GatedFeedForward, LayerNorm
from .mlstm_layer import mLSTMLayer
from .slstm_layer import sLSTMLayer


class xLSTMBlock(nn.Module):
    """Parameter names as the official xLSTMBlock: xlstm_norm, xlstm, ffn_norm, ffn."""

    def __init__(self, config: mLSTMBlockConfig | sLSTMBlockConfig):
        super().__init__()
        self.config = config
        is_slstm = isinstance(config, sLSTMBlockConfig)
        layer_config = config.slstm if is_slstm else config.mlstm
        E = layer_config.embedding_dim
        self.xlstm_norm = LayerNorm(E)
        self.xlstm = sLSTMLayer(layer_config) if is_slstm else mLSTMLayer(layer_config)
        ff = config.feedforward if is_slstm else None
        if ff is not None:
            self.ffn_norm = LayerNorm(E)
            self.ffn = GatedFeedForward(E, ff._proj_up_dim, ff.act_fn, ff.bias, ff.dropout)
        else:
            self.ffn_norm = self.ffn = None

    def forward(self, x: torch.Tensor, state: mLSTMLayerState | sLSTMLayerState | None, runtime: RuntimeOptions,
                resets: torch.Tensor | None = None, inplace: bool = False, attention_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, mLSTMLayerState | sLSTMLayerState]:
        """x [B, S, E] -> [B, S, E], new layer state (with inplace, written into the tensors of `state`).
        attention_mask [B, S] bool (True: a token) or None: the layer's states hold still at pads."""
        if isinstance(self.xlstm, mLSTMLayer):
            h, state = self.xlstm(self.xlstm_norm(x), state, runtime, resets, inplace, attention_mask)
        else:  # the sLSTM op returns a new state (it has no in-place mode): copied into the given tensors
            h, new_state = self.xlstm(self.xlstm_norm(x), state, runtime, resets, attention_mask)
            state = copy_state_(state, new_state) if inplace else new_state
        x = x + h
        if self.ffn is not None:
            x = x + self.ffn(self.ffn_norm(x))
        return x, state

    def reset_parameters(self) -> None:
        self.xlstm.reset_parameters()
        self.xlstm_norm.reset_parameters()
        if self.ffn is not None:
            self.ffn.reset_parameters(self.xlstm.config.embedding_dim, self.config._num_blocks)
            self.ffn_norm.reset_parameters()
