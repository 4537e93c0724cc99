"""Execution choices: never saved with a checkpoint, never change what a forward returns."""

from dataclasses import dataclass, fields
from typing import Any

import torch

from ..ops.mlstm import BACKENDS
from ..ops.slstm import BACKENDS as SLSTM_BACKENDS

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


@dataclass
class RuntimeOptions:
    """How a model runs.

    backend: mLSTM implementation, one of `ops.mlstm.BACKENDS` ("auto" picks the fastest for the device).
    slstm_backend: sLSTM implementation, one of `ops.slstm.BACKENDS`.
    chunk_size: tokens per chunk of the chunkwise form.
    state_dtype: dtype of the recurrent state carried between calls.
    max_inference_chunksize: without autograd, longer inputs run through all blocks in segments of this
        many tokens, carrying the state, which bounds activation memory (same result).
    """

    backend: str = "auto"
    slstm_backend: str = "auto"
    chunk_size: int = 64
    state_dtype: torch.dtype = torch.float32
    max_inference_chunksize: int = 16384

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; expected one of {BACKENDS}")
        if self.slstm_backend not in SLSTM_BACKENDS:
            raise ValueError(f"unknown slstm_backend {self.slstm_backend!r}; expected one of {SLSTM_BACKENDS}")
        if isinstance(self.state_dtype, str):
            if self.state_dtype not in _DTYPES:
                raise ValueError(f"unknown state_dtype {self.state_dtype!r}; expected one of {list(_DTYPES)}")
            self.state_dtype = _DTYPES[self.state_dtype]
        if not isinstance(self.state_dtype, torch.dtype) or not self.state_dtype.is_floating_point:
            raise ValueError(f"state_dtype must be a floating-point torch.dtype, got {self.state_dtype!r}")
        for name in ("chunk_size", "max_inference_chunksize"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

    def replace(self, **changes: Any) -> "RuntimeOptions":
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown runtime option(s) {unknown}; expected some of {sorted(names)}")
        return RuntimeOptions(**{**{n: getattr(self, n) for n in names}, **changes})

    @classmethod
    def from_config_dict(cls, d: dict[str, Any]) -> "RuntimeOptions":
        """Map the execution fields of an official or Hugging Face config onto runtime options.

        Kernel names ("chunkwise--triton_xl_chunk", ...) map to "auto": this library picks its own kernels.
        "parallel--*" maps to the quadratic reference. Mode and autocast fields have no equivalent: every
        mode returns the state, and autocast is the caller's choice.
        """
        options = {}
        if str(d.get("chunkwise_kernel", "")).startswith("parallel--"):
            options["backend"] = "naive_parallel"
        if "chunk_size" in d:
            options["chunk_size"] = int(d["chunk_size"])
        if "inference_state_dtype" in d:
            options["state_dtype"] = d["inference_state_dtype"]
        if "max_inference_chunksize" in d:
            options["max_inference_chunksize"] = int(d["max_inference_chunksize"])
        return cls(**options)
