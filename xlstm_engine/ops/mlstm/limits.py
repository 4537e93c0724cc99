"""What the Triton mLSTM kernels take, as plain values: no triton import (triton is optional), so that the
dispatcher can decide whether "auto" takes the kernels before it imports them, and the kernels' host code checks
its inputs against the same numbers."""

SHORT_PROMPT = 64  # up to this many tokens without autograd, the Triton path is one launch (triton/short.py)
TRITON_CHUNK_SIZES = (16, 32, 64, 128)


def triton_head_dims_fit(DK: int, DV: int) -> bool:
    """Whether the Triton kernels take these head dims: multiples of 16 up to 512."""
    return DK % 16 == 0 and DV % 16 == 0 and max(DK, DV) <= 512
