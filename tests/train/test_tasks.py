"""Synthetic tasks: every answer re-derived from the inputs in plain Python, layout, determinism and rank slicing."""

import pytest
import torch

from xlstm_engine.train.streams import Split, make_split, seeded_generator
from xlstm_engine.train.tasks import IGNORE_INDEX, MQAR, PAD, TASKS, make_task

FORMAL = ["parity", "even_pairs", "cycle_navigation", "modular_arithmetic"]


def parity_answer(question, vocab_size):
    if vocab_size == 3:
        return question.count(2) % 2 + 1
    return (sum(t - 1 for t in question)) % (vocab_size - 1) + 1


def even_pairs_answer(question, vocab_size):
    if vocab_size == 3:
        return 1 if question[0] == question[-1] else 2
    return abs(question[-1] - question[0]) + 1


def cycle_navigation_answer(question, vocab_size, max_step_size=1):
    moves = {1 + s: s for s in range(max_step_size + 1)} | {max_step_size + 1 + s: -s
                                                             for s in range(1, max_step_size + 1)}
    cycle = vocab_size - 2 - 2 * max_step_size
    return sum(moves[t] for t in question) % cycle + 2 * max_step_size + 2


def modular_arithmetic_answer(question, vocab_size):
    assert question[-1] == 4 and len(question) % 2 == 0  # expression, then '='
    expr = question[:-1]
    assert all(t >= 5 for t in expr[0::2]) and all(t in (1, 2, 3) for t in expr[1::2])
    # Python's own parser gives '*' its precedence; big ints never overflow
    text = " ".join(str(t - 5) if i % 2 == 0 else "+-*"[t - 1] for i, t in enumerate(expr))
    return eval(text) % (vocab_size - 5) + 5


ANSWERS = dict(parity=parity_answer, even_pairs=even_pairs_answer, cycle_navigation=cycle_navigation_answer,
               modular_arithmetic=modular_arithmetic_answer)


def check_formal(name, inputs, targets, min_len, max_len, vocab_size, width=None, **task_kwargs):
    """Layout of a formal-language batch, and each target equal to the answer derived from the inputs."""
    assert inputs.dtype == targets.dtype == torch.long and inputs.shape == targets.shape
    sizes = []
    for row_in, row_t in zip(inputs.tolist(), targets.tolist(), strict=True):
        answer_at = [j for j, t in enumerate(row_t) if t != IGNORE_INDEX]
        assert len(answer_at) == 1, "exactly one target per sequence"
        size = answer_at[0] + 2  # the target sits under the last question token, index size-2
        sizes.append(size)
        question = row_in[:size - 1]
        assert PAD not in question, "the question is PAD-free"
        assert all(t == PAD for t in row_in[size - 1:]), "right-padded; the answer position is PAD in the inputs"
        assert all(0 < t < vocab_size for t in question)
        answer = row_t[size - 2]
        assert 0 < answer < vocab_size
        assert answer == ANSWERS[name](question, vocab_size, **task_kwargs)
    lo = min_len - 1 if name == "modular_arithmetic" and min_len % 2 == 0 else min_len  # rounded down to odd
    assert all(lo <= s <= max_len for s in sizes)
    if name == "modular_arithmetic":
        assert all(s % 2 == 1 for s in sizes)
    assert inputs.shape[1] == (width if width is not None else max(sizes) - 1)
    return sizes


@pytest.mark.parametrize("name", FORMAL)
def test_formal_answers(name):
    task = make_task(name)
    inputs, targets = task.batch(256, task.min_size, 40, torch.Generator().manual_seed(0))
    sizes = check_formal(name, inputs, targets, task.min_size, 40, task.vocab_size)
    assert len(set(sizes)) > 10  # the length range is actually used
    # both/all answers occur
    answers = targets[targets != IGNORE_INDEX]
    assert answers.unique().numel() == task.num_answers


@pytest.mark.parametrize("name, kwargs", [
    ("parity", dict(vocab_size=5)), ("even_pairs", dict(vocab_size=6)),
    ("cycle_navigation", dict(vocab_size=13, max_step_size=2)), ("modular_arithmetic", dict(vocab_size=12)),
])
def test_formal_larger_vocab(name, kwargs):
    task = make_task(name, **kwargs)
    inputs, targets = task.batch(128, 4, 30, torch.Generator().manual_seed(1))
    extra = dict(max_step_size=2) if name == "cycle_navigation" else {}
    check_formal(name, inputs, targets, 4, 30, task.vocab_size, **extra)


@pytest.mark.parametrize("name", FORMAL)
def test_context_length_padding(name):
    """Padding to context_length changes only the width: same generator, same samples."""
    task, padded = make_task(name), make_task(name, context_length=64)
    a = task.batch(32, 5, 20, torch.Generator().manual_seed(3))
    b = padded.batch(32, 5, 20, torch.Generator().manual_seed(3))
    check_formal(name, *b, 5, 20, task.vocab_size, width=63)
    width = a[0].shape[1]
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y[:, :width])
    assert (b[0][:, width:] == PAD).all() and (b[1][:, width:] == IGNORE_INDEX).all()


@pytest.mark.parametrize("name", FORMAL)
def test_fixed_length(name):
    """min_len == max_len == context_length, as in the official validation at full context."""
    task = make_task(name, context_length=33)
    inputs, targets = task.batch(16, 33, 33, torch.Generator().manual_seed(4))
    assert (targets[:, -1] != IGNORE_INDEX).all() and (inputs != PAD).all()
    check_formal(name, inputs, targets, 33, 33, task.vocab_size, width=32)


def test_chance_accuracy_and_known_example():
    task = make_task("modular_arithmetic")
    assert modular_arithmetic_answer([9, 2, 8, 3, 9, 4], 10) == (4 - 3 * 4) % 5 + 5
    assert task.chance_accuracy == pytest.approx(1 / 5)
    assert make_task("parity").chance_accuracy == 0.5
    assert make_task("cycle_navigation").chance_accuracy == pytest.approx(1 / 6)
    assert make_task("parity").scaled_accuracy(0.75) == pytest.approx(0.5)


def check_mqar(task, inputs, targets):
    P, Q = task.num_kv_pairs, task.num_queries
    split = task.vocab_size // 2
    assert inputs.shape == targets.shape == (inputs.shape[0], task.seq_len)
    assert (inputs > 0).all() and (inputs < task.vocab_size).all()
    for row_in, row_t in zip(inputs.tolist(), targets.tolist(), strict=True):
        keys, values = row_in[0:2 * P:2], row_in[1:2 * P:2]
        assert len(set(keys)) == P and len(set(values)) == P
        assert all(0 < k < split for k in keys) and all(split <= v < task.vocab_size for v in values)
        assert all(t == IGNORE_INDEX for t in row_t[:2 * P]), "no targets inside the pairs"
        bound = dict(zip(keys, values, strict=True))
        queries = [j for j, t in enumerate(row_t) if t != IGNORE_INDEX]
        assert len(queries) == Q, "exactly one target per query"
        assert all((j - 2 * P) % 2 == 0 for j in queries)
        queried = [row_in[j] for j in queries]
        assert len(set(queried)) == Q, "queries are distinct keys"
        for j in queries:
            assert row_t[j] == bound[row_in[j]], "the target is the value bound to the queried key"


@pytest.mark.parametrize("kwargs", [
    dict(vocab_size=8192, seq_len=256, num_kv_pairs=16),
    dict(vocab_size=64, seq_len=64, num_kv_pairs=8, num_queries=3),
    dict(vocab_size=20, seq_len=37, num_kv_pairs=9, power_a=1.0),  # vocab and slots exactly enough, odd length
])
def test_mqar(kwargs):
    task = make_task("mqar", **kwargs)
    inputs, targets = task.batch(64, torch.Generator().manual_seed(0))
    check_mqar(task, inputs, targets)
    assert task.chance_accuracy == 1 / (task.vocab_size - task.vocab_size // 2)


def test_mqar_query_positions_spread():
    """power_a = 1 spreads queries uniformly over the slots; the Zoology default favours early slots."""
    kw = dict(vocab_size=512, seq_len=128, num_kv_pairs=4)
    g = torch.Generator().manual_seed(0)
    uniform = make_task("mqar", power_a=1.0, **kw).batch(512, g)[1]
    skewed = make_task("mqar", **kw).batch(512, g)[1]
    mean_pos = [(t != IGNORE_INDEX).nonzero()[:, 1].float().mean().item() for t in (uniform, skewed)]
    assert mean_pos[0] == pytest.approx((8 + 126) / 2, abs=4)
    assert mean_pos[1] < mean_pos[0] - 15


SPLITS = [
    dict(name="parity", min_len=3, max_len=40),
    dict(name="modular_arithmetic", min_len=3, max_len=40, context_length=64),
    dict(name="mqar", vocab_size=128, seq_len=64, num_kv_pairs=8),
]


@pytest.mark.parametrize("cfg", SPLITS, ids=lambda c: c["name"])
def test_split_determinism(cfg):
    split = make_split(seed=7, **cfg)
    a, b = split.batch(5, 16), make_split(seed=7, **cfg).batch(5, 16)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    other_step, other_seed = split.batch(6, 16), make_split(seed=8, **cfg).batch(5, 16)
    assert not torch.equal(a[0][:, :8], other_step[0][:, :8])
    assert not torch.equal(a[0][:, :8], other_seed[0][:, :8])
    # batches() resumes at any step with the same batches
    it = split.batches(16, start=5)
    assert all(torch.equal(x, y) for x, y in zip(next(it), a, strict=True))
    assert all(torch.equal(x, y) for x, y in zip(next(it), other_step, strict=True))


@pytest.mark.parametrize("cfg", SPLITS, ids=lambda c: c["name"])
@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_split_ranks(cfg, world_size):
    split = make_split(seed=1, **cfg)
    full = split.batch(3, 12)
    parts = [split.batch(3, 12, rank=r, world_size=world_size) for r in range(world_size)]
    for i in range(2):
        assert torch.equal(torch.cat([p[i] for p in parts]), full[i])


def test_split_count():
    split = make_split("even_pairs", seed=0, count=10, min_len=3, max_len=9)
    assert split.num_batches(4) == 3
    batches = list(split.batches(4))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    assert torch.equal(batches[2][1], split.batch(2, 4)[1])
    with pytest.raises(IndexError, match="past"):
        split.batch(3, 4)
    for inputs, targets in batches:
        check_formal("even_pairs", inputs, targets, 3, 9, 3)
    assert make_split("parity", seed=0, min_len=3, max_len=5).num_batches(4) is None


def test_seeded_generator():
    def draw(seed, step):
        return torch.randint(0, 1 << 30, (4,), generator=seeded_generator(seed, step))

    assert torch.equal(draw(0, 0), draw(0, 0))
    assert len({tuple(draw(s, k).tolist()) for s in range(3) for k in range(3)}) == 9


@pytest.mark.parametrize("call, match", [
    (lambda: make_task("parityy"), "unknown task 'parityy'"),
    (lambda: make_task("parity", vocab=3), r"unknown argument\(s\) \['vocab'\]"),
    (lambda: make_task("mqar", vocab_size=64, seq_len=64), r"missing required argument\(s\) \['num_kv_pairs'\]"),
    (lambda: make_task("parity", vocab_size=2), "vocab_size must be an int >= 3"),
    (lambda: make_task("cycle_navigation", vocab_size=7, max_step_size=2), "vocab_size must be an int >= 8"),
    (lambda: make_task("modular_arithmetic", vocab_size=6), "vocab_size must be an int >= 7"),
    (lambda: make_task("parity", context_length=1), "context_length"),
    (lambda: make_task("parity").batch(4, 10, 5), r"min_len \(10\) must be <= max_len \(5\)"),
    (lambda: make_task("even_pairs").batch(4, 2, 5), "min_len must be an int >= 3"),
    (lambda: make_task("modular_arithmetic").batch(4, 1, 5), "min_len must be an int >= 3"),
    (lambda: make_task("parity").batch(0, 3, 5), "batch_size"),
    (lambda: make_task("parity", context_length=16).batch(4, 3, 17), r"max_len \(17\) must be <= context_length"),
    (lambda: make_task("mqar", vocab_size=16, seq_len=64, num_kv_pairs=8), "too few for 8 distinct pairs"),
    (lambda: make_task("mqar", vocab_size=64, seq_len=30, num_kv_pairs=8), "need seq_len >= 32"),
    (lambda: make_task("mqar", vocab_size=64, seq_len=64, num_kv_pairs=4, num_queries=5), "num_queries"),
    (lambda: make_task("mqar", vocab_size=64, seq_len=64, num_kv_pairs=4, power_a=0), "power_a"),
    (lambda: make_split("parity", seed=0), "needs min_len and max_len"),
    (lambda: make_split("mqar", seed=0, min_len=3, max_len=5, vocab_size=64, seq_len=64, num_kv_pairs=4),
     "leave min_len, max_len None"),
    (lambda: make_split("parity", seed=-1, min_len=3, max_len=5), "seed"),
    (lambda: make_split("parity", seed=0, min_len=3, max_len=5).batch(0, 4, rank=2, world_size=2), "rank"),
    (lambda: Split("parity", seed=0), "task must be a Task"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_registry():
    assert set(TASKS) == {*FORMAL, "mqar"}
    assert TASKS["mqar"] is MQAR
    assert all(TASKS[n]().vocab_size == v for n, v in zip(FORMAL, (3, 3, 10, 10), strict=True))
