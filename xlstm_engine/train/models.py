"""The model of a training config, its forward for training, and its weight-decay groups."""

import torch
from torch import nn

from ..config import xLSTMLargeConfig, xLSTMLMModelConfig
from ..config.base import require
from ..model import RuntimeOptions, xLSTMLarge, xLSTMLMModel


def build_model(config, data_vocab_size: int) -> nn.Module:
    """xLSTMLMModel (architecture "neurips") or xLSTMLarge ("large") from the config's model section."""
    runtime = RuntimeOptions(**config.runtime)
    if config.architecture == "large":
        model_config = xLSTMLargeConfig.from_dict(config.model)
        model = xLSTMLarge(model_config, runtime)
    else:
        model_config = xLSTMLMModelConfig.from_dict(config.model)
        model = xLSTMLMModel(model_config, runtime)
    require(data_vocab_size <= model_config.vocab_size,
            f"the data's vocabulary ({data_vocab_size} tokens) exceeds the model's vocab_size "
            f"({model_config.vocab_size}); raise model.vocab_size")
    return model


def forward_logits(model: nn.Module, config, inputs: torch.Tensor, resets: torch.Tensor | None) -> torch.Tensor:
    """[B, S] token ids -> [B, S, V] logits, for either architecture (wrapped by DDP/FSDP or not)."""
    if config.architecture == "large":
        return model(inputs, resets=resets)[0]
    return model(inputs, resets=resets)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on the weight matrices (names ending in "weight", no norms), none on biases, norms,
    gains, the sLSTM recurrent kernel and bias, and the token embedding (the official rule; a tied LM head shares
    the embedding's group)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    if getattr(getattr(model, "config", None), "weight_decay_on_embedding", False):
        embeddings = set()
    decay, no_decay, seen = [], [], set()
    for name, p in model.named_parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        is_decayed = name.endswith("weight") and "norm" not in name and id(p) not in embeddings
        (decay if is_decayed else no_decay).append(p)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]
