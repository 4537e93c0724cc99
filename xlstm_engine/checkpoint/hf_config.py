"""config.json of the Hugging Face `xLSTMConfig` (model_type "xlstm") <-> xLSTMLargeConfig + runtime options."""

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from ..config import OFFICIAL_RUNTIME_KEYS, xLSTMLargeConfig
from .errors import CheckpointError

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


def config_from_dict(d: dict[str, Any], source: str) -> xLSTMLargeConfig:
    """An xLSTMLargeConfig from HF config.json contents; `source` names the file in errors."""
    if d.get("model_type") != "xlstm":
        raise CheckpointError(f"{source}: model_type is {d.get('model_type')!r}, expected 'xlstm' "
                              "(an xLSTM Large / xLSTM-7B config)")
    arch = {k: v for k, v in d.items() if k in ARCH_KEYS}
    for hf_name, name in ALIASES.items():
        values = {d[k] for k in (hf_name, name) if d.get(k) is not None}
        if len(values) > 1:
            raise CheckpointError(f"{source}: {hf_name}={d[hf_name]} and {name}={d[name]} disagree; "
                                  "they name the same size")
        if values:
            arch[name] = values.pop()
    _check_legacy(d, source)
    unknown = sorted(set(d) - ARCH_KEYS - set(ALIASES) - OFFICIAL_RUNTIME_KEYS - HF_GENERIC_KEYS - LEGACY_KEYS)
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


def config_to_dict(config: xLSTMLargeConfig, dtype: torch.dtype) -> dict[str, Any]:
    """The architecture as a HF xLSTMConfig dict; transformers fills its execution fields with its defaults."""
    d = config.to_dict()
    if isinstance(d["eos_token_id"], tuple):
        d["eos_token_id"] = list(d["eos_token_id"])
    return {
        "architectures": ["xLSTMForCausalLM"], "model_type": "xlstm",
        "hidden_size": config.embedding_dim, "num_hidden_layers": config.num_blocks, **d,
        "tie_word_embeddings": False, "dtype": str(dtype).removeprefix("torch."),
    }
