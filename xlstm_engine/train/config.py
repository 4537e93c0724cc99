"""The training config: YAML with `training`, `model` and `dataset` sections (the official experiment layout),
OmegaConf-style `${...}` references, and `key.path=value` overrides. Strict: unknown keys are errors.

    training:  TrainingConfig fields (the official ones, plus clipping, accumulation, checkpoints, distribution)
    model:     xLSTMLMModelConfig fields (architecture: neurips) or xLSTMLargeConfig fields (architecture: large)
    dataset:   {name: form_language | mqar | text, kwargs: {...}}
    runtime:   RuntimeOptions fields (optional)
"""

import copy
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.base import ConfigMixin, check_type, config_class, load_yaml, require, yaml_text

ARCHITECTURES = ("neurips", "large")  # the keys of train.models.MODELS
DISTRIBUTED = ("ddp", "fsdp")
PRECISIONS = ("float32", "bfloat16", "float16")  # names in config.dtypes.FLOAT_DTYPES (no float64 autocast)


@dataclass
class TrainingConfig(ConfigMixin):
    # the official experiment fields
    batch_size: int = 256  # the global batch, over all processes and accumulation steps
    lr: float = 1e-3
    seed: int = 42
    val_every_step: int = 200
    lr_warmup_steps: int = 2000
    lr_decay_until_steps: int = 20000
    lr_decay_factor: float = 1e-3  # the final learning rate is lr * lr_decay_factor
    weight_decay: float = 0.1
    num_steps: int = 20000
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...; "cuda" without a GPU falls back to the CPU
    amp_precision: str = "bfloat16"  # autocast dtype on GPU
    weight_precision: str = "float32"
    enable_mixed_precision: bool = True
    # additions
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float | None = None  # max global gradient norm; None: no clipping (the official runs)
    grad_accum_steps: int = 1
    log_every: int = 10
    checkpoint_every: int = 0  # steps; 0: only at the end
    out_dir: str = "runs/xlstm"
    val_batches: int | None = None  # cap on validation batches per split; None: the whole split; 0: no evaluation
    distributed: str = "ddp"  # under torchrun: "ddp" or "fsdp"
    activation_checkpointing: bool = False
    progress_bar: bool = True

    def __post_init__(self):
        for name in ("batch_size", "num_steps", "grad_accum_steps", "log_every", "val_every_step"):
            require(isinstance(getattr(self, name), int) and getattr(self, name) >= 1,
                    f"training.{name} must be a positive int, got {getattr(self, name)!r}")
        require(self.lr > 0, f"training.lr must be > 0, got {self.lr}")
        require(self.batch_size % self.grad_accum_steps == 0,
                f"training.batch_size={self.batch_size} must be a multiple of grad_accum_steps={self.grad_accum_steps}")
        require(self.distributed in DISTRIBUTED,
                f"training.distributed must be one of {DISTRIBUTED}, got {self.distributed!r}")
        for name in ("amp_precision", "weight_precision"):
            require(getattr(self, name) in PRECISIONS,
                    f"training.{name} must be one of {PRECISIONS}, got {getattr(self, name)!r}")
        require(self.grad_clip is None or self.grad_clip > 0, f"training.grad_clip must be > 0, got {self.grad_clip}")
        require(self.val_batches is None or (type(self.val_batches) is int and self.val_batches >= 0),
                f"training.val_batches must be None (the whole split), 0 (no evaluation) or a positive int, "
                f"got {self.val_batches!r}")
        require(len(self.betas) == 2, f"training.betas must be two numbers, got {self.betas}")


@dataclass
class DatasetConfig(ConfigMixin):
    name: str = "form_language"
    kwargs: dict = field(default_factory=dict)


@dataclass
class RunConfig(ConfigMixin):
    training: TrainingConfig = field(default_factory=TrainingConfig)
    model: dict = field(default_factory=dict)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    architecture: str = "neurips"
    runtime: dict = field(default_factory=dict)

    def __post_init__(self):
        require(self.architecture in ARCHITECTURES,
                f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")


def load_config(source: str | Path | dict | None, overrides: list[str] = ()) -> RunConfig:
    """A RunConfig from a YAML file, YAML text or a dict, with `a.b.c=value` overrides applied before the
    `${...}` references are resolved (so `training.num_steps=500` also moves `${.num_steps}`).

    A Path, or a string that names an existing file, is read as a file whatever its suffix. A string with a
    newline, or one line with a `key: value` that does not end in .yaml/.yml, is YAML text. Any other string
    (`RUN.YAML`, `configs/run`) is the path of a missing file: ValueError "no such config file".
    """
    if isinstance(source, dict):
        data = copy.deepcopy(source)
    else:
        data = (load_yaml(yaml_text(source)) if source is not None else None) or {}
    for override in overrides:
        apply_override(data, override)
    # before the references: `training.num_steps=abc` must blame num_steps, not the keys that refer to it
    _check_types(RunConfig, data, "RunConfig")
    return RunConfig.from_dict(resolve_references(data))




def _check_types(cls, data, path: str) -> None:
    """Check the types of the values given for the fields of a config class (recursively), skipping `${...}`
    references and unknown keys (from_dict reports these later)."""
    if not isinstance(data, dict):
        return
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if key not in hints:
            continue
        nested = config_class(hints[key])
        if nested is not None:
            _check_types(nested, value, f"{path}.{key}")
        elif not _has_reference(value):
            check_type(value, hints[key], f"{path}.{key}")


def _has_reference(value) -> bool:
    if isinstance(value, dict):
        return any(map(_has_reference, value.values()))
    if isinstance(value, list):
        return any(map(_has_reference, value))
    return isinstance(value, str) and "${" in value


def apply_override(data: dict, override: str) -> None:
    """Set one `dotted.key=value` in `data`; the value is read as YAML (numbers, booleans, lists)."""
    key, sep, value = override.partition("=")
    if not sep or not key:
        raise ValueError(f"override {override!r} must look like key.path=value, e.g. training.num_steps=500")
    *parents, last = key.strip().split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {override!r}: {part!r} is not a section")
    node[last] = load_yaml(value)


_REFERENCE = re.compile(r"\$\{([^}]*)\}")


def resolve_references(data: dict) -> dict:
    """Replace OmegaConf-style references: `${a.b}` from the root, `${.x}` from the same section, `${..x}` from
    its parent. A value that is only a reference keeps the referenced type."""

    def lookup(path: str, where: list[str], seen: tuple[str, ...]):
        dots = len(path) - len(path.lstrip("."))
        base = where[: len(where) - dots + 1] if dots else []
        keys = base + [k for k in path.lstrip(".").split(".") if k]
        full = ".".join(keys)
        if full in seen:
            raise ValueError(f"config reference cycle: {' -> '.join((*seen, full))}")
        node = data
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                raise ValueError(f"config reference ${{{path}}} (at {'.'.join(where) or 'the top'}): "
                                 f"{full} does not exist")
            node = node[k]
        return resolve(node, keys, (*seen, full))

    def resolve(value, where: list[str], seen: tuple[str, ...] = ()):
        if isinstance(value, dict):
            return {k: resolve(v, [*where, k], seen) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, where, seen) for v in value]
        if not isinstance(value, str) or "${" not in value:
            return value
        whole = _REFERENCE.fullmatch(value.strip())
        if whole:
            return lookup(whole[1], where[:-1], seen)
        return _REFERENCE.sub(lambda m: str(lookup(m[1], where[:-1], seen)), value)

    return resolve(data, [])


def describe(config: RunConfig) -> dict[str, Any]:
    """The resolved config as a plain dict (written beside checkpoints, compared on resume)."""
    return config.to_dict()
