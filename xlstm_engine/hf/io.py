"""Reading and writing Hugging Face xLSTM folders for the transformers classes, through checkpoint/.

Weights stream tensor by tensor through `xLSTMLarge.from_pretrained` (single or fused layout, one file or shards)
and the atomic writer of `checkpoint.safetensors_io`; the config is transformers' own xLSTMConfig, so everything
transformers writes into config.json survives a round trip.
"""

import json
import warnings
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from transformers import xLSTMConfig

from ..checkpoint import CheckpointError, to_fused_layout, to_single_layout
from ..checkpoint.safetensors_io import (
    CONFIG_FILE,
    check_save_ids,
    iter_tensors,
    save_checkpoint,
    stored_dtype,
    weight_files,
)
from ..config import FLOAT_DTYPES
from ..model import xLSTMLarge
from .config import large_config, same_architecture

PREFIX = "backbone."  # the base model's keys carry it inside the LM, and not on their own (as in transformers)

# Keywords that transformers' Auto classes and pipelines pass to from_pretrained and that mean nothing here
IGNORED_LOAD_KWARGS = ("_from_auto", "_from_pipeline", "trust_remote_code", "proxies", "code_revision",
                       "_commit_hash", "low_cpu_mem_usage", "attn_implementation", "weights_only", "use_kernels")


def resolve_folder(name_or_path: str | PathLike, subfolder: str = "", **hub_kwargs) -> Path:
    """A local folder as it is; anything else is a Hub repo id, downloaded (or found in the cache) with
    huggingface_hub. Raises OSError when neither works."""
    local = Path(name_or_path) / subfolder
    if local.is_dir():
        return local
    try:
        from huggingface_hub import snapshot_download  # a dependency of transformers

        patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*"]
        hub_kwargs = {key: value for key, value in hub_kwargs.items() if value is not None}
        folder = Path(snapshot_download(str(name_or_path), allow_patterns=patterns, **hub_kwargs)) / subfolder
    except Exception as e:  # network, authentication, a malformed repo id: one error that says what was tried
        raise OSError(f"{name_or_path}: not a local folder, and fetching it from the Hugging Face Hub failed ({e})"
                      ) from e
    if not folder.is_dir():
        raise OSError(f"{name_or_path}: the downloaded repository has no folder {subfolder!r}")
    return folder


def resolve_dtype(dtype) -> torch.dtype | None:
    """None or "auto" (the stored dtype), a torch.dtype or its name ("bfloat16", "torch.float16")."""
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
        if name not in FLOAT_DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; expected 'auto' or one of {list(FLOAT_DTYPES)}")
        return FLOAT_DTYPES[name]
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, its name or 'auto', got {dtype!r}")
    return dtype


def resolve_device(device, device_map) -> torch.device | None:
    """`device`, or a `device_map` that names one device ("cpu", "cuda:0", 0, a torch.device, {"": device})."""
    if device_map is not None:
        if device is not None:
            raise ValueError("give device or device_map, not both")
        if isinstance(device_map, dict) and set(device_map) == {""}:
            device_map = device_map[""]
        if isinstance(device_map, dict) or device_map in ("auto", "balanced", "balanced_low_0", "sequential"):
            raise ValueError(f"device_map={device_map!r}: the xLSTM classes load onto one device; pass "
                             "device='cuda:0' (or device_map='cuda:0'), or shard the model yourself after loading")
        device = device_map
    if device is None:
        return None
    return torch.device(f"cuda:{device}" if isinstance(device, int) else device)


def stored_keys(folder: Path) -> tuple[list[Path], dict | None, list[str]]:
    """The weight files, the index (or None) and the tensor names they hold, read from the headers only."""
    files, index = weight_files(folder)
    if index is not None:
        return files, index, list(index["weight_map"])
    from safetensors import safe_open

    keys = []
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            keys += list(f.keys())
    return files, index, keys


def load_core(folder: Path, config: xLSTMConfig, dtype: torch.dtype | None, device: torch.device | None,
              need_head: bool) -> xLSTMLarge:
    """An xLSTMLarge with the weights of `folder`.

    A causal-LM folder (keys `backbone.*`, `lm_head.weight`, either layout) loads through
    `xLSTMLarge.from_pretrained`. A base-model folder (what `xLSTMModel.save_pretrained` and transformers'
    xLSTMModel write: the same keys without `backbone.`, no head) loads into the backbone; the head is then drawn
    from the init (with a warning when `need_head`).
    """
    wanted = large_config(config)
    files, index, keys = stored_keys(folder)
    if not any(key.startswith(PREFIX) or key == "embedding.weight" for key in keys):
        return _load_base(folder, files, index, wanted, dtype, device, need_head)
    core = xLSTMLarge.from_pretrained(folder, dtype=dtype, device=device)
    if not same_architecture(core.config, wanted):
        raise ValueError(f"{folder}: the config given to from_pretrained describes another architecture than "
                         f"{CONFIG_FILE} ({wanted} vs {core.config}); change the folder's {CONFIG_FILE} instead")
    return core


def _load_base(folder: Path, files: list[Path], index: dict | None, config, dtype, device, need_head: bool
               ) -> xLSTMLarge:
    raw = json.loads((folder / CONFIG_FILE).read_text())
    check_save_ids(folder, files, index, raw, CONFIG_FILE)
    with torch.device("meta"):  # no random weights for what the files fill
        core = xLSTMLarge(config)
    core = core.to(dtype=dtype or stored_dtype(files[0])).to_empty(device=device or "cpu")
    tensors = {PREFIX + key: tensor for key, tensor, _ in iter_tensors(files)}
    try:
        tensors = to_fused_layout(tensors, config)
    except KeyError as e:
        raise CheckpointError(f"{folder}: {e.args[0]}") from e
    expected = {name for name, _ in core.backbone.named_parameters()}
    given = {key.removeprefix(PREFIX) for key in tensors}
    if config.use_bias and "out_norm.bias" not in given and "out_norm.bias" in expected:
        tensors[PREFIX + "out_norm.bias"] = torch.zeros(config.embedding_dim)  # transformers' out_norm has no bias
        given.add("out_norm.bias")
    if given != expected:
        missing, unexpected = sorted(expected - given), sorted(given - expected)
        raise CheckpointError(f"{folder}: base-model weights do not fit the config: missing {missing[:8]}, "
                              f"unexpected {unexpected[:8]}")
    with torch.no_grad():
        params = dict(core.backbone.named_parameters())
        for key, tensor in tensors.items():
            name = key.removeprefix(PREFIX)
            if tensor.shape != params[name].shape:
                raise CheckpointError(f"{folder}: {name} has shape {tuple(tensor.shape)}, expected "
                                      f"{tuple(params[name].shape)} from {CONFIG_FILE}")
            params[name].copy_(tensor)
        core.lm_head.weight.normal_(std=(2 / (5 * config.embedding_dim)) ** 0.5)  # the core's "small init"
    if need_head:
        warnings.warn(f"{folder} holds a base model (no lm_head.weight): the LM head is newly initialized and "
                      "must be trained", stacklevel=4)
    return core.eval()


def save_folder(folder: str | PathLike, tensors: dict[str, torch.Tensor], config: xLSTMConfig, is_base: bool,
                max_shard_size: int | str) -> None:
    """Write config.json and the weights (the layout of config.weight_mode), replacing an earlier checkpoint
    atomically for readers (checkpoint.safetensors_io.save_checkpoint). `tensors` are named as in our state_dict
    (fused layout), without `backbone.` when `is_base`."""
    arch = large_config(config)
    if arch.weight_mode == "single":
        prefix = PREFIX if is_base else ""
        single = to_single_layout({prefix + key: tensor for key, tensor in tensors.items()}, arch)
        tensors = {key.removeprefix(prefix): tensor for key, tensor in single.items()}
    config_dict: dict[str, Any] = config.to_dict()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(folder, tensors, config_dict, max_shard_size)
