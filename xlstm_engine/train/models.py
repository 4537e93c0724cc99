"""The model of a training config, its forward for training, and its weight-decay groups."""

import torch
from torch import nn

from ..config import RuntimeOptions, xLSTMLargeConfig, xLSTMLMModelConfig
from ..config.base import require
from ..model import Norm, xLSTMLarge, xLSTMLMModel

# architecture (the config's `architecture`) -> (config class, model class)
MODELS = {"neurips": (xLSTMLMModelConfig, xLSTMLMModel), "large": (xLSTMLargeConfig, xLSTMLarge)}


def build_model(config, data_vocab_size: int) -> nn.Module:
    """The model of the config's architecture and model section, with its runtime section.

    Its `forward` is its `forward_with_state` (ids, state=None, *, resets) -> (logits, state), the contract both
    families share (model/README.md): the trainer calls the model through `__call__`, never a method, because DDP
    and FSDP2 hook `__call__` (a method call would skip DDP's gradient reduction).
    """
    config_class, model_class = MODELS[config.architecture]
    model_config = config_class.from_dict(config.model)
    require(data_vocab_size <= model_config.vocab_size,
            f"the data's vocabulary ({data_vocab_size} tokens) exceeds the model's vocab_size "
            f"({model_config.vocab_size}); raise model.vocab_size")
    model = model_class(model_config, RuntimeOptions(**config.runtime))
    model.forward = model.forward_with_state
    return model


def forward_logits(model: nn.Module, inputs: torch.Tensor, resets: torch.Tensor | None) -> torch.Tensor:
    """[B, S] token ids -> [B, S, V] logits of a model from build_model (wrapped by DDP/FSDP2 or not)."""
    logits, _ = model(inputs, resets=resets)
    return logits


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on the weight matrices (names ending in "weight"), none on biases, the parameters of
    normalization layers (`model.Norm`), gains, the sLSTM recurrent kernel and bias, and the token embedding (the
    official rule; a tied LM head shares the embedding's group) unless the config sets weight_decay_on_embedding."""
    exempt = {id(p) for module in model.modules() if isinstance(module, Norm) for p in module.parameters()}
    if not getattr(getattr(model, "config", None), "weight_decay_on_embedding", False):
        exempt |= {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, seen = [], [], set()
    for name, p in model.named_parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        (decay if name.endswith("weight") and id(p) not in exempt else no_decay).append(p)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]
