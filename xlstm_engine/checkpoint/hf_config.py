"""config.json of the Hugging Face `xLSTMConfig` (model_type "xlstm") <-> xLSTMLargeConfig + runtime options."""

import dataclasses
import json
import math
import warnings
from pathlib import Path
from typing import Any

import torch

from ..config import OFFICIAL_RUNTIME_KEYS, xLSTMLargeConfig
from ..config.base import fits
from .errors import CheckpointError
from .safetensors_io import SAVE_ID_KEY

ALIASES = {"hidden_size": "embedding_dim", "num_hidden_layers": "num_blocks"}  # HF name -> ours
# Generic PreTrainedConfig fields, which say nothing about the architecture
HF_GENERIC_KEYS = frozenset({
    "architectures", "model_type", "dtype", "torch_dtype", "transformers_version", "_name_or_path",
    "_commit_hash", "output_hidden_states", "output_attentions", "return_dict", "use_return_dict",
    "is_encoder_decoder", "is_decoder", "add_cross_attention", "tie_encoder_decoder", "chunk_size_feed_forward",
    "id2label", "label2id", "num_labels", "problem_type", "tokenizer_class", "prefix", "sep_token_id",
    "decoder_start_token_id", "task_specific_params", "finetuning_task", "cross_attention_hidden_size",
    "pruned_heads", "torchscript", "tf_legacy_loss", "use_bfloat16", "auto_map", "initializer_range",
    "tie_word_embeddings",
})
# Keys of the original NX-AI/xLSTM-7b config.json (Dec 2024) that current code ignores
LEGACY_KEYS = frozenset({
    "add_embedding_dropout", "add_forward_backend_padding", "add_post_blocks_norm", "add_post_norm",
    "add_qk_norm", "cell_norm_eps", "force_bos_token_insert", "head_dim", "igate_bias_init_range",
    "mlstm_round_up_to_multiple_of", "forward_backend_name", "step_backend_name",
})
ARCH_KEYS = frozenset(f.name for f in dataclasses.fields(xLSTMLargeConfig))
ENGINE_KEYS = frozenset({SAVE_ID_KEY})  # written by save_pretrained (safetensors_io.save_checkpoint)


# The JSON type of every config key that is read (architecture, execution, legacy and save keys), checked before
# use: a string "false" must not count as true, and a bad value must be named with its key, not as a TypeError.
# Each kind is a type hint, tested by config.base.fits as the config dataclasses test their fields (a bool is no
# int, a string no bool), plus two rules of config.json alone (_fits_json).
_KINDS = {
    "an int": (int, (
        "num_heads", "vocab_size", "ffn_round_up_to_multiple_of", "chunk_size", "max_inference_chunksize", "head_dim",
        "mlstm_round_up_to_multiple_of")),
    "a finite number": (float, (
        "norm_eps", "eps", "qk_dim_factor", "v_dim_factor", "ffn_proj_factor", "cell_norm_eps",
        "igate_bias_init_range")),
    "a finite number or null": (float | None, ("gate_soft_cap", "output_logit_soft_cap")),
    "true or false": (bool, (
        "use_bias", "norm_reduction_force_float32", "add_out_norm", "tie_word_embeddings", "return_last_states",
        "use_cache", "add_embedding_dropout", "add_forward_backend_padding", "add_post_blocks_norm",
        "add_post_norm", "add_qk_norm", "force_bos_token_insert")),
    "a string": (str, (
        "weight_mode", "chunkwise_kernel", "sequence_kernel", "step_kernel", "mode", "autocast_kernel_dtype",
        "inference_state_dtype", "forward_backend_name", "step_backend_name", SAVE_ID_KEY)),
    "an int or null": (int | None, (  # null sizes: the HF alias names the size
        "embedding_dim", "hidden_size", "num_blocks", "num_hidden_layers", "bos_token_id", "pad_token_id")),
    "an int, a list of ints or null": (int | list[int] | None, ("eos_token_id",)),
}


def _fits_json(value, hint) -> bool:
    """`fits`, and the rules of config.json: numbers are finite (Python's json reads NaN and Infinity), and a list
    (of eos ids) is not empty."""
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return fits(value, hint) and value != []


KEY_KINDS = {key: (kind, hint) for kind, (hint, keys) in _KINDS.items() for key in keys}


def check_value_types(d: dict[str, Any], source: str) -> None:
    """Raise CheckpointError naming the key, its value and the expected type for the first mistyped key."""
    for key, value in d.items():
        if key in KEY_KINDS and not _fits_json(value, KEY_KINDS[key][1]):
            raise CheckpointError(f"{source}: {key} is {value!r} ({type(value).__name__}), "
                                  f"expected {KEY_KINDS[key][0]}")


def config_from_dict(d: dict[str, Any], source: str) -> xLSTMLargeConfig:
    """An xLSTMLargeConfig from HF config.json contents; `source` names the file in errors."""
    if d.get("model_type") != "xlstm":
        raise CheckpointError(f"{source}: model_type is {d.get('model_type')!r}, expected 'xlstm' "
                              "(an xLSTM Large / xLSTM-7B config)")
    check_value_types(d, source)
    arch = {k: v for k, v in d.items() if k in ARCH_KEYS}
    for hf_name, name in ALIASES.items():
        values = {d[k] for k in (hf_name, name) if d.get(k) is not None}
        if len(values) > 1:
            raise CheckpointError(f"{source}: {hf_name}={d[hf_name]} and {name}={d[name]} disagree; "
                                  "they name the same size")
        if values:
            arch[name] = values.pop()
    _check_legacy(d, source)
    unknown = sorted(set(d) - ARCH_KEYS - set(ALIASES) - OFFICIAL_RUNTIME_KEYS - HF_GENERIC_KEYS - LEGACY_KEYS
                     - ENGINE_KEYS)
    if unknown:
        warnings.warn(f"{source}: ignoring unknown config key(s) {unknown}", stacklevel=3)
    try:
        return xLSTMLargeConfig(**arch)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: {e}") from e


def _check_legacy(d: dict[str, Any], source: str) -> None:
    """Legacy keys are ignored, but only where their value is what the architecture does anyway."""
    for key in ("add_qk_norm", "add_post_norm", "add_embedding_dropout"):
        if d.get(key):
            raise CheckpointError(f"{source}: {key}=true is not part of the xLSTM Large architecture")
    if "add_post_blocks_norm" in d and d["add_post_blocks_norm"] != d.get("add_out_norm", True):
        raise CheckpointError(f"{source}: add_post_blocks_norm={d['add_post_blocks_norm']} contradicts "
                              f"add_out_norm={d.get('add_out_norm', True)}")


def read_config_json(path: Path) -> tuple[xLSTMLargeConfig, dict[str, Any]]:
    """(architecture, the raw dict) from a config.json file."""
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read the config ({e})") from e
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(d).__name__}")
    config = config_from_dict(d, str(path))
    if "head_dim" in d and d["head_dim"] != config.v_head_dim:
        raise CheckpointError(f"{path}: head_dim={d['head_dim']} but the sizes give v_head_dim={config.v_head_dim}")
    return config, d


def config_to_dict(config: xLSTMLargeConfig, dtype: torch.dtype, tie_word_embeddings: bool = False
                   ) -> dict[str, Any]:
    """The architecture as a HF xLSTMConfig dict; transformers fills its execution fields with its defaults."""
    d = config.to_dict()
    if isinstance(d["eos_token_id"], tuple):
        d["eos_token_id"] = list(d["eos_token_id"])
    return {
        "architectures": ["xLSTMForCausalLM"], "model_type": "xlstm",
        "hidden_size": config.embedding_dim, "num_hidden_layers": config.num_blocks, **d,
        "tie_word_embeddings": tie_word_embeddings, "dtype": str(dtype).removeprefix("torch."),
    }
