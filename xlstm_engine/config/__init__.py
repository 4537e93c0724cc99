"""Architecture configs: what a checkpoint saves. Execution choices live in `model.runtime.RuntimeOptions`."""

from .large import OFFICIAL_RUNTIME_KEYS, PRESETS, WEIGHT_MODES, round_up_to_multiple, xLSTMLargeConfig
from .neurips import (
    FeedForwardConfig,
    mLSTMBlockConfig,
    mLSTMLayerConfig,
    sLSTMBlockConfig,
    sLSTMLayerConfig,
    xLSTMBlockStackConfig,
    xLSTMLMModelConfig,
)

__all__ = [
    "OFFICIAL_RUNTIME_KEYS", "PRESETS", "WEIGHT_MODES", "FeedForwardConfig", "mLSTMBlockConfig", "mLSTMLayerConfig",
    "round_up_to_multiple", "sLSTMBlockConfig", "sLSTMLayerConfig", "xLSTMBlockStackConfig", "xLSTMLMModelConfig",
    "xLSTMLargeConfig",
]
