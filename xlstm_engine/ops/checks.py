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


def check_mask(mask: torch.Tensor | None, B: int, S: int, device: torch.device,
               resets: torch.Tensor | None = None) -> None:
    """Raise unless `mask` is None or a bool tensor [B, S] on `device` (the inputs' device), and no reset marks a
    padded position.

    mask[b, t] True: token t of row b is real; False: a pad, which leaves every state of row b unchanged. Any
    pattern is allowed (left, right or both sides padded, holes, all-pad rows). With both mask and resets given,
    checking that no reset marks a pad reads one bool back to the host.
    """
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a bool tensor [B, S] (True: a real token), got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor [B, S] (True: a real token), got dtype {mask.dtype}")
    if tuple(mask.shape) != (B, S):
        raise ValueError(f"mask must have shape {(B, S)} (B, S), got {tuple(mask.shape)}")
    if mask.device != device:
        raise ValueError(f"mask is on {mask.device} but the inputs are on {device}")
    if resets is not None:
        bad = resets & ~mask
        if bool(bad.any()):
            b, t = bad.nonzero()[0].tolist()
            raise ValueError(f"resets marks padded position (row {b}, token {t}): a document must start at a real "
                             f"token (mask True)")
