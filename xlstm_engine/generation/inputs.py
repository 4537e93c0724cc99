"""Prompt preparation: checks with errors that name the value, padding, and the BOS rule.

The model sees each prompt left-aligned (pads first, then the row's tokens): a pad leaves the state unchanged, so
where the pads sit does not matter to the state, and left alignment puts every row's last token in the last
column, whose logits give the first new token. The caller's layout (left or right padding) is kept in what
generate() returns.
"""

from dataclasses import dataclass

import torch

from ..model.checks import check_attention_mask, check_token_ids


@dataclass(frozen=True)
class Prompt:
    """A checked prompt, ready for the model.

    ids [B, S'] left-aligned, pads replaced by id 0 (any valid id: a pad is never read), S' = S or S + 1 with BOS;
    mask [B, S'] bool, or None when every position is a token (then the model gets no attention_mask);
    user_ids [B, S] and user_mask [B, S] bool: the caller's ids and where its tokens are (BOS not included).
    """

    ids: torch.Tensor
    mask: torch.Tensor | None
    user_ids: torch.Tensor
    user_mask: torch.Tensor


def check_prompt_mask(attention_mask, B: int, S: int, device: torch.device) -> torch.Tensor:
    """attention_mask [B, S] of 0/1 (bool or integer), each row's ones contiguous (model.checks) and at least one
    per row -> the mask as bool [B, S]. Raises ValueError/TypeError naming what is wrong."""
    mask = check_attention_mask(attention_mask, B, S, device)
    if mask is None:  # no pad anywhere
        return torch.ones(B, S, dtype=torch.bool, device=device)
    empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"attention_mask row(s) {empty} hold no token (all 0): every row needs at least one")
    return mask


def prepare_prompt(input_ids, attention_mask, vocab_size: int, bos_token_id: int | None) -> Prompt:
    """Check `input_ids` [B, S] and `attention_mask`, left-align the rows, and put `bos_token_id` (None: no BOS
    rule) before each row whose first token is not BOS."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
        got = f"dtype {input_ids.dtype}" if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise TypeError(f"input_ids must be an integer tensor [B, S] (torch.int64 or torch.int32), got {got}")
    if input_ids.ndim != 2 or 0 in input_ids.shape:
        raise ValueError(f"input_ids must have shape [B, S] with B >= 1 and S >= 1 (an empty prompt has nothing to "
                         f"continue), got {tuple(input_ids.shape)}")
    B, S = input_ids.shape
    mask = check_prompt_mask(attention_mask, B, S, input_ids.device)
    check_token_ids(input_ids[mask][None], vocab_size)  # pads may hold anything (-100, a pad id)
    ids = input_ids.long()

    # roll each row right so that its last token lands in column S-1 (pads wrap around to the left)
    position = torch.arange(S, device=ids.device)
    end = torch.where(mask, position, -1).amax(dim=1) + 1  # one past each row's last token
    source = (position[None] - (S - end)[:, None]) % S
    left_ids, left_mask = ids.gather(1, source), mask.gather(1, source)
    left_ids = left_ids.masked_fill(~left_mask, 0)

    if bos_token_id is not None:
        length = mask.sum(dim=1)
        first = left_ids.gather(1, (S - length)[:, None])[:, 0]
        needs = first != bos_token_id
        if needs.any():  # one more column on the left; rows that need BOS get it just before their first token
            left_ids = torch.cat([left_ids.new_zeros(B, 1), left_ids], dim=1)
            left_mask = torch.cat([left_mask.new_zeros(B, 1), left_mask], dim=1)
            at = (S - length)[:, None]  # in the widened layout, the (pad) column before the first token
            left_ids.scatter_(1, at, torch.where(needs, bos_token_id, 0)[:, None])
            left_mask.scatter_(1, at, needs[:, None])
    return Prompt(ids=left_ids, mask=None if bool(left_mask.all()) else left_mask, user_ids=input_ids,
                  user_mask=mask)


def seen_tokens(prompt: Prompt | None, batch_size: int, vocab_size: int, device: torch.device) -> torch.Tensor:
    """[B, V] bool: which ids each row's prompt holds (real tokens only, BOS inserted here not counted), for the
    repetition penalty; all False without a prompt."""
    seen = torch.zeros(batch_size, vocab_size + 1, dtype=torch.bool, device=device)
    if prompt is not None:  # pads go to the extra column V, dropped below
        seen.scatter_(1, torch.where(prompt.user_mask, prompt.user_ids.long(), vocab_size), True)
    return seen[:, :vocab_size].contiguous()


def resolve_token_ids(model, *, eos_token_id, pad_token_id, vocab_size: int):
    """(eos ids as a tuple, possibly empty; pad id or None), defaults from the model's config: eos None -> the
    config's; pad None -> the config's, else the first eos (as transformers)."""
    if eos_token_id is None:
        eos_token_id = getattr(model.config, "eos_token_id", None)
    eos = () if eos_token_id is None else (eos_token_id,) if isinstance(eos_token_id, int) else tuple(eos_token_id)
    for token in eos:
        if not isinstance(token, int) or isinstance(token, bool) or not 0 <= token < vocab_size:
            raise ValueError(f"eos_token_id must be an id in [0, {vocab_size}) or a list of them, got {eos_token_id!r}")
    if pad_token_id is None:
        pad_token_id = getattr(model.config, "pad_token_id", None)
    if pad_token_id is None and eos:
        pad_token_id = eos[0]
    if pad_token_id is not None and (not isinstance(pad_token_id, int) or isinstance(pad_token_id, bool)
                                     or pad_token_id < 0):
        raise ValueError(f"pad_token_id must be an int >= 0, got {pad_token_id!r}")
    return eos, pad_token_id


def resolve_bos(model, add_bos_token, bos_token_id, fresh: bool) -> int | None:
    """The BOS id to put before each prompt that does not start with it, or None (no BOS rule).

    add_bos_token None: on when the model's config has a bos_token_id (xLSTM Large; the NeurIPS config has
    none); never when continuing from a state (the BOS marks the start of a document)."""
    if add_bos_token not in (None, True, False):
        raise TypeError(f"add_bos_token must be None, True or False, got {add_bos_token!r}")
    config_bos = getattr(model.config, "bos_token_id", None)
    bos = config_bos if bos_token_id is None else bos_token_id
    if add_bos_token is True and bos is None:
        raise ValueError("add_bos_token=True needs a BOS id, but the model's config has no bos_token_id; pass "
                         "bos_token_id")
    on = add_bos_token if add_bos_token is not None else config_bos is not None
    if not on or not fresh:
        return None
    if not isinstance(bos, int) or isinstance(bos, bool) or not 0 <= bos < model.config.vocab_size:
        raise ValueError(f"bos_token_id must be an id in [0, {model.config.vocab_size}), got {bos!r}")
    return bos
