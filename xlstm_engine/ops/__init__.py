"""Sequence-mixing ops. Each op has one dispatch entry and a naive reference beside its fast paths."""

from .mlstm import mlstm, mLSTMState
from .slstm import slstm, sLSTMState

__all__ = ["mLSTMState", "mlstm", "sLSTMState", "slstm"]
