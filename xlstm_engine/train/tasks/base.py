"""What every task shares: the token conventions, argument checks and the `Task` base with its batch() protocol."""

from typing import ClassVar

import torch

PAD = 0  # padding in the inputs
IGNORE_INDEX = -1  # a target with nothing to predict (cross_entropy's ignore_index)


def check_int(name: str, value, minimum: int) -> None:
    """Raise ValueError unless value is an int (not a bool) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def generator_device(generator: torch.Generator | None) -> torch.device:
    """Where a batch drawn from `generator` lives: the generator's device, or the CPU (global RNG) without one."""
    return generator.device if generator is not None else torch.device("cpu")


class Task:
    """What every task exposes: its name, vocabulary size, number of answer tokens and chance accuracy, and batches.

    The batch() protocol, the same for every task:

        inputs, targets = task.batch(batch_size, min_len=..., max_len=..., generator=...)   # both [B, S] long

    min_len and max_len are the range of sample sizes. A task whose samples vary in length (the formal languages)
    needs both; a task whose length is fixed by its own fields (MQAR) needs both None. `check_lengths` validates
    such a pair without drawing anything, so a stream can reject it when it is built. Callers pass everything
    after batch_size by keyword and never need to know which kind of task they hold; each task also keeps a
    positional form of its own for direct use (`Parity().batch(8, 3, 20, g)`, `MQAR(...).batch(8, g)`).
    """

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

    def check_lengths(self, min_len: int | None, max_len: int | None) -> None:
        """Raise ValueError unless batch() accepts this range of sample sizes."""
        raise NotImplementedError

    def batch(
        self, batch_size: int, *, min_len: int | None = None, max_len: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw batch_size samples. Returns (inputs, targets), both [B, S] long, on the generator's device (CPU
        without one; then the global RNG is used)."""
        raise NotImplementedError
