"""Recurrent states of the models: named tuples of tensors, one entry per block."""

from typing import NamedTuple

import torch

from ..ops.mlstm import mLSTMState
from ..ops.slstm import sLSTMState


class mLSTMLayerState(NamedTuple):
    """State of a NeurIPS mLSTM layer: the causal conv's last K-1 inputs [B, K-1, I] (None without a conv), and
    the mLSTM memory."""

    conv: torch.Tensor | None
    cell: mLSTMState


class sLSTMLayerState(NamedTuple):
    """State of an sLSTM layer: the causal conv's last K-1 inputs [B, K-1, E] (None without a conv), and the
    sLSTM cell state."""

    conv: torch.Tensor | None
    cell: sLSTMState


xLSTMLargeState = tuple[mLSTMState, ...]  # one (C, n, m) per block
xLSTMStackState = tuple[mLSTMLayerState | sLSTMLayerState, ...]  # one per block

