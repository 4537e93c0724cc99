import functools
import os

import pytest
import torch
import torch.utils._device

# without a GPU, Triton kernels run in Triton's interpreter on CPU tensors (set before triton is imported)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# `with torch.device(...)` recognizes factory functions from a cached set; build it from the real ones before
# the NaN poisoning below replaces torch.empty and torch.empty_strided (the poisoned wrappers call the real ones,
# which the device context then sees)
torch.utils._device._device_constructors()

# Every way to get fresh, uninitialized memory from Python: the factories and the Tensor methods (the hand-written
# sLSTM backward allocates all its buffers with Tensor.new_empty). `torch.empty(..., out=t)` is poisoned too.
POISONED_FACTORIES = ("empty", "empty_like", "empty_strided", "empty_permuted")
POISONED_METHODS = ("new_empty", "new_empty_strided")


def _poisoned(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        out = fn(*args, **kwargs)
        if (out.is_floating_point() or out.is_complex()) and out.layout == torch.strided \
                and out.device.type != "meta":
            with torch.no_grad():  # also for requires_grad=True
                out.fill_(float("nan"))
        return out

    return wrapper


def _check_poisoning() -> None:
    """The guard itself: every patched allocation comes back NaN, and `with torch.device(...)` still places the
    factories' results (and the Tensor methods keep their source's device), so that it fails loudly, not silently,
    if a torch upgrade changes how these are dispatched."""
    like = torch.zeros(2, 3)
    fresh = dict(empty=torch.empty(2, 3), empty_like=torch.empty_like(like),
                 empty_strided=torch.empty_strided((2, 3), (1, 2)), empty_permuted=torch.empty_permuted((2, 3), (1, 0)),
                 new_empty=like.new_empty(2, 3), new_empty_strided=like.new_empty_strided((2, 3), (1, 2)))
    assert fresh.keys() == {*POISONED_FACTORIES, *POISONED_METHODS}
    for name, t in fresh.items():
        assert t.isnan().all(), f"the NaN poisoning of {name} does not work"
    assert torch.empty(2, dtype=torch.long).dtype == torch.long  # integer allocations are left alone
    with torch.device("meta"):
        placed = [torch.empty(2), torch.empty_strided((2,), (1,)), torch.empty_permuted((2, 3), (1, 0)),
                  torch.zeros(2)]
        assert all(t.device.type == "meta" for t in placed), "torch.device(...) no longer places the factories"
        assert like.new_empty(2).device.type == "cpu" and like.new_empty(2).isnan().all()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(42)


@pytest.fixture(autouse=True)
def _poison_empty(monkeypatch):
    """Fill fresh float allocations with NaN, so code that reads memory it never wrote fails loudly."""
    for name in POISONED_FACTORIES:
        monkeypatch.setattr(torch, name, _poisoned(getattr(torch, name)))
    for name in POISONED_METHODS:
        monkeypatch.setattr(torch.Tensor, name, _poisoned(getattr(torch.Tensor, name)))
    if not _CHECKED:
        _check_poisoning()
        _CHECKED.append(True)


_CHECKED = []  # _check_poisoning ran (once per session)
