"""xlstm-engine: the complete, fast and correct xLSTM library for PyTorch."""

from .checkpoint import CheckpointError
from .config import (
    PRESETS,
    FeedForwardConfig,
    RuntimeOptions,
    mLSTMBlockConfig,
    mLSTMLayerConfig,
    sLSTMBlockConfig,
    sLSTMLayerConfig,
    xLSTMBlockStackConfig,
    xLSTMLargeConfig,
    xLSTMLMModelConfig,
)
from .model import xLSTMBlockStack, xLSTMLarge, xLSTMLargeState, xLSTMLMModel, xLSTMStackState
from .ops import mLSTMState, sLSTMState

__version__ = "0.1.0"

__all__ = [
    "PRESETS", "CheckpointError", "FeedForwardConfig", "RuntimeOptions", "mLSTMBlockConfig", "mLSTMLayerConfig",
    "mLSTMState", "sLSTMBlockConfig", "sLSTMLayerConfig", "sLSTMState", "xLSTMBlockStack", "xLSTMBlockStackConfig",
    "xLSTMLMModel", "xLSTMLMModelConfig", "xLSTMLarge", "xLSTMLargeConfig", "xLSTMLargeState", "xLSTMStackState",
]
