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
from .generation import GenerationModel, PromptState, PromptStateError, StreamEvent, generate, prefill, stream
from .model import xLSTMBlockStack, xLSTMLarge, xLSTMLargeState, xLSTMLMModel, xLSTMStackState
from .ops import mLSTMState, sLSTMState

__version__ = "0.1.0"

__all__ = [
    "PRESETS", "CheckpointError", "FeedForwardConfig", "GenerationModel", "PromptState", "PromptStateError",
    "RuntimeOptions", "StreamEvent", "generate", "mLSTMBlockConfig", "mLSTMLayerConfig", "mLSTMState", "prefill",
    "sLSTMBlockConfig", "sLSTMLayerConfig", "sLSTMState", "stream", "xLSTMBlockStack", "xLSTMBlockStackConfig",
    "xLSTMLMModel", "xLSTMLMModelConfig", "xLSTMLarge", "xLSTMLargeConfig", "xLSTMLargeState", "xLSTMStackState",
]
