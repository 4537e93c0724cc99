"""PromptState: continuing, forking, indexing, saving and loading, and that generate never changes it."""

import pytest
import torch

import xlstm_engine as xe
from xlstm_engine.generation.state import flatten_state


def same_state(a: xe.PromptState, b: xe.PromptState) -> bool:
    flat_a, flat_b = flatten_state(a.state), flatten_state(b.state)
    return a.fingerprint == b.fingerprint and torch.equal(a.logits, b.logits) and flat_a.keys() == flat_b.keys() \
        and all(torch.equal(flat_a[k], flat_b[k]) for k in flat_a)


def test_continuing_from_a_prefill_equals_one_run(model):
    prefix, suffix = torch.randint(3, 101, (2, 6)), torch.randint(3, 101, (2, 3))
    whole = xe.generate(model, torch.cat([prefix, suffix], dim=1), max_new_tokens=5)
    ps = xe.prefill(model, prefix)
    assert torch.equal(xe.generate(model, suffix, state=ps, max_new_tokens=5)[:, 3:], whole[:, 9:])
    from_state = xe.generate(model, None, state=xe.prefill(model, torch.cat([prefix, suffix], dim=1)),
                             max_new_tokens=5)
    assert torch.equal(from_state, whole[:, 9:])  # ids None: the new tokens alone, the first from the logits


def test_forks_equal_separate_runs(model):
    """One prefix prefilled once, repeated, sampled with a generator per row = separate runs of the prefix."""
    prefix = torch.randint(3, 101, (1, 9))
    n, kwargs = 3, dict(max_new_tokens=8, do_sample=True, top_k=30, temperature=0.9)
    forks = xe.generate(model, None, state=xe.prefill(model, prefix).repeat(n),
                        generator=[torch.Generator().manual_seed(s) for s in range(n)], **kwargs)
    for s in range(n):
        alone = xe.generate(model, prefix, generator=torch.Generator().manual_seed(s), **kwargs)
        assert torch.equal(forks[s], alone[0, 9:]), s
    assert len({tuple(row.tolist()) for row in forks}) > 1


def test_generate_does_not_change_the_given_state(model):
    ps = xe.prefill(model, torch.randint(3, 101, (2, 5)))
    before = ps.clone()
    xe.generate(model, torch.randint(3, 101, (2, 3)), state=ps, max_new_tokens=4)
    xe.generate(model, None, state=ps, max_new_tokens=4)
    xe.generate(model, torch.randint(3, 101, (2, 3)), state=ps.state, max_new_tokens=2)  # a bare model state
    assert same_state(ps, before)


def test_rows_repeat_cat_clone(make_neurips):
    model = make_neurips()
    ps = xe.prefill(model, torch.randint(3, 101, (3, 4)))
    a, b, c = ps[0], ps.rows[1], ps[-1]
    assert a.batch_size == 1 and same_state(xe.PromptState.cat([a, b, c]), ps)
    assert same_state(ps[1:], xe.PromptState.cat([b, c]))
    assert same_state(ps[torch.tensor([2, 0])], xe.PromptState.cat([c, a]))
    assert same_state(ps[torch.tensor([True, False, True])], xe.PromptState.cat([a, c]))
    assert same_state(ps[[0, 0, 1, 1, 2, 2]], ps.repeat(2))  # [a, a, b, b, ...], like repeat_interleave
    copy = ps.clone()
    flatten_state(copy.state)["state.0.cell.C"].add_(1)
    copy.logits.add_(1)
    assert not same_state(copy, ps) and same_state(ps.clone(), ps)
    with pytest.raises(IndexError, match="selects no row"):
        ps[3:]
    with pytest.raises(ValueError, match="repeat takes an int n >= 1"):
        ps.repeat(0)


def test_save_and_load_continue_identically(model, tmp_path):
    ps = xe.prefill(model, torch.randint(3, 101, (2, 7)))
    ps.save(tmp_path / "p.safetensors")
    loaded = xe.PromptState.load(tmp_path / "p.safetensors", model)
    assert same_state(loaded, ps) and list(tmp_path.iterdir()) == [tmp_path / "p.safetensors"]
    suffix = torch.randint(3, 101, (2, 2))
    assert torch.equal(xe.generate(model, suffix, state=loaded, max_new_tokens=6),
                       xe.generate(model, suffix, state=ps, max_new_tokens=6))


def test_load_refuses_another_model_and_bad_files(make_large, make_neurips, tmp_path):
    large, other = make_large(), make_large(embedding_dim=64)
    path = tmp_path / "p.safetensors"
    xe.prefill(large, torch.randint(3, 101, (1, 3))).save(path)
    for wrong in (other, make_neurips()):
        with pytest.raises(xe.PromptStateError, match="saved from another model") as info:
            xe.PromptState.load(path, wrong)
        assert xe.generation.fingerprint(large) in str(info.value)
        assert xe.generation.fingerprint(wrong) in str(info.value)
    with pytest.raises(xe.PromptStateError, match="no such PromptState file"):
        xe.PromptState.load(tmp_path / "missing.safetensors", large)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json")
    with pytest.raises(xe.PromptStateError, match="not a readable PromptState file"):
        xe.PromptState.load(tmp_path / "bad.safetensors", large)


def test_a_state_of_another_model_or_batch_size_is_refused(make_large, make_neurips):
    large, neurips = make_large(), make_neurips()
    ids = torch.randint(3, 101, (2, 3))
    ps = xe.prefill(large, ids)
    with pytest.raises(ValueError, match="PromptState of another model"):
        xe.generate(neurips, ids, state=ps, max_new_tokens=1)
    with pytest.raises(ValueError, match="batch size 2, but the batch has 3 rows"):
        xe.generate(large, torch.randint(3, 101, (3, 3)), state=ps, max_new_tokens=1)
    with pytest.raises((ValueError, TypeError), match="state"):
        xe.generate(neurips, ids, state=ps.state, max_new_tokens=1)
    with pytest.raises(ValueError, match="state"):
        xe.generate(large, torch.randint(3, 101, (3, 3)), state=ps.state, max_new_tokens=1)
    with pytest.raises(ValueError, match="different models"):
        xe.PromptState.cat([ps, xe.prefill(neurips, ids)])
