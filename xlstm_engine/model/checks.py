"""Input checks shared by the models: errors that name the value and what was expected."""

import torch

# What nn.Embedding takes. A bool or uint8 tensor is more likely a mask or raw bytes than token ids, so it is
# refused rather than cast.
TOKEN_ID_DTYPES = (torch.int64, torch.int32)


def check_token_ids(input_ids: torch.Tensor, vocab_size: int, name: str = "input_ids") -> tuple[int, int]:
    """Raise unless `input_ids` is an int64/int32 tensor [B, S], B >= 1, S >= 1, with ids in [0, vocab_size).
    Returns (B, S)."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in TOKEN_ID_DTYPES:
        got = f"dtype {input_ids.dtype}" if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise TypeError(f"{name} must be an integer tensor of token ids [B, S] (torch.int64 or torch.int32), "
                        f"got {got}")
    if input_ids.ndim != 2 or 0 in input_ids.shape:
        raise ValueError(f"{name} must have shape [B, S] with B >= 1 and S >= 1, got {tuple(input_ids.shape)}")
    low, high = (x.item() for x in torch.aminmax(input_ids))
    if low < 0 or high >= vocab_size:
        raise ValueError(f"token ids must be in [0, {vocab_size}) (vocab_size), got values in [{low}, {high}]")
    return input_ids.shape


def check_hidden(x: torch.Tensor, embedding_dim: int, name: str = "x") -> tuple[int, int]:
    """Raise unless `x` is a floating-point tensor [B, S, embedding_dim], B >= 1, S >= 1. Returns (B, S)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = f"dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"{name} must be a float tensor [B, S, {embedding_dim}], got {got}")
    if x.ndim != 3 or x.shape[-1] != embedding_dim or 0 in x.shape:
        raise ValueError(f"{name} must be a float tensor [B, S, {embedding_dim}] with B >= 1 and S >= 1, "
                         f"got {tuple(x.shape)}")
    return x.shape[:2]


def check_state_type(state, expected: type, where: str, device: torch.device | None = None) -> None:
    """Raise TypeError unless `state` is an `expected` (a state NamedTuple) whose tensors are floating point, and
    ValueError unless they are on `device` (when given). Shapes are left to the ops' checks.

    A plain tuple or list is refused even with the right entries: only the named type says which tensor is which.
    Entries that are None (no conv) or nested states (checked by their own call) are skipped here.
    """
    if not isinstance(state, expected):
        fields = ", ".join(expected._fields)
        wrap = f"; wrap it as {expected.__name__}(*{where})" if isinstance(state, tuple | list) else ""
        raise TypeError(f"{where} must be an {expected.__name__} ({fields}), got a {type(state).__name__}{wrap}")
    for name, value in zip(expected._fields, state, strict=True):
        if value is None or isinstance(value, tuple):
            continue
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            got = f"dtype {value.dtype}" if isinstance(value, torch.Tensor) else type(value).__name__
            raise TypeError(f"{where}.{name} must be a floating-point tensor, got {got}")
        if device is not None and value.device != device:
            raise ValueError(f"{where}.{name} is on {value.device}; expected {device}, the device of the input")


def check_logits_to_keep(logits_to_keep) -> None:
    """Raise unless `logits_to_keep` is an int >= 0 (0: logits of every position)."""
    if not isinstance(logits_to_keep, int) or isinstance(logits_to_keep, bool) or logits_to_keep < 0:
        raise ValueError(f"logits_to_keep must be an int >= 0, got {logits_to_keep!r}")


def check_inplace(state, inplace) -> None:
    """Raise unless `inplace` is a bool, and a state to write into is given when it is True."""
    if not isinstance(inplace, bool):
        raise TypeError(f"inplace must be True or False, got {inplace!r}")
    if inplace and state is None:
        raise ValueError("inplace=True writes the new state into the given state, but state is None; allocate "
                         "one with model.allocate_state(batch_size)")
