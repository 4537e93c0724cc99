import os

import pytest
import torch
import torch.utils._device

# without a GPU, Triton kernels run in Triton's interpreter on CPU tensors (set before triton is imported)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# `with torch.device(...)` recognizes factory functions from a cached set; build it from the real ones before
# the NaN poisoning below replaces torch.empty
torch.utils._device._device_constructors()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(42)


@pytest.fixture(autouse=True)
def _poison_empty(monkeypatch):
    """Fill fresh float allocations with NaN, so code that reads memory it never wrote fails loudly."""

    def poisoned(fn):
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            if out.is_floating_point() and out.device.type != "meta":
                out.fill_(float("nan"))
            return out

        return wrapper

    monkeypatch.setattr(torch, "empty", poisoned(torch.empty))
    monkeypatch.setattr(torch, "empty_like", poisoned(torch.empty_like))
