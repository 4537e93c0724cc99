"""Input checks shared by the models: errors that name the value and what was expected."""

import torch

from ..ops.checks import check_mask, check_resets

# What nn.Embedding takes. A bool or uint8 tensor is more likely a mask or raw bytes than token ids, so it is
# refused rather than cast.
TOKEN_ID_DTYPES = (torch.int64, torch.int32)


def check_token_ids(input_ids: torch.Tensor, vocab_size: int, name: str = "input_ids") -> tuple[int, int]:
    """Raise unless `input_ids` is an int64/int32 tensor [B, S], B >= 1, S >= 1, with ids in [0, vocab_size).
    Returns (B, S). While a CUDA graph is being captured the range is not checked (that needs a host read)."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in TOKEN_ID_DTYPES:
        got = f"dtype {input_ids.dtype}" if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise TypeError(f"{name} must be an integer tensor of token ids [B, S] (torch.int64 or torch.int32), "
                        f"got {got}")
    if input_ids.ndim != 2 or 0 in input_ids.shape:
        raise ValueError(f"{name} must have shape [B, S] with B >= 1 and S >= 1, got {tuple(input_ids.shape)}")
    if input_ids.is_cuda and torch.cuda.is_current_stream_capturing():
        return input_ids.shape  # a CUDA graph cannot read values back; its tokens come from the model's own argmax
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


def check_attention_mask(attention_mask: torch.Tensor | None, B: int, S: int, device: torch.device
                         ) -> torch.Tensor | None:
    """Validate a padding mask as transformers gives it and return it as a bool tensor [B, S] (True: a token), or
    None when there is nothing to mask (None, or no pad anywhere: the models then run the plain path).

    `attention_mask` is a bool or integer tensor [B, S] of 0/1 (1: a token, 0: a pad) on `device`. Each row's ones
    must be contiguous: left, right or both sides padded; a row of zeros is allowed (its state does not change).
    Raises TypeError for another type or dtype, ValueError for a wrong shape or device, a value other than 0/1, or a
    hole (a pad between two tokens). Reads three bools back to the host, once.
    """
    if attention_mask is None:
        return None
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a bool or integer tensor [B, S] of 0/1 (1: a token, 0: a pad), "
                        f"got {type(attention_mask).__name__}")
    if attention_mask.is_floating_point() or attention_mask.is_complex():
        raise TypeError(f"attention_mask must be a bool or integer tensor [B, S] of 0/1 (1: a token, 0: a pad), "
                        f"got dtype {attention_mask.dtype}")
    if tuple(attention_mask.shape) != (B, S):
        raise ValueError(f"attention_mask must have shape {(B, S)} (B, S) like the input ids, "
                         f"got {tuple(attention_mask.shape)}")
    if attention_mask.device != device:
        raise ValueError(f"attention_mask is on {attention_mask.device}; expected {device}, the device of the input")
    is_bool = attention_mask.dtype == torch.bool
    mask = attention_mask if is_bool else attention_mask != 0
    bad_value = torch.zeros((), dtype=torch.bool, device=device) if is_bool else \
        ((attention_mask != 0) & (attention_mask != 1)).any()
    runs = mask[:, :1].sum(1) + (mask[:, 1:] & ~mask[:, :-1]).sum(1)  # per row: the number of runs of ones
    flags = torch.stack([bad_value, (runs > 1).any(), (~mask).any()]).tolist()
    if flags[0]:
        b, t = ((attention_mask != 0) & (attention_mask != 1)).nonzero()[0].tolist()
        raise ValueError(f"attention_mask must hold only 0 (a pad) and 1 (a token), got {attention_mask[b, t].item()} "
                         f"at (row {b}, token {t})")
    if flags[1]:
        b = (runs > 1).nonzero()[0].item()
        row = mask[b]
        gap = (row[:-1] & ~row[1:]).nonzero()[0].item() + 1  # the first pad after a token
        resume = gap + row[gap:].nonzero()[0].item()  # the next token after it
        raise ValueError(f"attention_mask row {b} has a hole: pads at tokens {gap}..{resume - 1} between tokens; the "
                         f"ones (tokens) of a row must be contiguous, with the zeros (pads) before and/or after them")
    return mask if flags[2] else None


def check_documents(attention_mask: torch.Tensor | None, resets: torch.Tensor | None, B: int, S: int,
                    device: torch.device) -> torch.Tensor | None:
    """The models' checks of `resets` (ops.checks.check_resets) and `attention_mask` (check_attention_mask), and
    that no reset marks a pad. Returns the mask as bool [B, S], or None when nothing is padded."""
    check_resets(resets, B, S, device)
    mask = check_attention_mask(attention_mask, B, S, device)
    if mask is not None and resets is not None:
        check_mask(mask, B, S, device, resets)
    return mask
