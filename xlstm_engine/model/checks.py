"""Input checks shared by the models: errors that name the value and what was expected."""

import torch


def check_token_ids(input_ids: torch.Tensor, vocab_size: int) -> tuple[int, int]:
    """Raise unless `input_ids` is an integer tensor [B, S], S >= 1, with ids in [0, vocab_size). Returns (B, S)."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.is_floating_point() or input_ids.is_complex():
        got = input_ids.dtype if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise TypeError(f"input_ids must be an integer tensor [B, S], got {got}")
    if input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must have shape [B, S] with S >= 1, got {tuple(input_ids.shape)}")
    low, high = (x.item() for x in torch.aminmax(input_ids))
    if low < 0 or high >= vocab_size:
        raise ValueError(f"token ids must be in [0, {vocab_size}) (vocab_size), got values in [{low}, {high}]")
    return input_ids.shape
