"""Log-decay and masking helpers shared by the quadratic and the chunkwise forms (the time-loop reference needs none).

A window is the whole sequence (quadratic form) or one chunk (chunkwise form). Every mask here is structural: an
entry that the math leaves out is replaced (`where`, `masked_fill`), never multiplied by a zero weight, so that a
NaN or inf reaches no earlier position and no other document (0 * NaN is NaN).
"""

import torch


def segment_sum(lf: torch.Tensor) -> torch.Tensor:
    """[..., L] -> [..., L, L] with entry (j, l) = sum_{l<r<=j} lf_r for l <= j, and -inf above the diagonal.

    A masked cumsum, not b_j - b_l: the difference of two long sums cancels, in value and in gradient.
    """
    L = lf.shape[-1]
    strictly_lower = torch.ones(L, L, dtype=torch.bool, device=lf.device).tril(-1)
    sums = lf[..., :, None].expand(*lf.shape, L).masked_fill(~strictly_lower, 0).cumsum(-2)
    return sums.masked_fill(~strictly_lower.logical_or(torch.eye(L, dtype=torch.bool, device=lf.device)),
                            float("-inf"))


def documents(resets: torch.Tensor | None) -> torch.Tensor | None:
    """[..., L] bool resets -> [..., L] document index inside the window: the number of resets at or before j
    (0 for the document that was running when the window began)."""
    return None if resets is None else resets.cumsum(-1)


def visibility(L: int, document: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """[..., L, L] bool: token l reaches row j (l <= j, one document)."""
    causal = torch.ones(L, L, dtype=torch.bool, device=device).tril()
    return causal if document is None else causal & (document[..., :, None] == document[..., None, :])


def log_decay(sums: torch.Tensor, li: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """D [..., L, L]: the log weight sum_{l<r<=j} lf_r + li_l of token l in the memory at row j, -inf where l does
    not reach j. `sums` is segment_sum(lf)."""
    return (sums + li[..., None, :]).masked_fill(~visible, float("-inf"))


def restart(sums: torch.Tensor, lf: torch.Tensor, resets: torch.Tensor) -> torch.Tensor:
    """[..., L]: the log weight at row j of the empty memory (m = 0) that the last reset s <= j put in place,
    sum_{s<=r<=j} lf_r, or -inf where no reset precedes j in the window.

    It joins the stabilizer's max, so that a row after a reset has the stabilizer of a fresh start: exactly what a
    document run alone gets. Read from the segment sums, which hold only that document's gates.
    """
    position = torch.arange(lf.shape[-1], device=lf.device).expand_as(lf)
    last = torch.where(resets, position, -1).cummax(-1).values  # the last reset at or before j
    start = last.clamp(min=0)[..., None]
    since = sums.gather(-1, start).squeeze(-1) + lf.gather(-1, start.squeeze(-1))
    return since.masked_fill(last < 0, float("-inf"))


def attend(weights: torch.Tensor, visible: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """weights [..., L, L] @ v [..., L, DV], where weights is zero outside `visible`: a non-finite v_l makes only
    the rows that see l non-finite (a plain matmul would spread it to every row, as 0 * NaN = NaN)."""
    finite = torch.isfinite(v)
    if finite.all():
        return weights @ v
    out = weights @ torch.where(finite, v, 0.0)
    reached = (visible.to(v.dtype) @ (~finite).to(v.dtype)) > 0
    return out.masked_fill(reached, float("nan"))
