"""xLSTM Large, the xLSTM-7B architecture: layers.py (norms, FFN, mLSTM layer, block), model.py (backbone, LM)."""

from .layers import LargeFeedForward, LargeMLSTMBlock, LargeMLSTMLayer, LargeMultiHeadLayerNorm, RMSNorm, soft_cap
from .model import xLSTMLarge, xLSTMLargeBackbone

__all__ = ["LargeFeedForward", "LargeMLSTMBlock", "LargeMLSTMLayer", "LargeMultiHeadLayerNorm", "RMSNorm", "soft_cap",
           "xLSTMLarge", "xLSTMLargeBackbone"]
