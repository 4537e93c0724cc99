"""Checkpoint key names: the Hugging Face 'single' and 'fused' layouts and the NX-AI naming.

The model always holds the fused layout. A fused block parameter stacks the rows of its single-layout
parts in a fixed order; each block is matched exactly (`backbone.blocks.1.` never matches block 10).
"""

import re

import torch

from ..config import xLSTMLargeConfig

BLOCK_KEY = re.compile(r"backbone\.blocks\.(\d+)\.(.+)\.(weight|bias)")
NXAI_ALIASES = {"embedding.weight": "backbone.embeddings.weight"}


def fused_parts(config: xLSTMLargeConfig) -> dict[str, list[tuple[str, int]]]:
    """Fused parameter (name inside a block) -> its single-layout parts and their row counts, in row order."""
    qk, v, H, F = config.qk_dim, config.v_dim, config.num_heads, config.ffn_dim
    return {
        "mlstm_layer.qkv_opreact": [("mlstm_layer.q", qk), ("mlstm_layer.k", qk), ("mlstm_layer.v", v),
                                    ("mlstm_layer.ogate_preact", v)],
        "mlstm_layer.ifgate_preact": [("mlstm_layer.igate_preact", H), ("mlstm_layer.fgate_preact", H)],
        "ffn.proj_up_gate_z": [("ffn.proj_up_gate", F), ("ffn.proj_up", F)],
    }


def single_sources(name: str, config: xLSTMLargeConfig) -> list[tuple[str, slice]] | None:
    """The single-layout keys that fill the fused parameter `name`, with their rows; None if not fused."""
    match = BLOCK_KEY.fullmatch(name)
    parts = fused_parts(config).get(match[2]) if match else None
    if parts is None:
        return None
    sources, start = [], 0
    for part, rows in parts:
        sources.append((f"backbone.blocks.{match[1]}.{part}.{match[3]}", slice(start, start + rows)))
        start += rows
    return sources


def to_single_layout(state_dict: dict[str, torch.Tensor], config: xLSTMLargeConfig) -> dict[str, torch.Tensor]:
    """Fused-layout keys -> single-layout keys (row slices, no copies); other keys pass through."""
    out = {}
    for name, tensor in state_dict.items():
        sources = single_sources(name, config)
        out.update({name: tensor} if sources is None else {key: tensor[rows] for key, rows in sources})
    return out


def to_fused_layout(state_dict: dict[str, torch.Tensor], config: xLSTMLargeConfig) -> dict[str, torch.Tensor]:
    """Single-layout keys -> fused-layout keys (concatenated); other keys pass through.

    Raises KeyError naming the missing part if a fused parameter is only partly present.
    """
    part_of = {}
    for block in range(config.num_blocks):
        for fused in fused_parts(config):
            for kind in ("weight", "bias"):
                name = f"backbone.blocks.{block}.{fused}.{kind}"
                for key, _ in single_sources(name, config):
                    part_of[key] = name
    out, pending = {}, {}
    for key, tensor in state_dict.items():
        if key in part_of:
            pending.setdefault(part_of[key], {})[key] = tensor
        else:
            out[key] = tensor
    for name, parts in pending.items():
        keys = [key for key, _ in single_sources(name, config)]
        missing = [key for key in keys if key not in parts]
        if missing:
            raise KeyError(f"cannot build {name}: missing {missing}")
        out[name] = torch.cat([parts[key] for key in keys])
    return out
