"""The weight-decay groups of train.models.param_groups, on both model families: the same groups as the rule by
name substring ("norm") gave before issue 12, now that norms are found by their type (model.Norm).

NO_DECAY lists the undecayed parameters, in order, as recorded with the substring rule; every other parameter
(once, tied ones under their first name) is decayed, in named_parameters order.
"""

import pytest
import torch

import xlstm_engine as xe
from xlstm_engine.train.models import param_groups

L, S = "backbone.blocks.0.", "xlstm_block_stack.blocks."  # Large's block 0; the NeurIPS blocks
NEURIPS_NORMS_AND_GAINS = [
    f"{S}0.xlstm_norm.weight", f"{S}0.xlstm.learnable_skip", f"{S}0.xlstm.conv1d.conv.bias",
    f"{S}0.xlstm.mlstm_cell.igate.bias", f"{S}0.xlstm.mlstm_cell.fgate.bias", f"{S}0.xlstm.mlstm_cell.outnorm.weight",
    f"{S}1.xlstm_norm.weight", f"{S}1.xlstm.conv1d.conv.bias", f"{S}1.xlstm.slstm_cell._recurrent_kernel_",
    f"{S}1.xlstm.slstm_cell._bias_", f"{S}1.xlstm.group_norm.weight", f"{S}1.ffn_norm.weight",
    "xlstm_block_stack.post_blocks_norm.weight",
]
NO_DECAY = {
    "large-bias": [
        "backbone.embeddings.weight", f"{L}norm_mlstm.weight", f"{L}norm_mlstm.bias",
        f"{L}mlstm_layer.qkv_opreact.bias", f"{L}mlstm_layer.ifgate_preact.bias",
        f"{L}mlstm_layer.multihead_norm.weight", f"{L}mlstm_layer.multihead_norm.bias", f"{L}mlstm_layer.out_proj.bias",
        f"{L}norm_ffn.weight", f"{L}norm_ffn.bias", f"{L}ffn.proj_up_gate_z.bias", f"{L}ffn.proj_down.bias",
        "backbone.out_norm.weight", "backbone.out_norm.bias"],
    "large-tied": [
        "backbone.embeddings.weight", f"{L}norm_mlstm.weight", f"{L}mlstm_layer.ifgate_preact.bias",
        f"{L}mlstm_layer.multihead_norm.weight", f"{L}norm_ffn.weight", "backbone.out_norm.weight"],
    "neurips-bias": [
        f"{S}0.xlstm_norm.weight", f"{S}0.xlstm.learnable_skip", f"{S}0.xlstm.proj_up.bias", f"{S}0.xlstm.q_proj.bias",
        f"{S}0.xlstm.k_proj.bias", f"{S}0.xlstm.v_proj.bias", f"{S}0.xlstm.conv1d.conv.bias",
        f"{S}0.xlstm.mlstm_cell.igate.bias", f"{S}0.xlstm.mlstm_cell.fgate.bias",
        f"{S}0.xlstm.mlstm_cell.outnorm.weight", f"{S}0.xlstm.proj_down.bias", *NEURIPS_NORMS_AND_GAINS[6:],
        "token_embedding.weight"],
    "neurips-tied": [*NEURIPS_NORMS_AND_GAINS, "token_embedding.weight"],
    "neurips-decayed-embedding": NEURIPS_NORMS_AND_GAINS,
}


def build(case: str) -> torch.nn.Module:
    if case.startswith("large"):
        model = xe.xLSTMLarge(xe.xLSTMLargeConfig(embedding_dim=16, num_heads=2, num_blocks=1, vocab_size=11,
                                                  use_bias=case == "large-bias"))
        if case == "large-tied":
            model.lm_head.weight = model.backbone.embeddings.weight
        return model
    return xe.xLSTMLMModel(xe.xLSTMLMModelConfig(
        vocab_size=11, num_blocks=2, embedding_dim=16, slstm_at=[1], bias=case == "neurips-bias",
        tie_weights=case == "neurips-tied", weight_decay_on_embedding=case == "neurips-decayed-embedding",
        mlstm_block=xe.mLSTMBlockConfig(mlstm=xe.mLSTMLayerConfig(num_heads=2)),
        slstm_block=xe.sLSTMBlockConfig(slstm=xe.sLSTMLayerConfig(num_heads=2))))


@pytest.mark.parametrize("case", NO_DECAY)
def test_groups_are_those_of_the_name_rule(case):
    model = build(case)
    names = {id(p): name for name, p in model.named_parameters()}  # first names of tied parameters
    decay, no_decay = param_groups(model, 0.1)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    assert [names[id(p)] for p in no_decay["params"]] == NO_DECAY[case]
    assert [names[id(p)] for p in decay["params"]] == [name for name in names.values() if name not in NO_DECAY[case]]


def test_norms_are_found_by_type():
    """Every parameter of a normalization layer, whatever its name, is in the undecayed group."""
    model = build("large-bias")
    model.backbone.blocks[0].renamed = xe.model.large.RMSNorm(16, use_bias=True)  # no "norm" in its name
    _, no_decay = param_groups(model, 0.1)
    assert {id(p) for p in model.backbone.blocks[0].renamed.parameters()} <= {id(p) for p in no_decay["params"]}
