"""Log-decay helpers shared by the quadratic and the chunkwise forms (the time-loop reference needs none)."""

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


def cut_at_resets(lf: torch.Tensor, resets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log forget gates lf [..., L] and resets [..., L] (True: the memory is emptied before that token) ->

    lf_cut: lf with -inf at resets, so that nothing before a reset reaches past it;
    restart [..., L]: the log weight at j of the empty memory (m = 0) that the last reset s <= j put in place,
        sum_{s<=r<=j} lf_r, or -inf where no reset precedes j. It joins the stabilizer's max, so that a row after
        a reset has the stabilizer of a fresh start: exactly what a document run alone gets.
    """
    L = lf.shape[-1]
    cumulative = lf.cumsum(-1)
    position = torch.arange(L, device=lf.device).expand_as(lf)
    last = torch.where(resets, position, -1).cummax(-1).values  # the last reset at or before j
    before = cumulative.gather(-1, (last - 1).clamp(min=0)).masked_fill(last < 1, 0.0)
    restart = (cumulative - before).masked_fill(last < 0, float("-inf"))
    return lf.masked_fill(resets, float("-inf")), restart
