"""Helpers of the transformers-class tests: a tiny config (the size of transformers' own xLSTM test), weights far
from the init, and transformers' own xLSTMForCausalLM on the same weights as the oracle."""

import torch
import transformers

from xlstm_engine.checkpoint import to_single_layout
from xlstm_engine.hf import large_config, xLSTMForCausalLM
from xlstm_engine.testing import randomize_large_

VOCAB = 97
TOKENS = (3, VOCAB)  # prompt ids drawn here: never bos (0), pad (1) or eos (2)


def tiny_config(**overrides) -> transformers.xLSTMConfig:
    """hidden 128, 2 heads, 2 blocks (DK 32, DV 64: transformers sizes its cache with rounded head dims, which
    agree with the layers' only at multiples of 128), chunk 16 so that prompts cross chunk borders."""
    fields = dict(vocab_size=VOCAB, hidden_size=128, num_hidden_layers=2, num_heads=2, chunk_size=16,
                  bos_token_id=0, pad_token_id=1, eos_token_id=2)
    return transformers.xLSTMConfig(**{**fields, **overrides})


def make_model(seed: int = 0, **overrides) -> xLSTMForCausalLM:
    model = xLSTMForCausalLM(tiny_config(**overrides))
    randomize_large_(model, seed, scale=3.0)
    if model.backbone.out_norm.bias is not None:  # use_bias: transformers' out_norm has none, i.e. a zero one
        torch.nn.init.zeros_(model.backbone.out_norm.bias)
    return model.eval()


def twin(model: xLSTMForCausalLM) -> transformers.xLSTMForCausalLM:
    """transformers' own xLSTMForCausalLM with the weights of `model` (its single layout, loaded strictly)."""
    theirs = transformers.xLSTMForCausalLM(model.config)
    single = to_single_layout(model.state_dict(), large_config(model.config))
    assert not single.pop("backbone.out_norm.bias", torch.zeros(1)).any(), "transformers' out_norm has no bias"
    theirs.load_state_dict({key: t.clone() for key, t in single.items()}, strict=True)
    return theirs.eval()


def prompts(B: int, S: int) -> torch.Tensor:
    return torch.randint(*TOKENS, (B, S))
