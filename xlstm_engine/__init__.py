"""xlstm-engine: the complete, fast and correct xLSTM library for PyTorch."""

__version__ = "0.1.0"
