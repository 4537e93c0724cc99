"""Triton mLSTM kernels: the chunkwise forward and backward on the GPU (and, with TRITON_INTERPRET=1, on the CPU
for tests), the fused decode step and the one-launch short prompt.

    chunkwise.py   host functions, autograd Function and `mlstm_triton` (the sequence op, with gradients)
    forward.py     kernels of the chunkwise forward       backward.py   kernels of the chunkwise backward
    gates.py       the gate kernel and the gate-side PyTorch of both passes (`ChunkGates`)
    short.py       `mlstm_short_triton`: up to SHORT_PROMPT tokens in one launch, no autograd
    step.py        `mlstm_step_triton`: one decode step, in place if asked
    utils.py       the input check and dot precision shared by the sequence paths

Imports go one way: the dispatcher (ops/mlstm/__init__.py) imports this package; nothing here imports the
dispatcher. This file only re-exports.
"""

from .chunkwise import mlstm_triton
from .short import mlstm_short_triton
from .step import mlstm_step_triton
from .utils import check_inputs

__all__ = ["check_inputs", "mlstm_short_triton", "mlstm_step_triton", "mlstm_triton"]
