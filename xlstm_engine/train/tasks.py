"""Synthetic sequence tasks for training xLSTM models, generated on the fly from a seeded torch.Generator.

Every task makes batches (inputs [B, S] long, targets [B, S] long). Inputs use token PAD (0) for padding; targets
hold IGNORE_INDEX (-1) wherever there is nothing to predict, so
`F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)` trains on the answers only.

Formal languages, as in the xLSTM paper's NeurIPS experiments (NX-AI/xlstm, experiments/data/formal_language):
parity, even_pairs, cycle_navigation, modular_arithmetic. A sample of `size` tokens is a question of size-1 tokens
followed by its answer. The official dataset (enable_mask=True, shift=1) blanks the answer out of the inputs and shifts
targets left by one, so the single target sits under the last question token:

    index     0    1    ...  size-2       size-1 ...  S-1
    inputs    q0   q1   ...  q_{size-2}   PAD    ...  PAD
    targets   -1   -1   ...  answer       -1     ...  -1

Rows are padded to S = (longest size in the batch) - 1, or to S = context_length - 1 when the task sets one (the
official runs use context_length 256: rows of 255).

MQAR, multi-query associative recall (Arora et al. 2023, "Zoology"): key-value pairs, then queries of some keys;
the model must answer each query with the value bound to that key earlier in the sequence (layout in `MQAR`).

Reproducibility: `Split` makes batch k of a stream from a generator seeded by (seed, k), so any batch can be
regenerated exactly (resume) and several processes can draw disjoint rows of the same global batch.
"""

import hashlib
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, fields
from typing import ClassVar

import torch

PAD = 0
IGNORE_INDEX = -1


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


class Task:
    """What every task exposes: its name, vocabulary size, number of answer tokens and chance accuracy."""

    name: ClassVar[str]
    vocab_size: int

    @property
    def num_answers(self) -> int:
        """How many distinct tokens an answer can be."""
        raise NotImplementedError

    @property
    def chance_accuracy(self) -> float:
        """Accuracy of guessing uniformly among the answer tokens: the 0 of the xLSTM paper's scaled accuracy."""
        return 1.0 / self.num_answers

    def scaled_accuracy(self, accuracy: float) -> float:
        """Map accuracy to 0 at chance and 1 when perfect, as the xLSTM paper reports formal-language results."""
        return (accuracy - self.chance_accuracy) / (1.0 - self.chance_accuracy)


@dataclass(frozen=True)
class FormalLanguageTask(Task):
    """Base of the formal-language tasks. Subclasses draw question tokens and compute answers.

    vocab_size: tokens 0..vocab_size-1, 0 being PAD. context_length: pad every row to context_length - 1 (None: to
    the longest row of each batch); samples are the same either way.
    """

    vocab_size: int
    context_length: int | None = None

    min_size: ClassVar[int] = 2  # shortest sample (question + answer) the task is defined for

    def __post_init__(self):
        _check_int("vocab_size", self.vocab_size, self._min_vocab_size())
        if self.context_length is not None:
            _check_int("context_length", self.context_length, self.min_size)

    def _min_vocab_size(self) -> int:
        return 3  # PAD and at least two answers, or the task is trivial

    def check_lengths(self, min_len: int, max_len: int) -> None:
        """Raise ValueError unless sizes drawn from [min_len, max_len] are valid for this task."""
        _check_int("min_len", min_len, self.min_size)
        _check_int("max_len", max_len, self.min_size)
        if min_len > max_len:
            raise ValueError(f"min_len ({min_len}) must be <= max_len ({max_len})")
        if self.context_length is not None and max_len > self.context_length:
            raise ValueError(f"max_len ({max_len}) must be <= context_length ({self.context_length})")

    def batch(
        self, batch_size: int, min_len: int, max_len: int, generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw batch_size samples with sizes uniform in [min_len, max_len]. Returns (inputs, targets), both [B, S].

        Tensors live on the generator's device (CPU without one; then the global RNG is used).
        """
        _check_int("batch_size", batch_size, 1)
        self.check_lengths(min_len, max_len)
        device = _device(generator)
        sizes = self._sizes(batch_size, min_len, max_len, generator, device)  # [B]
        # draw the full max_len - 1 question positions whatever the padding, so samples do not depend on it
        n = max_len - 1
        tokens = self._question(batch_size, n, sizes, generator, device)  # [B, n]
        tokens = tokens.masked_fill(torch.arange(n, device=device) >= (sizes - 1)[:, None], PAD)
        answers = self._answer(tokens, sizes)  # [B]

        width = (self.context_length if self.context_length is not None else int(sizes.max())) - 1
        inputs = torch.full((batch_size, width), PAD, dtype=torch.long, device=device)
        inputs[:, :min(width, n)] = tokens[:, :width]
        targets = torch.full((batch_size, width), IGNORE_INDEX, dtype=torch.long, device=device)
        targets[torch.arange(batch_size, device=device), sizes - 2] = answers
        return inputs, targets

    def _sizes(self, batch_size, min_len, max_len, generator, device) -> torch.Tensor:
        return torch.randint(min_len, max_len + 1, (batch_size,), generator=generator, device=device)

    def _question(self, batch_size, n, sizes, generator, device) -> torch.Tensor:
        """Question tokens [B, n]; positions from size-1 on are overwritten with PAD afterwards."""
        raise NotImplementedError

    def _answer(self, tokens: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        """Answer tokens [B] from question tokens [B, n] (PAD past each question) and sizes [B]."""
        raise NotImplementedError


@dataclass(frozen=True)
class Parity(FormalLanguageTask):
    """Bits (tokens 1..V-1) then their parity: answer = (sum(tokens) - (size-1)) mod (V-1) + 1.

    With V = 3 the bits are 1 and 2 and the answer is (number of 2s mod 2) + 1.
    """

    name: ClassVar[str] = "parity"
    vocab_size: int = 3

    @property
    def num_answers(self) -> int:
        return self.vocab_size - 1

    def _question(self, batch_size, n, sizes, generator, device):
        return torch.randint(1, self.vocab_size, (batch_size, n), generator=generator, device=device)

    def _answer(self, tokens, sizes):
        # PAD adds 0 to the sum; subtracting size-1 maps tokens 1..V-1 to digits 0..V-2
        return torch.remainder(tokens.sum(1) - (sizes - 1), self.vocab_size - 1) + 1


@dataclass(frozen=True)
class EvenPairs(FormalLanguageTask):
    """Tokens 1..V-1, answer = |last - first| + 1: with V = 3, 1 when the first and last tokens agree, else 2.

    (For bits, first == last exactly when the number of 12 and 21 pairs is even, hence the name.)
    """

    name: ClassVar[str] = "even_pairs"
    vocab_size: int = 3
    min_size: ClassVar[int] = 3  # needs a first and a distinct last token

    @property
    def num_answers(self) -> int:
        return self.vocab_size - 1

    def _question(self, batch_size, n, sizes, generator, device):
        return torch.randint(1, self.vocab_size, (batch_size, n), generator=generator, device=device)

    def _answer(self, tokens, sizes):
        last = tokens.gather(1, (sizes - 2)[:, None]).squeeze(1)
        return (last - tokens[:, 0]).abs() + 1


@dataclass(frozen=True)
class CycleNavigation(FormalLanguageTask):
    """Steps on a cycle of V - 2 - 2*max_step_size positions, starting at 0; the answer is the final position.

    Step tokens 1..2*ms+1: token t <= ms+1 moves t-1 forward (token 1 stays), token t > ms+1 moves t-ms-1 back.
    Answer token = (sum of steps mod cycle) + 2*ms + 2; with V = 10, ms = 1: steps 1 (0), 2 (+1), 3 (-1), answers
    4..9 on a cycle of 6.
    """

    name: ClassVar[str] = "cycle_navigation"
    vocab_size: int = 10
    max_step_size: int = 1

    def __post_init__(self):
        _check_int("max_step_size", self.max_step_size, 1)
        super().__post_init__()

    def _min_vocab_size(self) -> int:
        return 2 * self.max_step_size + 4  # PAD, the step tokens and a cycle of at least 2

    @property
    def num_answers(self) -> int:
        return self.vocab_size - 2 - 2 * self.max_step_size

    def _question(self, batch_size, n, sizes, generator, device):
        return torch.randint(1, 2 * self.max_step_size + 2, (batch_size, n), generator=generator, device=device)

    def _answer(self, tokens, sizes):
        ms = self.max_step_size
        steps = torch.where(tokens <= ms + 1, tokens - 1, ms + 1 - tokens) * (tokens != PAD)
        return torch.remainder(steps.sum(1), self.num_answers) + 2 * ms + 2


@dataclass(frozen=True)
class ModularArithmetic(FormalLanguageTask):
    """An expression `n op n op ... n =` and its value modulo V - 5, with '*' binding tighter than '+' and '-'.

    Tokens: 1 '+', 2 '-', 3 '*', 4 '=', and numbers 5..V-1 for the values 0..V-6; answer = value mod (V-5) + 5.
    Sizes are odd (number, op, number, ..., number, '=', answer): as in the official generator they are uniform over
    the odd sizes in [min_len, max_len] after rounding each bound down to odd (so an even min_len allows min_len-1).
    """

    name: ClassVar[str] = "modular_arithmetic"
    vocab_size: int = 10
    min_size: ClassVar[int] = 3  # number, '=', answer

    PLUS: ClassVar[int] = 1
    MINUS: ClassVar[int] = 2
    TIMES: ClassVar[int] = 3
    EQUALS: ClassVar[int] = 4
    FIRST_NUMBER: ClassVar[int] = 5

    def _min_vocab_size(self) -> int:
        return self.FIRST_NUMBER + 2

    @property
    def num_answers(self) -> int:
        return self.vocab_size - self.FIRST_NUMBER

    def _sizes(self, batch_size, min_len, max_len, generator, device):
        half = torch.randint((min_len + 1) // 2, (max_len + 1) // 2 + 1, (batch_size,), generator=generator,
                             device=device)
        return 2 * half - 1

    def _question(self, batch_size, n, sizes, generator, device):
        numbers = torch.randint(self.FIRST_NUMBER, self.vocab_size, (batch_size, n), generator=generator,
                                device=device)
        ops = torch.randint(self.PLUS, self.TIMES + 1, (batch_size, n), generator=generator, device=device)
        tokens = torch.where(torch.arange(n, device=device) % 2 == 0, numbers, ops)
        tokens[torch.arange(batch_size, device=device), sizes - 2] = self.EQUALS
        return tokens

    def _answer(self, tokens, sizes):
        # evaluate left to right: `term` is the running product, closed into `total` at each '+' or '-'. All
        # arithmetic is mod M, which gives the exact answer without int64 overflow on long products
        M = self.num_answers
        values = tokens[:, 0::2] - self.FIRST_NUMBER  # numbers at even positions; junk past '=', never used
        ops = tokens[:, 1::2]
        num_count = (sizes - 1) // 2  # [B] numbers in each expression
        total = torch.zeros_like(sizes)
        term = torch.remainder(values[:, 0], M)
        sign = torch.ones_like(sizes)
        for j in range(1, values.shape[1]):
            op, value, active = ops[:, j - 1], torch.remainder(values[:, j], M), j < num_count
            times = op == self.TIMES
            new_total = torch.where(times, total, torch.remainder(total + sign * term, M))
            new_term = torch.where(times, torch.remainder(term * value, M), value)
            new_sign = torch.where(times, sign, torch.where(op == self.MINUS, -1, 1))
            total = torch.where(active, new_total, total)
            term = torch.where(active, new_term, term)
            sign = torch.where(active, new_sign, sign)
        return torch.remainder(total + sign * term, M) + self.FIRST_NUMBER


@dataclass(frozen=True)
class MQAR(Task):
    """Multi-query associative recall (Zoology): recall the value bound to each queried key.

    Vocabulary: keys are tokens 1..V//2-1, values V//2..V-1 (disjoint; 0 is PAD and never appears). Each sample
    of exactly seq_len tokens (P = num_kv_pairs, Q = num_queries):

        index     0   1   2   3  ...  2P-2  2P-1 | 2P  ...  seq_len-1
        inputs    k1  v1  k2  v2 ...  kP    vP   | noise, with query keys at some even offsets
        targets   -1 everywhere, except the value bound to the key at each query position

    The P keys are distinct, and so are the P values. The Q queries are distinct keys of the pairs in random order.
    The query region holds (seq_len - 2P) // 2 slots at even offsets 2P, 2P+2, ...; queries take Q of them without
    replacement, slot i (1-based) weighted by i**(power_a - 1) as in Zoology (power_a = 1: uniform; the default
    0.01 favours slots close to the pairs). All other positions are noise uniform over tokens 1..V-1, keys
    included, as Zoology's random non-queries.
    """

    name: ClassVar[str] = "mqar"
    vocab_size: int
    seq_len: int
    num_kv_pairs: int
    num_queries: int | None = None  # None: query every key
    power_a: float = 0.01

    def __post_init__(self):
        _check_int("num_kv_pairs", self.num_kv_pairs, 1)
        if self.num_queries is None:
            object.__setattr__(self, "num_queries", self.num_kv_pairs)  # frozen: resolve the default once
        _check_int("num_queries", self.num_queries, 1)
        if self.num_queries > self.num_kv_pairs:
            raise ValueError(f"num_queries ({self.num_queries}) must be <= num_kv_pairs ({self.num_kv_pairs})")
        _check_int("vocab_size", self.vocab_size, 4)
        if self.num_keys < self.num_kv_pairs or self.num_answers < self.num_kv_pairs:
            raise ValueError(
                f"vocab_size {self.vocab_size} has {self.num_keys} key and {self.num_answers} value tokens, too few "
                f"for {self.num_kv_pairs} distinct pairs; need vocab_size >= {2 * self.num_kv_pairs + 2}")
        _check_int("seq_len", self.seq_len, 1)
        if self.num_slots < self.num_queries:
            raise ValueError(
                f"seq_len {self.seq_len} leaves {self.num_slots} query slots after {self.num_kv_pairs} pairs, fewer "
                f"than num_queries {self.num_queries}; need seq_len >= {2 * self.num_kv_pairs + 2 * self.num_queries}")
        if not isinstance(self.power_a, int | float) or not self.power_a > 0:
            raise ValueError(f"power_a must be a positive number, got {self.power_a!r}")

    @property
    def num_keys(self) -> int:
        return self.vocab_size // 2 - 1

    @property
    def num_answers(self) -> int:
        return self.vocab_size - self.vocab_size // 2

    @property
    def num_slots(self) -> int:
        """Even offsets after the pairs where a query can go."""
        return (self.seq_len - 2 * self.num_kv_pairs) // 2

    def batch(
        self, batch_size: int, generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw batch_size samples. Returns (inputs, targets), both [B, seq_len], on the generator's device."""
        _check_int("batch_size", batch_size, 1)
        device = _device(generator)
        B, P, Q = batch_size, self.num_kv_pairs, self.num_queries
        rows = torch.arange(B, device=device)[:, None]

        def distinct(n: int, k: int, weights: torch.Tensor | None = None) -> torch.Tensor:
            """k distinct indices out of n per row, [B, k], in random order."""
            w = torch.ones(n, device=device) if weights is None else weights
            return torch.multinomial(w.expand(B, n), k, replacement=False, generator=generator)

        keys = distinct(self.num_keys, P) + 1  # [B, P]
        values = distinct(self.num_answers, P) + self.vocab_size // 2
        pair = distinct(P, Q)  # which pairs get queried, [B, Q]
        slot_weights = torch.arange(1, self.num_slots + 1, device=device, dtype=torch.float64) ** (self.power_a - 1)
        positions = 2 * P + 2 * distinct(self.num_slots, Q, slot_weights)  # [B, Q]

        inputs = torch.randint(1, self.vocab_size, (B, self.seq_len), generator=generator, device=device)
        inputs[:, 0:2 * P:2] = keys
        inputs[:, 1:2 * P:2] = values
        inputs[rows, positions] = keys.gather(1, pair)
        targets = torch.full((B, self.seq_len), IGNORE_INDEX, dtype=torch.long, device=device)
        targets[rows, positions] = values.gather(1, pair)
        return inputs, targets


TASKS: dict[str, type[Task]] = {
    cls.name: cls for cls in (Parity, EvenPairs, CycleNavigation, ModularArithmetic, MQAR)
}


def make_task(name: str, **kwargs) -> Task:
    """Build a task by name from TASKS. Raises ValueError on unknown tasks, unknown or missing arguments, bad values."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    cls = TASKS[name]
    accepted = [f.name for f in fields(cls) if f.init]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"{name}: unknown argument(s) {unknown}; accepted: {accepted}")
    missing = [f.name for f in fields(cls)
               if f.init and f.default is MISSING and f.default_factory is MISSING and f.name not in kwargs]
    if missing:
        raise ValueError(f"{name}: missing required argument(s) {missing}")
    return cls(**kwargs)


def seeded_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator whose stream depends only on (seed, step); hashing decorrelates neighbouring pairs."""
    digest = hashlib.blake2b(f"{seed}/{step}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little"))


@dataclass(frozen=True)
class Split:
    """A reproducible stream of batches of one task: batch k is drawn from seeded_generator(seed, k).

    task: a formal-language task (then min_len and max_len are required) or MQAR (then they must be None).
    count: samples in the split (the last batch may be short), or None for an endless stream.
    Batches depend on (seed, k, batch_size): the same batch size always gives the same samples. Batches are made on
    CPU; move them with `.to(device)`.
    """

    task: Task
    seed: int
    count: int | None = None
    min_len: int | None = None
    max_len: int | None = None

    def __post_init__(self):
        if not isinstance(self.task, Task):
            raise ValueError(f"task must be a Task (see make_task), got {type(self.task).__name__}")
        _check_int("seed", self.seed, 0)
        if self.count is not None:
            _check_int("count", self.count, 1)
        if isinstance(self.task, FormalLanguageTask):
            if self.min_len is None or self.max_len is None:
                raise ValueError(f"{self.task.name}: a formal-language split needs min_len and max_len")
            self.task.check_lengths(self.min_len, self.max_len)
        elif self.min_len is not None or self.max_len is not None:
            raise ValueError(f"{self.task.name}: sequence length is fixed by the task; leave min_len, max_len None")

    def num_batches(self, batch_size: int) -> int | None:
        """Batches in the split (None when endless)."""
        _check_int("batch_size", batch_size, 1)
        return None if self.count is None else -(-self.count // batch_size)

    def batch(
        self, step: int, batch_size: int, rank: int = 0, world_size: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rank's rows of global batch `step`: torch.tensor_split(global_batch, world_size)[rank], (inputs, targets).

        Every rank draws the whole global batch (cheap next to a training step) and keeps its part, so the parts
        are exactly the rows and padding of the world_size = 1 batch. batch_size is the global batch size.
        """
        _check_int("step", step, 0)
        _check_int("world_size", world_size, 1)
        _check_int("rank", rank, 0)
        if rank >= world_size:
            raise ValueError(f"rank ({rank}) must be < world_size ({world_size})")
        num_batches = self.num_batches(batch_size)
        if num_batches is not None and step >= num_batches:
            raise IndexError(f"step {step} is past the split's {num_batches} batches of {batch_size}")
        rows = batch_size if self.count is None else min(batch_size, self.count - step * batch_size)
        generator = seeded_generator(self.seed, step)
        if isinstance(self.task, FormalLanguageTask):
            inputs, targets = self.task.batch(rows, self.min_len, self.max_len, generator)
        else:
            inputs, targets = self.task.batch(rows, generator)
        return inputs.tensor_split(world_size)[rank], targets.tensor_split(world_size)[rank]

    def batches(
        self, batch_size: int, start: int = 0, rank: int = 0, world_size: int = 1,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches start, start+1, ... to the end of the split (forever when endless); start resumes a run."""
        num_batches = self.num_batches(batch_size)
        step = start
        while num_batches is None or step < num_batches:
            yield self.batch(step, batch_size, rank, world_size)
            step += 1


def make_split(name: str, *, seed: int, count: int | None = None, min_len: int | None = None,
               max_len: int | None = None, **task_kwargs) -> Split:
    """Split(make_task(name, **task_kwargs), seed, count, min_len, max_len)."""
    return Split(make_task(name, **task_kwargs), seed, count, min_len, max_len)
