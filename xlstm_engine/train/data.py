"""Training data: batches (inputs, targets, resets) for a step, reproducible and split over processes.

Datasets (the `dataset.name` of a training config):
    form_language  the official formal-language experiments (parity, even_pairs, cycle_navigation,
                   modular_arithmetic), with the official kwargs; every `count` entry except train and test is
                   an evaluation split, with its lengths from `subpar`
    mqar           multi-query associative recall
    text           causal language modelling on local text files: documents are packed into rows and the state
                   is reset at each document start, so that no information crosses documents
"""

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from ..config.base import require
from .streams import Split, seeded_generator
from .tasks import IGNORE_INDEX, make_task


class Batch(NamedTuple):
    inputs: torch.Tensor  # [B, S] token ids
    targets: torch.Tensor  # [B, S] next-token ids, -1 where there is nothing to predict
    resets: torch.Tensor | None = None  # [B, S] bool: a document starts at this token

    def to(self, device) -> "Batch":
        return Batch(*(None if t is None else t.to(device, non_blocking=True) for t in self))

    def split(self, parts: int) -> list["Batch"]:
        """`parts` batches of consecutive rows (for gradient accumulation)."""
        pieces = [t.tensor_split(parts) if t is not None else [None] * parts for t in self]
        return [Batch(*rows) for rows in zip(*pieces, strict=True)]


class TaskData:
    """A train split (endless) and named evaluation splits of a synthetic task."""

    def __init__(self, train: Split, evals: dict[str, Split]):
        self.train, self.evals = train, evals
        self.vocab_size = train.task.vocab_size
        self.eval_splits = list(evals)

    def train_batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> Batch:
        return Batch(*self.train.batch(step, batch_size, rank, world_size))

    def eval_batches(self, split: str, batch_size: int, rank: int = 0, world_size: int = 1, limit: int | None = None):
        num = self.evals[split].num_batches(batch_size)
        for step in range(num if limit is None else min(num, limit)):
            yield Batch(*self.evals[split].batch(step, batch_size, rank, world_size))


FORM_LANGUAGE_KEYS = {
    "synth_lang_type", "vocab_size", "seed", "enable_mask", "context_length", "min_sequence_length",
    "max_sequence_length", "count", "subpar", "pad_idx", "shift", "max_step_size", "batch_size",
    "additional_prefix_tokens", "additional_suffix_tokens", "additional_premask_tokens",
}


def form_language(kwargs: dict) -> TaskData:
    """The official `form_language` dataset section."""
    _check_keys("dataset.kwargs (form_language)", kwargs, FORM_LANGUAGE_KEYS)
    require(kwargs.get("enable_mask", True), "dataset.kwargs.enable_mask: only the masked (one answer) form exists")
    require(kwargs.get("shift", 1) == 1 and kwargs.get("pad_idx", 0) == 0,
            "dataset.kwargs: shift must be 1 and pad_idx 0, as in the official experiments")
    for key in ("additional_prefix_tokens", "additional_suffix_tokens", "additional_premask_tokens"):
        require(kwargs.get(key, 0) == 0, f"dataset.kwargs.{key} is not supported (must be 0)")
    task_kwargs = dict(vocab_size=kwargs.get("vocab_size", 3))
    if "max_step_size" in kwargs and kwargs.get("synth_lang_type") == "cycle_navigation":
        task_kwargs["max_step_size"] = kwargs["max_step_size"]
    task = make_task(kwargs.get("synth_lang_type", "parity"), **task_kwargs)
    seed = kwargs.get("seed", 42)
    counts, subpar = kwargs.get("count") or {}, kwargs.get("subpar") or {}
    unknown = sorted(set(subpar) - set(counts))
    require(not unknown, f"dataset.kwargs.subpar has split(s) {unknown} without a count")
    context = kwargs.get("context_length")

    def split(name: str, index: int, count: int | None) -> Split:
        lengths = {**kwargs, **subpar.get(name, {})}
        min_len, max_len = lengths.get("min_sequence_length", 1), lengths.get("max_sequence_length", context)
        require(max_len is not None, f"dataset.kwargs: {name} needs max_sequence_length (or context_length)")
        require(context is None or max_len <= context,
                f"dataset.kwargs: {name} max_sequence_length {max_len} exceeds context_length {context}")
        # the padded length only costs compute; a causal model's answer does not depend on it
        return Split(task, seed=seed * 1000 + index, count=count, min_len=max(min_len, task.min_size), max_len=max_len)

    evals = {name: split(name, index + 1, count) for index, (name, count) in enumerate(counts.items())
             if name not in ("train", "test")}
    return TaskData(split("train", 0, None), evals)


MQAR_KEYS = {"vocab_size", "seq_len", "num_kv_pairs", "num_queries", "power_a", "seed", "count"}


def mqar(kwargs: dict) -> TaskData:
    _check_keys("dataset.kwargs (mqar)", kwargs, MQAR_KEYS)
    task = make_task("mqar", **{k: v for k, v in kwargs.items() if k not in ("seed", "count")})
    seed, counts = kwargs.get("seed", 42), kwargs.get("count") or {"validation": 1024}
    evals = {name: Split(task, seed=seed * 1000 + index + 1, count=count)
             for index, (name, count) in enumerate(counts.items()) if name not in ("train", "test")}
    return TaskData(Split(task, seed=seed * 1000), evals)


TEXT_KEYS = {"train_files", "val_files", "tokenizer", "context_length", "document_separator", "seed"}


@dataclass
class TokenStream:
    tokens: torch.Tensor  # [N] int64, documents back to back, each ending with the end token if there is one
    starts: torch.Tensor  # [N] bool: a document starts here


class TextData:
    """Local text files, tokenized once, packed into rows of context_length tokens (+1 for the targets).

    Documents are the files, or their parts between `document_separator`. Each ends with the tokenizer's
    end-of-document token (bytes: 256) if it has one; the token after a document's last one is never a target
    across documents. Train rows are drawn at random positions per step (seeded); evaluation reads the val files
    in order.
    """

    def __init__(self, kwargs: dict):
        _check_keys("dataset.kwargs (text)", kwargs, TEXT_KEYS)
        require("train_files" in kwargs, "dataset.kwargs.train_files: give the text files (a list or a glob)")
        self.context = kwargs.get("context_length", 512)
        require(isinstance(self.context, int) and self.context >= 1,
                f"dataset.kwargs.context_length must be a positive int, got {self.context!r}")
        self.seed = kwargs.get("seed", 42)
        self.encode, self.vocab_size, self.end = _tokenizer(kwargs.get("tokenizer", "bytes"))
        separator = kwargs.get("document_separator")
        self.train = self._stream("train_files", kwargs["train_files"], separator)
        self.val = self._stream("val_files", kwargs["val_files"], separator) if kwargs.get("val_files") else None
        self.eval_splits = ["validation"] if self.val is not None else []

    def _stream(self, key: str, spec, separator: str | None) -> TokenStream:
        """The documents of the files of dataset.kwargs[key]; at least one row's worth of tokens, checked here
        (before the first step), not at the first evaluation."""
        files = _files(spec, key)
        tokens, starts = [], []  # one tensor per document: a Python int per token would cost ~4x the memory
        for file in files:
            text = file.read_text(encoding="utf-8", errors="replace")
            for document in (text.split(separator) if separator else [text]):
                ids = self.encode(document) + ([] if self.end is None else [self.end])
                if ids:
                    tokens.append(torch.tensor(ids, dtype=torch.long))
                    starts.append(torch.arange(len(ids)) == 0)
        count = sum(len(t) for t in tokens)
        # a row is context_length inputs plus the target of the last one; the files are packed, so their sum counts
        shown = ", ".join(map(str, files[:3])) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        require(count > self.context, f"dataset.kwargs.{key}: {shown} hold {count} tokens, fewer than the "
                f"{self.context + 1} (context_length + 1) that one row needs; give more text or lower "
                f"dataset.kwargs.context_length")
        return TokenStream(torch.cat(tokens), torch.cat(starts))

    def _rows(self, stream: TokenStream, offsets: torch.Tensor) -> Batch:
        index = offsets[:, None] + torch.arange(self.context + 1)
        tokens, starts = stream.tokens[index], stream.starts[index]
        targets = tokens[:, 1:].masked_fill(starts[:, 1:], IGNORE_INDEX)  # never predict across documents
        return Batch(tokens[:, :-1], targets, starts[:, :-1])

    def train_batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> Batch:
        generator = seeded_generator(self.seed, step)
        offsets = torch.randint(0, len(self.train.tokens) - self.context, (batch_size,), generator=generator)
        return self._rows(self.train, offsets.tensor_split(world_size)[rank])

    def eval_batches(self, split: str, batch_size: int, rank: int = 0, world_size: int = 1, limit: int | None = None):
        offsets = torch.arange(0, len(self.val.tokens) - self.context, self.context)
        batches = offsets.split(batch_size)
        for rows in batches if limit is None else batches[:limit]:
            yield self._rows(self.val, rows.tensor_split(world_size)[rank])


def _files(spec, key: str) -> list[Path]:
    patterns = [spec] if isinstance(spec, str) else list(spec)
    files = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(pattern)))
        require(matches, f"dataset.kwargs.{key}: no file matches {pattern!r}")
        files += [Path(m) for m in matches]
    return files


def _tokenizer(spec: str):
    """(encode, vocab_size, end-of-document id or None) for "bytes" or a `tokenizers` folder / tokenizer.json."""
    if spec == "bytes":
        return (lambda text: list(text.encode("utf-8"))), 257, 256
    path = Path(spec)
    path = path / "tokenizer.json" if path.is_dir() else path
    require(path.exists(), f"dataset.kwargs.tokenizer: {spec!r} is neither 'bytes' nor a tokenizers folder or file")
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    end = next((tokenizer.token_to_id(t) for t in ("<|endoftext|>", "</s>", "<eos>", "[SEP]")
                if tokenizer.token_to_id(t) is not None), None)
    return (lambda text: tokenizer.encode(text).ids), tokenizer.get_vocab_size(), end


def _check_keys(where: str, kwargs: dict, known: set[str]) -> None:
    unknown = sorted(set(kwargs) - known)
    require(not unknown, f"{where}: unknown key(s) {unknown}; expected some of {sorted(known)}")


DATASETS = {"form_language": form_language, "mqar": mqar, "text": TextData}


def build_data(dataset):
    """The data of a DatasetConfig (name, kwargs)."""
    require(dataset.name in DATASETS, f"unknown dataset.name {dataset.name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[dataset.name](dict(dataset.kwargs))
