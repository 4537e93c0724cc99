"""Execution choices: never saved with a checkpoint, never change what a forward returns. Frozen: change them with
`replace()`, which runs the checks again (`model.runtime = model.runtime.replace(chunk_size=128)`)."""

import dataclasses
from dataclasses import InitVar, dataclass
from typing import Any

import torch

from ..ops.mlstm import BACKENDS as MLSTM_BACKENDS
from ..ops.slstm import BACKENDS as SLSTM_BACKENDS
from .base import require
from .dtypes import FLOAT_DTYPES


@dataclass(frozen=True)
class RuntimeOptions:
    """How a model runs.

    mlstm_backend: mLSTM implementation, one of `ops.mlstm.BACKENDS` ("auto" picks the fastest for the device).
    slstm_backend: sLSTM implementation, one of `ops.slstm.BACKENDS`.
    chunk_size: tokens per chunk of the chunkwise form.
    state_dtype: dtype of the recurrent state carried between calls (a torch.dtype, or its name in
        `config.dtypes.FLOAT_DTYPES`).
    max_inference_chunksize: without autograd, longer inputs run through all blocks in segments of this
        many tokens, carrying the state, which bounds activation memory (same result).
    backend: the former name of mlstm_backend, still accepted as a keyword (and readable as an attribute).
    """

    mlstm_backend: str = "auto"
    slstm_backend: str = "auto"
    chunk_size: int = 64
    state_dtype: torch.dtype = torch.float32
    max_inference_chunksize: int = 16384
    backend: InitVar[str | None] = None

    def __post_init__(self, backend: str | None) -> None:
        if backend is not None:
            require(self.mlstm_backend in ("auto", backend), f"backend={backend!r} is the former name of "
                    f"mlstm_backend, which says {self.mlstm_backend!r}; give one of them")
            object.__setattr__(self, "mlstm_backend", backend)
        require(self.mlstm_backend in MLSTM_BACKENDS,
                f"unknown mlstm_backend {self.mlstm_backend!r}; expected one of {MLSTM_BACKENDS}")
        require(self.slstm_backend in SLSTM_BACKENDS,
                f"unknown slstm_backend {self.slstm_backend!r}; expected one of {SLSTM_BACKENDS}")
        if isinstance(self.state_dtype, str):
            require(self.state_dtype in FLOAT_DTYPES,
                    f"unknown state_dtype {self.state_dtype!r}; expected one of {list(FLOAT_DTYPES)}")
            object.__setattr__(self, "state_dtype", FLOAT_DTYPES[self.state_dtype])
        require(isinstance(self.state_dtype, torch.dtype) and self.state_dtype.is_floating_point,
                f"state_dtype must be a floating-point torch.dtype, got {self.state_dtype!r}")
        for name in ("chunk_size", "max_inference_chunksize"):
            value = getattr(self, name)
            require(isinstance(value, int) and value >= 1, f"{name} must be a positive int, got {value!r}")

    def replace(self, **changes: Any) -> "RuntimeOptions":
        """A copy with `changes` (field names, or `backend` for mlstm_backend), checked as on construction."""
        if "backend" in changes:
            changes["mlstm_backend"] = changes.pop("backend")
        names = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(names))
        require(not unknown, f"unknown runtime option(s) {unknown}; expected some of {sorted(names)}")
        return RuntimeOptions(**{**{name: getattr(self, name) for name in names}, **changes})

    @classmethod
    def from_config_dict(cls, d: dict[str, Any]) -> "RuntimeOptions":
        """Map the execution fields of an official or Hugging Face config onto runtime options.

        Kernel names ("chunkwise--triton_xl_chunk", ...) map to "auto": this library picks its own kernels.
        "parallel--*" maps to the quadratic reference. Mode and autocast fields have no equivalent: every
        mode returns the state, and autocast is the caller's choice.
        """
        options = {}
        if str(d.get("chunkwise_kernel", "")).startswith("parallel--"):
            options["mlstm_backend"] = "naive_parallel"
        if "chunk_size" in d:
            options["chunk_size"] = int(d["chunk_size"])
        if "inference_state_dtype" in d:
            options["state_dtype"] = d["inference_state_dtype"]
        if "max_inference_chunksize" in d:
            options["max_inference_chunksize"] = int(d["max_inference_chunksize"])
        return cls(**options)


# Read-only alias of the former field name. Set after the class body: there, the name `backend` is the InitVar
# (the keyword alias), whose class attribute would otherwise read None.
RuntimeOptions.backend = property(lambda self: self.mlstm_backend, doc="The former name of mlstm_backend.")
