from .runtime import RuntimeOptions
from .xlstm_large import mLSTMBlock, mLSTMLayer, xLSTMLarge, xLSTMLargeState

__all__ = ["RuntimeOptions", "mLSTMBlock", "mLSTMLayer", "xLSTMLarge", "xLSTMLargeState"]
