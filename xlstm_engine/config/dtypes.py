"""Floating-point dtypes by name: the one table that runtime options, training configs and the command line read
(names as in `torch`, e.g. "bfloat16"). A narrower choice (no float64 for autocast) is a subset of its keys."""

import torch

FLOAT_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64,
}
