"""The NeurIPS 2024 xLSTM: mLSTM and sLSTM blocks, the block stack and the language model."""

from .blocks import xLSTMBlock
from .mlstm_layer import mLSTMLayer
from .slstm_layer import convert_slstm_state_dict, sLSTMLayer
from .stack import xLSTMBlockStack, xLSTMLMModel

__all__ = ["convert_slstm_state_dict", "mLSTMLayer", "sLSTMLayer", "xLSTMBlock", "xLSTMBlockStack", "xLSTMLMModel"]
