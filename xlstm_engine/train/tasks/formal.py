"""The formal languages of the xLSTM paper's NeurIPS experiments (NX-AI/xlstm, experiments/data/formal_language):
parity, even_pairs, cycle_navigation, modular_arithmetic.

A sample of `size` tokens is a question of size-1 tokens followed by its answer. The official dataset
(enable_mask=True, shift=1) blanks the answer out of the inputs and shifts targets left by one, so the single
target sits under the last question token:

    index     0    1    ...  size-2       size-1 ...  S-1
    inputs    q0   q1   ...  q_{size-2}   PAD    ...  PAD
    targets   -1   -1   ...  answer       -1     ...  -1

Rows are padded to S = (longest size in the batch) - 1, or to S = context_length - 1 when the task sets one (the
official runs use context_length 256: rows of 255).
"""

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import IGNORE_INDEX, PAD, Task, check_int, generator_device


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
        check_int("vocab_size", self.vocab_size, self._min_vocab_size())
        if self.context_length is not None:
            check_int("context_length", self.context_length, self.min_size)

    def _min_vocab_size(self) -> int:
        return 3  # PAD and at least two answers, or the task is trivial

    def check_lengths(self, min_len: int | None, max_len: int | None) -> None:
        """Raise ValueError unless sizes drawn from [min_len, max_len] are valid for this task."""
        if min_len is None or max_len is None:
            raise ValueError(f"{self.name}: a formal-language split needs min_len and max_len")
        check_int("min_len", min_len, self.min_size)
        check_int("max_len", max_len, self.min_size)
        if min_len > max_len:
            raise ValueError(f"min_len ({min_len}) must be <= max_len ({max_len})")
        if self.context_length is not None and max_len > self.context_length:
            raise ValueError(f"max_len ({max_len}) must be <= context_length ({self.context_length})")

    def batch(
        self, batch_size: int, min_len: int | None = None, max_len: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw batch_size samples with sizes uniform in [min_len, max_len]. Returns (inputs, targets), both [B, S].

        Tensors live on the generator's device (CPU without one; then the global RNG is used).
        """
        check_int("batch_size", batch_size, 1)
        self.check_lengths(min_len, max_len)
        device = generator_device(generator)
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
        check_int("max_step_size", self.max_step_size, 1)
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
