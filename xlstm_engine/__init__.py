"""xlstm-engine: the complete, fast and correct xLSTM library for PyTorch."""

from .checkpoint import CheckpointError
from .config import PRESETS, xLSTMLargeConfig
from .model import RuntimeOptions, xLSTMLarge, xLSTMLargeState
from .ops import mLSTMState

__version__ = "0.1.0"

__all__ = ["PRESETS", "CheckpointError", "RuntimeOptions", "mLSTMState", "xLSTMLarge", "xLSTMLargeConfig",
           "xLSTMLargeState"]
