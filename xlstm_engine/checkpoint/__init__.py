"""Checkpoints in the Hugging Face folder layout (and the NX-AI naming), read and written tensor by tensor."""

import json
from os import PathLike
from pathlib import Path

import torch
from torch import nn

from ..model.runtime import RuntimeOptions
from .errors import CheckpointError
from .hf_config import config_to_dict, read_config_json
from .keys import NXAI_ALIASES, single_sources, to_fused_layout, to_single_layout
from .safetensors_io import atomic_write, iter_tensors, save_tensors, stored_dtype, weight_files

__all__ = ["CheckpointError", "load_pretrained", "save_pretrained", "to_fused_layout", "to_single_layout"]


def load_pretrained(cls, path: str | PathLike, dtype: torch.dtype | None = None,
                    device: torch.device | str | None = None, **runtime_options) -> nn.Module:
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a checkpoint folder (no such directory)")
    if (folder / "config.json").exists():
        config, raw = read_config_json(folder / "config.json")
    elif (folder / "config.yaml").exists():
        config, raw = _read_nxai_config(folder / "config.yaml")
    else:
        raise CheckpointError(f"{folder}: no config.json (Hugging Face layout) or config.yaml (NX-AI layout)")
    runtime = RuntimeOptions.from_config_dict(raw).replace(**runtime_options)
    files = weight_files(folder)
    dtype = dtype or stored_dtype(files[0])
    with torch.device("meta"):  # no random weights: every parameter is written once, from the file
        model = cls(config, runtime)
    model = model.to(dtype=dtype).to_empty(device=device or "cpu")
    _load_weights(model, files, tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)))
    return model.eval()


def _read_nxai_config(path: Path):
    try:
        import yaml
    except ImportError as e:
        raise CheckpointError(f"{path}: reading an NX-AI config.yaml needs PyYAML (pip install pyyaml)") from e
    from ..config import xLSTMLargeConfig

    raw = yaml.safe_load(path.read_text())
    try:
        return xLSTMLargeConfig.from_dict({**raw, "weight_mode": "single"}), raw
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from e


@torch.no_grad()
def _load_weights(model: nn.Module, files: list[Path], tie_word_embeddings: bool) -> None:
    """Copy every tensor of `files` into its parameter (casting dtype), then check that nothing is missing."""
    config = model.config
    params = dict(model.named_parameters())
    sources = {name: [[name]] for name in params}  # the alternative sets of file keys that fill a parameter
    targets = {name: (name, None) for name in params}  # file key -> (parameter, rows)
    for name in params:
        if parts := single_sources(name, config):
            sources[name].append([key for key, _ in parts])
            targets.update({key: (name, rows) for key, rows in parts})
    for alias, name in NXAI_ALIASES.items():
        sources[name].append([alias])
        targets[alias] = (name, None)

    loaded: dict[str, Path] = {}
    for key, tensor, file in iter_tensors(files):
        if key in loaded:
            raise CheckpointError(f"{file}: key {key!r} also appears in {loaded[key]}")
        if key not in targets:
            raise CheckpointError(f"{file}: unexpected key {key!r}: not a parameter of xLSTM Large with "
                                  f"{config.num_blocks} blocks (checkpoint and config.json disagree?)")
        name, rows = targets[key]
        dest = params[name] if rows is None else params[name][rows]
        if tuple(tensor.shape) != tuple(dest.shape):
            raise CheckpointError(f"{file}: {key!r} has shape {tuple(tensor.shape)}, expected {tuple(dest.shape)} "
                                  "from config.json")
        if not tensor.is_floating_point():
            raise CheckpointError(f"{file}: {key!r} has dtype {tensor.dtype}, expected a floating-point tensor")
        dest.copy_(tensor)
        loaded[key] = file

    missing = []
    for name, options in sources.items():
        present = [keys for keys in options if any(key in loaded for key in keys)]
        if len(present) > 1:
            raise CheckpointError(f"{files[0].parent}: {name} is stored twice, as {present[0]} and {present[1]}")
        if present:
            missing += [key for key in present[0] if key not in loaded]
        elif name == "lm_head.weight" and tie_word_embeddings:
            params[name].copy_(params["backbone.embeddings.weight"])  # a tied head is stored once
        elif name == "backbone.out_norm.bias":
            params[name].zero_()  # the Hugging Face out_norm has no bias, whatever use_bias says
        else:
            missing += options[1] if config.weight_mode == "single" and len(options) > 1 else options[0]
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise CheckpointError(f"{files[0].parent}: missing key(s) {shown}")


def save_pretrained(model: nn.Module, path: str | PathLike, max_shard_size: int | str = "5GB") -> None:
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: p.detach() for name, p in model.named_parameters()}
    if model.config.weight_mode == "single":
        tensors = to_single_layout(tensors, model.config)
    save_tensors(tensors, folder, max_shard_size)
    config = config_to_dict(model.config, model.lm_head.weight.dtype)
    atomic_write(folder / "config.json", lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n"))
