"""Reproducible streams of batches: batch k of a stream is drawn from a generator seeded by (seed, k) alone.

So any batch can be regenerated exactly (a resumed run continues with the batches it would have seen), and several
processes can draw disjoint rows of the same global batch without talking to each other.

    seeded_generator(seed, step)   the generator of one step (also used by the text data)
    Split                          a task's stream: split.batch(step, batch_size, rank, world_size)
    make_split                     Split(make_task(name, ...), ...)
"""

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .tasks import Task, make_task
from .tasks.base import check_int


def seeded_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator whose stream depends only on (seed, step); hashing decorrelates neighbouring pairs."""
    digest = hashlib.blake2b(f"{seed}/{step}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little"))


@dataclass(frozen=True)
class Split:
    """A reproducible stream of batches of one task: batch k is drawn from seeded_generator(seed, k).

    task: any Task; min_len and max_len are passed to its batch() (a formal-language task needs them, MQAR needs
    them None), and checked here, when the split is built.
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
        check_int("seed", self.seed, 0)
        if self.count is not None:
            check_int("count", self.count, 1)
        self.task.check_lengths(self.min_len, self.max_len)

    def num_batches(self, batch_size: int) -> int | None:
        """Batches in the split (None when endless)."""
        check_int("batch_size", batch_size, 1)
        return None if self.count is None else -(-self.count // batch_size)

    def batch(
        self, step: int, batch_size: int, rank: int = 0, world_size: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rank's rows of global batch `step`: torch.tensor_split(global_batch, world_size)[rank], (inputs, targets).

        Every rank draws the whole global batch (cheap next to a training step) and keeps its part, so the parts
        are exactly the rows and padding of the world_size = 1 batch. batch_size is the global batch size.
        """
        check_int("step", step, 0)
        check_int("world_size", world_size, 1)
        check_int("rank", rank, 0)
        if rank >= world_size:
            raise ValueError(f"rank ({rank}) must be < world_size ({world_size})")
        num_batches = self.num_batches(batch_size)
        if num_batches is not None and step >= num_batches:
            raise IndexError(f"step {step} is past the split's {num_batches} batches of {batch_size}")
        rows = batch_size if self.count is None else min(batch_size, self.count - step * batch_size)
        inputs, targets = self.task.batch(rows, min_len=self.min_len, max_len=self.max_len,
                                          generator=seeded_generator(self.seed, step))
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
