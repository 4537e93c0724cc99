"""Sampling: each filter against an explicit reference, the race's frequencies, per-row generators, seeds."""

import pytest
import torch

import xlstm_engine as xe
from xlstm_engine.generation.sampling import SamplingParams, pick, process_logits

PROBS = torch.tensor([0.05, 0.5, 0.15, 0.3])  # sorted: 1 (0.5), 3 (0.3), 2 (0.15), 0 (0.05)


def kept(params: SamplingParams, logits: torch.Tensor | None = None) -> set[int]:
    logits = PROBS.log() if logits is None else logits
    scores = process_logits(logits[None].clone(), params, None)[0]
    return set(torch.isfinite(scores).nonzero().flatten().tolist())


@pytest.mark.parametrize(("top_p", "expected"), [(0.4, {1}), (0.45, {1}), (0.75, {1, 3}), (0.85, {1, 3, 2}),
                                                 (0.97, {0, 1, 2, 3}), (1.0, {0, 1, 2, 3})])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, expected):
    """A token goes once the tokens ranked above it hold >= top_p (transformers' rule)."""
    assert kept(SamplingParams(do_sample=True, top_p=top_p)) == expected


@pytest.mark.parametrize(("top_k", "expected"), [(1, {1}), (2, {1, 3}), (3, {1, 2, 3}), (9, {0, 1, 2, 3}),
                                                 (0, {0, 1, 2, 3})])
def test_top_k(top_k, expected):
    assert kept(SamplingParams(do_sample=True, top_k=top_k)) == expected
    ties = torch.tensor([1.0, 2.0, 2.0, 0.0])
    assert kept(SamplingParams(do_sample=True, top_k=1), ties) == {1, 2}  # ties with the k-th stay


@pytest.mark.parametrize(("min_p", "expected"), [(0.0, {0, 1, 2, 3}), (0.2, {1, 2, 3}), (0.5, {1, 3}),
                                                 (0.9, {1}), (1.0, {1})])
def test_min_p_scales_with_the_top_probability(min_p, expected):
    assert kept(SamplingParams(do_sample=True, min_p=min_p)) == expected


def test_temperature_then_filters():
    """min_p after temperature: at T = 2 the probabilities flatten, so min_p 0.5 keeps token 2 as well."""
    params = SamplingParams(do_sample=True, temperature=2.0, min_p=0.5)
    assert kept(params) == {1, 3, 2}
    assert_frequencies(SamplingParams(do_sample=True, temperature=2.0), torch.softmax(PROBS.log() / 2, dim=0))


def test_repetition_penalty_reference():
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0]])
    seen = torch.tensor([[True, True, False, False]])
    out = process_logits(logits, SamplingParams(repetition_penalty=2.0), seen)
    assert out.tolist() == [[1.0, -2.0, 0.5, -3.0]]  # positive divided, negative multiplied, unseen unchanged


def assert_frequencies(params: SamplingParams, expected: torch.Tensor, n: int = 20000) -> None:
    """Draw n samples in one batch and compare each token's frequency with its probability (5 sigma)."""
    g = torch.Generator().manual_seed(0)
    tokens = pick(process_logits(PROBS.log().expand(n, 4).clone(), params, None), params, g)
    freq = torch.bincount(tokens, minlength=4).double() / n
    sigma = (expected.double() * (1 - expected.double()) / n).sqrt().clamp_min(1e-6)
    assert ((freq - expected).abs() <= 5 * sigma + 1e-12).all(), (freq, expected)


def test_the_race_samples_the_distribution():
    assert_frequencies(SamplingParams(do_sample=True), PROBS)
    assert_frequencies(SamplingParams(do_sample=True, top_p=0.75), torch.tensor([0, 0.5, 0, 0.3]) / 0.8)
    assert_frequencies(SamplingParams(do_sample=True, top_k=3), torch.tensor([0, 0.5, 0.15, 0.3]) / 0.95)


def test_a_row_with_its_own_generator_gets_what_it_gets_alone():
    logits = torch.randn(3, 50)
    params = SamplingParams(do_sample=True, top_k=20)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    batch = [pick(process_logits(logits, params, None), params, gens) for _ in range(4)]
    for row, seed in enumerate((1, 2, 3)):
        g = torch.Generator().manual_seed(seed)
        alone = [pick(process_logits(logits[row:row + 1], params, None), params, g) for _ in range(4)]
        assert [b[row].item() for b in batch] == [a.item() for a in alone]


def test_seeded_sampling_is_reproducible(model):
    ids = torch.randint(3, 101, (2, 5))
    runs = [xe.generate(model, ids, max_new_tokens=10, do_sample=True, seed=s, top_p=0.95) for s in (7, 7, 8)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    g = torch.Generator().manual_seed(7)
    assert torch.equal(xe.generate(model, ids, max_new_tokens=10, do_sample=True, generator=g, top_p=0.95), runs[0])


def test_filtered_tokens_never_appear(make_large):
    """top_k=1 leaves only the argmax, so sampling equals greedy; a temperature of 0 is greedy too."""
    model = make_large()
    ids = torch.randint(3, 101, (2, 5))
    greedy = xe.generate(model, ids, max_new_tokens=8)
    assert torch.equal(xe.generate(model, ids, max_new_tokens=8, do_sample=True, top_k=1, seed=0), greedy)
    assert torch.equal(xe.generate(model, ids, max_new_tokens=8, do_sample=True, min_p=1.0, seed=0), greedy)
    assert torch.equal(xe.generate(model, ids, max_new_tokens=8, do_sample=True, temperature=0, seed=0), greedy)


def test_repetition_penalty_in_generate(scripted):
    """The penalty demotes the scripted token once seen (prompt included): a model that always prefers token 5
    (logit 10) over token 6 (logit 9 here) switches to 6 after 5 has appeared, with penalty 1.2 on logit 10."""
    model = scripted([[5]], prompt_len=1, vocab_size=8)
    forward = model.forward_with_state

    def second_choice(ids, *args, **kwargs):
        logits, state = forward(ids, *args, **kwargs)
        logits[..., 6] = 9.0
        return logits, state

    model.forward_with_state = second_choice
    assert xe.generate(model, torch.tensor([[1]]), max_new_tokens=3)[0].tolist() == [1, 5, 5, 5]
    out = xe.generate(model, torch.tensor([[1]]), max_new_tokens=3, repetition_penalty=1.2)
    assert out[0].tolist() == [1, 5, 6, 5]  # 5 seen: 10 / 1.2 = 8.3 < 9; both seen: 8.3 > 9 / 1.2 = 7.5


def test_greedy_ignores_sampling_settings_with_a_warning(make_large):
    model = make_large()
    ids = torch.randint(3, 101, (1, 4))
    with pytest.warns(UserWarning, match="only with do_sample=True"):
        out = xe.generate(model, ids, max_new_tokens=3, top_p=0.5)
    assert torch.equal(out, xe.generate(model, ids, max_new_tokens=3))
