"""Checkpoints in the Hugging Face folder layout (and the NX-AI naming), read and written tensor by tensor."""

import warnings
from os import PathLike
from pathlib import Path

import torch
from torch import nn

from ..config import RuntimeOptions, xLSTMLargeConfig
from .errors import CheckpointError
from .hf_config import check_value_types, config_to_dict, read_config_json
from .keys import NXAI_ALIASES, single_sources, to_fused_layout, to_single_layout
from .safetensors_io import check_first_save, check_save_ids, iter_tensors, save_checkpoint, stored_dtype, weight_files

__all__ = ["CheckpointError", "load_pretrained", "save_pretrained", "to_fused_layout", "to_single_layout"]

HEAD, EMBEDDING = "lm_head.weight", "backbone.embeddings.weight"


def load_pretrained(cls, path: str | PathLike, dtype: torch.dtype | None = None,
                    device: torch.device | str | None = None, **runtime_options) -> nn.Module:
    """Build `cls` from a checkpoint folder; see xLSTMLarge.from_pretrained."""
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a checkpoint folder (no such directory)")
    if (folder / "config.json").exists():
        config_path = folder / "config.json"
        config, raw = read_config_json(config_path)
    elif (folder / "config.yaml").exists():
        config_path = folder / "config.yaml"
        config, raw = _read_nxai_config(config_path)
    else:
        check_first_save(folder)
        raise CheckpointError(f"{folder}: no config.json (Hugging Face layout) or config.yaml (NX-AI layout)")
    try:
        runtime = RuntimeOptions.from_config_dict(raw)
    except ValueError as e:
        raise CheckpointError(f"{config_path}: {e}") from e
    runtime = runtime.replace(**runtime_options)
    files, index = weight_files(folder)
    check_save_ids(folder, files, index, raw, config_path.name)  # before reading a tensor of a possible mix
    dtype = dtype or stored_dtype(files[0])
    with torch.device("meta"):  # no random weights: every parameter is written once, from the file
        model = cls(config, runtime)
    model = model.to(dtype=dtype).to_empty(device=device or "cpu")
    tie = raw.get("tie_word_embeddings", False)
    loaded = _load_weights(model, files, tie_word_embeddings=tie)
    if tie:
        _tie_head(model, folder, head_stored=HEAD in loaded)
    return model.eval()


@torch.no_grad()
def _tie_head(model: nn.Module, folder: Path, head_stored: bool) -> None:
    """Make lm_head use the embedding's parameter, as saved (both stored, equal) or stored once (no head)."""
    if head_stored and not torch.equal(model.lm_head.weight, model.backbone.embeddings.weight):
        # transformers does not tie xLSTM: a folder it wrote says tied but holds two different matrices
        warnings.warn(f"{folder}: config.json says tie_word_embeddings=true, but {HEAD} and {EMBEDDING} differ; "
                      "keeping them separate (as transformers does)", stacklevel=3)
        return
    model.lm_head.weight = model.backbone.embeddings.weight


def _read_nxai_config(path: Path):
    try:
        import yaml  # optional (the yaml extra), so imported on use
    except ImportError as e:
        raise CheckpointError(f"{path}: reading an NX-AI config.yaml needs PyYAML (pip install pyyaml)") from e

    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a mapping of xLSTMLargeConfig fields, got {type(raw).__name__}")
    check_value_types(raw, str(path))
    try:
        return xLSTMLargeConfig.from_dict({**raw, "weight_mode": "single"}), raw
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from e


@torch.no_grad()
def _load_weights(model: nn.Module, files: list[Path], tie_word_embeddings: bool) -> dict[str, Path]:
    """Copy every tensor of `files` into its parameter (casting dtype), then check that nothing is missing.

    Returns the keys read, with their files. A tied head (`tie_word_embeddings`) may be absent: the caller ties it.
    """
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
        elif name == HEAD and tie_word_embeddings:
            pass  # a tied head may be stored once, as the embedding
        elif name == "backbone.out_norm.bias":
            params[name].zero_()  # the Hugging Face out_norm has no bias, whatever use_bias says
        else:
            missing += options[1] if config.weight_mode == "single" and len(options) > 1 else options[0]
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise CheckpointError(f"{files[0].parent}: missing key(s) {shown}")
    return loaded


def save_pretrained(model: nn.Module, path: str | PathLike, max_shard_size: int | str = "5GB") -> None:
    """Write config.json and the weights into `path`: whatever happens meanwhile, the folder then loads the
    old checkpoint exactly, the new one exactly, or fails with a CheckpointError (safetensors_io.save_checkpoint).

    A head tied to the embedding is stored under both names (transformers does not tie xLSTM, so it needs
    `lm_head.weight`), with `tie_word_embeddings: true`, which ties them again on loading.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: p.detach() for name, p in model.named_parameters(remove_duplicate=False)}
    tied = model.lm_head.weight is model.backbone.embeddings.weight
    if model.config.weight_mode == "single":
        tensors = to_single_layout(tensors, model.config)
    config = config_to_dict(model.config, model.lm_head.weight.dtype, tie_word_embeddings=tied)
    save_checkpoint(folder, tensors, config, max_shard_size)
