from .neurips import xLSTMBlockStack, xLSTMLMModel
from .runtime import RuntimeOptions
from .state import mLSTMLayerState, sLSTMLayerState, xLSTMLargeState, xLSTMStackState
from .xlstm_large import xLSTMLarge

__all__ = ["RuntimeOptions", "mLSTMLayerState", "sLSTMLayerState", "xLSTMBlockStack", "xLSTMLMModel", "xLSTMLarge",
           "xLSTMLargeState", "xLSTMStackState"]
