"""A padded batch (left or right, rows of several lengths) equals each row alone: greedy, and sampling with a
generator per row and a repetition penalty (which must count real tokens only, not whatever the pads hold)."""

import pytest
import torch

import xlstm_engine as xe

LENGTHS = [7, 3, 5, 1]


def padded_batch(rows: list[torch.Tensor], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [B, S] with random ids at the pads (a real id there must not matter), and the mask [B, S]."""
    S = max(len(r) for r in rows)
    ids = torch.randint(3, 101, (len(rows), S))
    mask = torch.zeros(len(rows), S, dtype=torch.long)
    for b, row in enumerate(rows):
        cols = slice(S - len(row), S) if side == "left" else slice(0, len(row))
        ids[b, cols], mask[b, cols] = row, 1
    return ids, mask


SAMPLING = dict(do_sample=True, top_k=40, temperature=0.8, repetition_penalty=1.3)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("sampling", [False, True])
def test_padded_batch_equals_each_row_alone(model, side, sampling):
    rows = [torch.randint(3, 101, (n,)) for n in LENGTHS]
    if hasattr(model.config, "bos_token_id"):
        rows[2][0] = 0  # a row that starts with BOS (xLSTM Large) gets no second one; the others get one
    ids, mask = padded_batch(rows, side)
    kwargs = dict(SAMPLING) if sampling else {}
    gens = lambda: [torch.Generator().manual_seed(10 + b) for b in range(len(rows))]  # noqa: E731
    out = xe.generate(model, ids, mask, max_new_tokens=6, generator=gens() if sampling else None, **kwargs)
    assert out.shape == (len(rows), ids.shape[1] + 6) and torch.equal(out[:, :ids.shape[1]], ids)
    for b, row in enumerate(rows):
        alone = xe.generate(model, row[None], max_new_tokens=6, generator=[gens()[b]] if sampling else None,
                            **kwargs)
        assert out[b, ids.shape[1]:].tolist() == alone[0, len(row):].tolist(), (side, b)


def test_padded_prefill_continues_like_generate(model):
    ids, mask = padded_batch([torch.randint(3, 101, (n,)) for n in LENGTHS], "right")
    ps = xe.prefill(model, ids, mask)
    assert torch.equal(xe.generate(model, None, state=ps, max_new_tokens=5),
                       xe.generate(model, ids, mask, max_new_tokens=5)[:, ids.shape[1]:])
    suffix, suffix_mask = padded_batch([torch.randint(3, 101, (n,)) for n in (2, 4, 1, 3)], "left")
    continued = xe.generate(model, suffix, suffix_mask, state=ps, max_new_tokens=4)
    for b, n in enumerate(LENGTHS):
        whole = torch.cat([ids[b, :n], suffix[b][suffix_mask[b].bool()]])[None]
        alone = xe.generate(model, whole, max_new_tokens=4)
        assert continued[b, suffix.shape[1]:].tolist() == alone[0, whole.shape[1]:].tolist(), b
