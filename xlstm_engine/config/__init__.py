"""Configs: the architecture (what a checkpoint saves: large.py, neurips.py), the execution choices that are never
saved (runtime.py: RuntimeOptions), and the one table of dtype names (dtypes.py)."""

from .dtypes import FLOAT_DTYPES
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
from .runtime import RuntimeOptions

__all__ = [
    "FLOAT_DTYPES", "OFFICIAL_RUNTIME_KEYS", "PRESETS", "WEIGHT_MODES", "FeedForwardConfig", "RuntimeOptions",
    "mLSTMBlockConfig", "mLSTMLayerConfig", "round_up_to_multiple", "sLSTMBlockConfig", "sLSTMLayerConfig",
    "xLSTMBlockStackConfig", "xLSTMLMModelConfig", "xLSTMLargeConfig",
]
