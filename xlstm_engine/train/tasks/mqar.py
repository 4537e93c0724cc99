"""MQAR, multi-query associative recall (Arora et al. 2023, "Zoology"): key-value pairs, then queries of some keys;
the model must answer each query with the value bound to that key earlier in the sequence (layout in `MQAR`)."""

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import IGNORE_INDEX, Task, check_int, generator_device


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
        check_int("num_kv_pairs", self.num_kv_pairs, 1)
        if self.num_queries is None:
            object.__setattr__(self, "num_queries", self.num_kv_pairs)  # frozen: resolve the default once
        check_int("num_queries", self.num_queries, 1)
        if self.num_queries > self.num_kv_pairs:
            raise ValueError(f"num_queries ({self.num_queries}) must be <= num_kv_pairs ({self.num_kv_pairs})")
        check_int("vocab_size", self.vocab_size, 4)
        if self.num_keys < self.num_kv_pairs or self.num_answers < self.num_kv_pairs:
            raise ValueError(
                f"vocab_size {self.vocab_size} has {self.num_keys} key and {self.num_answers} value tokens, too few "
                f"for {self.num_kv_pairs} distinct pairs; need vocab_size >= {2 * self.num_kv_pairs + 2}")
        check_int("seq_len", self.seq_len, 1)
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

    def check_lengths(self, min_len: int | None, max_len: int | None) -> None:
        """Every sample is seq_len tokens: raise ValueError unless min_len and max_len are both None."""
        if min_len is not None or max_len is not None:
            raise ValueError(f"{self.name}: sequence length is fixed by the task; leave min_len, max_len None")

    def batch(
        self, batch_size: int, generator: torch.Generator | None = None, *,
        min_len: int | None = None, max_len: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw batch_size samples. Returns (inputs, targets), both [B, seq_len], on the generator's device.

        min_len and max_len are part of the batch() protocol (see `Task`) and must be None.
        """
        check_int("batch_size", batch_size, 1)
        self.check_lengths(min_len, max_len)
        device = generator_device(generator)
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
