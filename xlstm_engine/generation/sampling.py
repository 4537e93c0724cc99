"""Logits processing (repetition penalty, temperature, top-k, top-p, min-p) and the choice of the next token.

The semantics are transformers' (generation/logits_process.py), written from their definitions:

- repetition_penalty p: a logit l of a token seen before becomes l / p if l > 0, else l * p (greedy too);
- temperature T: l / T; top_k k: keep the k largest logits (ties with the k-th kept); top_p: keep the most
  probable tokens until their mass reaches top_p (a token is dropped when the tokens ranked above it already hold
  >= top_p); min_p: drop tokens whose probability is below min_p times the largest probability. Applied in this
  order, and only when sampling. The most probable token always survives.

Sampling draws one exponential race per row: argmax(p / E), E ~ Exp(1) i.i.d. over the vocabulary, which picks
token v with probability p_v. A row with its own generator draws its own E [1, V], so a batch row gets exactly
what that row alone with the same generator gets; a single generator draws E [B, V] at once. No step syncs with
the host, so the step can be captured in a CUDA graph later.
"""

import math
import warnings
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    """Validated sampling settings. temperature 0 means greedy (the limit of sampling as T -> 0), with or without
    do_sample; top_k 0 or None, top_p 1 or None, min_p 0 or None, repetition_penalty 1 or None turn each off."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None

    def __post_init__(self):
        if not isinstance(self.do_sample, bool):
            raise TypeError(f"do_sample must be True or False, got {self.do_sample!r}")
        _check_number("temperature", self.temperature, 0, math.inf, "a number >= 0 (0: greedy)")
        if self.top_k is not None and (not isinstance(self.top_k, int) or isinstance(self.top_k, bool)
                                       or self.top_k < 0):
            raise ValueError(f"top_k must be an int >= 0 (0 or None: off), got {self.top_k!r}")
        if self.top_p is not None:
            _check_number("top_p", self.top_p, 0, 1, "a number in (0, 1] (1 or None: off)", low_open=True)
        if self.min_p is not None:
            _check_number("min_p", self.min_p, 0, 1, "a number in [0, 1] (0 or None: off)")
        if self.repetition_penalty is not None:
            _check_number("repetition_penalty", self.repetition_penalty, 0, math.inf,
                          "a number > 0 (1 or None: off; > 1 discourages repeats)", low_open=True)
        sampling_only = (self.temperature not in (0, 1), self.top_k, self.top_p is not None, self.min_p is not None)
        if not self.do_sample and any(sampling_only):
            warnings.warn("temperature, top_k, top_p and min_p apply only with do_sample=True; decoding greedily",
                          UserWarning, stacklevel=5)  # the caller of generate / stream

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0

    @property
    def penalizes(self) -> bool:
        return self.repetition_penalty not in (None, 1.0)


def _check_number(name: str, value, low: float, high: float, expected: str, low_open: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def process_logits(logits: torch.Tensor, params: SamplingParams, seen: torch.Tensor | None) -> torch.Tensor:
    """logits [B, V] float32 -> scores [B, V]: the penalty, then (when sampling) temperature and the filters, with
    filtered tokens at -inf. seen [B, V] bool: the tokens each row has had (for the penalty), or None."""
    if params.penalizes and seen is not None:
        p = params.repetition_penalty
        logits = torch.where(seen, torch.where(logits > 0, logits / p, logits * p), logits)
    if params.greedy:
        return logits
    if params.temperature != 1.0:
        logits = logits / params.temperature
    if params.top_k:
        kth = torch.topk(logits, min(params.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if params.top_p is not None and params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        above = probs.cumsum(dim=-1) - probs  # the mass of the tokens ranked above each one
        drop = above >= params.top_p
        drop[:, 0] = False
        logits = logits.masked_fill(drop.scatter(1, order, drop), -math.inf)
    if params.min_p:
        probs = logits.softmax(dim=-1)
        drop = probs < params.min_p * probs.amax(dim=-1, keepdim=True)
        logits = logits.masked_fill(drop, -math.inf)  # the top token has probs == amax, never dropped
    return logits


def pick(scores: torch.Tensor, params: SamplingParams,
         generator: torch.Generator | list[torch.Generator] | None) -> torch.Tensor:
    """scores [B, V] -> the next tokens [B] (int64): argmax when greedy, else one exponential race per row."""
    if params.greedy:
        return scores.argmax(dim=-1)
    probs = scores.softmax(dim=-1)
    if isinstance(generator, list):
        noise = torch.cat([_exponential((1, probs.shape[1]), probs.device, g) for g in generator])
    else:
        noise = _exponential(probs.shape, probs.device, generator)
    return (probs / noise).argmax(dim=-1)


def _exponential(shape, device, generator: torch.Generator | None) -> torch.Tensor:
    """Exp(1) samples, never 0 (a 0 would make p / E infinite, or NaN for a filtered token)."""
    noise = torch.empty(shape, device=device, dtype=torch.float32).exponential_(generator=generator)
    return noise.clamp_min_(torch.finfo(torch.float32).tiny)


def make_generators(generator, seed, batch_size: int, device: torch.device):
    """The `generator` / `seed` arguments as None, one torch.Generator, or a list of `batch_size` generators,
    each on `device` (the draws are made where the logits are)."""
    if seed is not None:
        if generator is not None:
            raise ValueError("give seed or generator, not both")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {seed!r}")
        return torch.Generator(device=device).manual_seed(seed)
    if generator is None:
        return None
    gens = generator if isinstance(generator, list | tuple) else [generator]
    if isinstance(generator, list | tuple) and len(gens) != batch_size:
        raise ValueError(f"generator must be one torch.Generator or a list of one per row ({batch_size}), "
                         f"got a list of {len(gens)}")
    for g in gens:
        if not isinstance(g, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or a list of them, got a {type(g).__name__}")
        if g.device.type != device.type:
            raise ValueError(f"generator is on {g.device} but the logits are on {device}; create it with "
                             f"torch.Generator(device={str(device)!r})")
    return list(gens) if isinstance(generator, list | tuple) else generator
