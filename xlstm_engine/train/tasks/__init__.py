"""Synthetic sequence tasks for training xLSTM models, drawn on the fly from a torch.Generator.

Every task makes batches (inputs [B, S] long, targets [B, S] long) through one protocol (`Task.batch`):

    inputs, targets = task.batch(batch_size, min_len=..., max_len=..., generator=...)

Inputs use token PAD (0) for padding; targets hold IGNORE_INDEX (-1) wherever there is nothing to predict, so
`F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)` trains on the answers only.

    base.py     PAD, IGNORE_INDEX, the Task base and its batch() protocol
    formal.py   the formal languages of the xLSTM paper: parity, even_pairs, cycle_navigation, modular_arithmetic
    mqar.py     multi-query associative recall
    here        TASKS (name -> class) and make_task

Reproducible streams of batches (any step's batch regenerated exactly, disjoint rows per process) are in
`xlstm_engine.train.streams`.
"""

from dataclasses import MISSING, fields

from .base import IGNORE_INDEX, PAD, Task
from .formal import CycleNavigation, EvenPairs, FormalLanguageTask, ModularArithmetic, Parity
from .mqar import MQAR

__all__ = [
    "IGNORE_INDEX", "MQAR", "PAD", "TASKS", "CycleNavigation", "EvenPairs", "FormalLanguageTask",
    "ModularArithmetic", "Parity", "Task", "make_task",
]

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

