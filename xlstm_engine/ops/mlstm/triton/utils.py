"""Host helpers shared by the Triton sequence paths (chunkwise.py, short.py): the input check and the dot
precision that every sequence kernel takes."""

import os

import torch

from ..limits import TRITON_CHUNK_SIZES, triton_head_dims_fit

# tl.dot's input_precision per input dtype: exact products for fp32/fp64, tensor cores (fp32 accumulation) for half
PRECISIONS = {torch.float32: "ieee", torch.float64: "ieee", torch.bfloat16: "tf32", torch.float16: "tf32"}


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk_size: int = 64) -> None:
    """Raise unless the Triton kernels take these tensors, head dims, chunk size and dtypes."""
    if not q.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"the Triton mLSTM runs on CUDA tensors, got q on {q.device} (TRITON_INTERPRET=1 runs it "
                         "on the CPU, slowly, for tests)")
    DK, DV = q.shape[-1], v.shape[-1]
    if not triton_head_dims_fit(DK, DV):
        raise ValueError(f"the Triton mLSTM needs head dims that are multiples of 16 up to 512, got DK={DK}, DV={DV}")
    if chunk_size not in TRITON_CHUNK_SIZES:
        raise ValueError(f"the Triton mLSTM needs chunk_size in {TRITON_CHUNK_SIZES}, got {chunk_size}")
    if q.dtype not in PRECISIONS or not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share one float dtype, got {q.dtype}, {k.dtype}, {v.dtype}")


def dot_args(dtype: torch.dtype) -> dict:
    """The compile-time arguments of `_dot` for q, k, v of this dtype: PRECISION (tl.dot's input_precision) and
    DOT_F32 (upcast bf16 operands first: Triton's interpreter gets bf16 dots wrong)."""
    return dict(PRECISION=PRECISIONS[dtype],
                DOT_F32=dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1")
