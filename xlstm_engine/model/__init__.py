"""The two model families on one stateful contract (README.md here): xLSTM Large (large/) and the NeurIPS xLSTM
(neurips/), their state types (state.py) and input checks (checks.py)."""

from ..config import RuntimeOptions  # re-exported: its home was model/runtime.py before issue 12
from .large import xLSTMLarge
from .neurips import xLSTMBlockStack, xLSTMLMModel
from .norm import Norm
from .state import mLSTMLayerState, sLSTMLayerState, xLSTMLargeState, xLSTMStackState

__all__ = ["Norm", "RuntimeOptions", "mLSTMLayerState", "sLSTMLayerState", "xLSTMBlockStack", "xLSTMLMModel",
           "xLSTMLarge", "xLSTMLargeState", "xLSTMStackState"]
