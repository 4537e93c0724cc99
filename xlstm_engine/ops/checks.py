"""Input checks that more than one op needs (the mLSTM and the sLSTM take packed documents the same way)."""

import torch


def check_resets(resets: torch.Tensor | None, B: int, S: int, device: torch.device) -> None:
    """Raise unless `resets` is None or a bool tensor [B, S] on `device` (the inputs' device).

    resets[b, t] True empties the state of row b just before token t (packed documents).
    """
    if resets is None:
        return
    if not isinstance(resets, torch.Tensor):
        raise TypeError(f"resets must be a bool tensor [B, S], got {type(resets).__name__}")
    if resets.dtype != torch.bool:
        raise TypeError(f"resets must be a bool tensor [B, S], got dtype {resets.dtype}")
    if tuple(resets.shape) != (B, S):
        raise ValueError(f"resets must have shape {(B, S)} (B, S), got {tuple(resets.shape)}")
    if resets.device != device:
        raise ValueError(f"resets is on {resets.device} but the inputs are on {device}")
