"""Input checks that more than one op needs (the mLSTM and the sLSTM take packed documents the same way)."""

import torch


def check_resets(resets: torch.Tensor | None, B: int, S: int, device: torch.device) -> None:
    """Raise unless `resets` is None or a bool tensor [B, S] on `device` (the inputs' device).

    resets[b, t] True empties the state of row b just before token t (packed documents).
    """
    _check_bool_rows("resets", resets, B, S, device, "")


def check_mask(mask: torch.Tensor | None, B: int, S: int, device: torch.device,
               resets: torch.Tensor | None = None) -> None:
    """Raise unless `mask` is None or a bool tensor [B, S] on `device` (the inputs' device), and no reset marks a
    padded position.

    mask[b, t] True: token t of row b is real; False: a pad, which leaves every state of row b unchanged. Any
    pattern is allowed (left, right or both sides padded, holes, all-pad rows). With both mask and resets given,
    checking that no reset marks a pad reads one bool back to the host.
    """
    _check_bool_rows("mask", mask, B, S, device, " (True: a real token)")
    if mask is not None and resets is not None:
        bad = resets & ~mask
        if bool(bad.any()):
            b, t = bad.nonzero()[0].tolist()
            raise ValueError(f"resets marks padded position (row {b}, token {t}): a document must start at a real "
                             f"token (mask True)")


def _check_bool_rows(name: str, t: torch.Tensor | None, B: int, S: int, device: torch.device, meaning: str) -> None:
    """Raise unless `t` is None or a bool tensor [B, S] on `device`; `meaning` follows the expected type."""
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a bool tensor [B, S]{meaning}, got {type(t).__name__}")
    if t.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor [B, S]{meaning}, got dtype {t.dtype}")
    if tuple(t.shape) != (B, S):
        raise ValueError(f"{name} must have shape {(B, S)} (B, S), got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but the inputs are on {device}")
