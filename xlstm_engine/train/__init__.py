"""Training: `train(config)` on synthetic tasks or text, resumable, on one process or several (torchrun)."""

from .config import RunConfig, TrainingConfig, load_config
from .loop import TrainingError, train

__all__ = ["RunConfig", "TrainingConfig", "TrainingError", "load_config", "train"]
