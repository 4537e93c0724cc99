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


def copy_state_(target, source):
    """Write every tensor of the state `source` into the tensor at the same place in `target` (the same nesting of
    tuples, None where there is no conv), cast to its dtype; a tensor that already is the target's is skipped.
    Returns `target`."""
    if isinstance(target, torch.Tensor):
        if source is not target:
            target.copy_(source)
        return target
    if target is not None:
        for target_part, source_part in zip(target, source, strict=True):
            copy_state_(target_part, source_part)
    return target
