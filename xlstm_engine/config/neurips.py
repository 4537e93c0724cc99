"""Configs of the NeurIPS 2024 xLSTM, with the official `xlstm` package's names, fields and defaults.

The official configs fill each other in: the stack sets embedding_dim, bias, dropout and the block count on the
block configs, and each block gets its index. Here the stack makes its own copies and fills those, so the
objects a caller passed in are never changed. Everything is validated when the stack (or a layer config with a
known embedding_dim) is built; `from_dict` / `from_yaml` reject unknown keys by name.
"""

import copy
import math
from dataclasses import dataclass, field
from typing import Literal

from .base import ConfigMixin, check_field_types, require

ACTIVATIONS = ("gelu", "relu", "relu^2", "sigmoid", "swish", "selu")
# the values of sLSTMLayerConfig.backend: official backend names, which here name weight layouts only
SLSTM_WEIGHT_LAYOUTS = ("cuda", "vanilla")
SLSTM_FUNCTIONS = ("slstm", "lstm")
SLSTM_BIAS_INITS = ("powerlaw_blockdependent", "small_init", "standard", "zeros")
SLSTM_RECURRENT_INITS = ("zeros", "standard")


@dataclass
class UpProjConfigMixin:
    proj_factor: float = None
    round_proj_up_dim_up: bool = True
    round_proj_up_to_multiple_of: int = 64
    _proj_up_dim: int = None

    def _set_proj_up_dim(self, embedding_dim: int) -> None:
        """proj_factor * embedding_dim rounded up (or down) to a multiple of round_proj_up_to_multiple_of; once
        embedding_dim is set (> 0), a result below 1 is an error rather than a layer of width 0."""
        multiple = self.round_proj_up_to_multiple_of
        require(multiple >= 1, f"{type(self).__name__}.round_proj_up_to_multiple_of must be >= 1, got {multiple}")
        if self.proj_factor is not None and embedding_dim is not None:
            multiples = self.proj_factor * embedding_dim / multiple
            multiples = math.ceil(multiples) if self.round_proj_up_dim_up else math.floor(multiples)
            self._proj_up_dim = int(multiples * multiple)
            require(embedding_dim < 1 or self._proj_up_dim >= 1,
                    f"{type(self).__name__}: the up-projection dim, proj_factor={self.proj_factor} * embedding_dim="
                    f"{embedding_dim} rounded {'up' if self.round_proj_up_dim_up else 'down'} to a multiple of "
                    f"round_proj_up_to_multiple_of={multiple}, is {self._proj_up_dim}; it must be >= 1")


@dataclass
class mLSTMLayerConfig(UpProjConfigMixin, ConfigMixin):
    conv1d_kernel_size: int = 4
    qkv_proj_blocksize: int = 4
    num_heads: int = 4
    proj_factor: float = 2.0
    embedding_dim: int = -1  # set by the stack
    bias: bool = False  # set by the stack
    dropout: float = 0.0  # set by the stack
    context_length: int = -1  # set by the stack; no limit here
    _num_blocks: int = 1
    _inner_embedding_dim: int = None

    def __post_init__(self):
        check_field_types(self)
        self._set_proj_up_dim(self.embedding_dim)
        self._inner_embedding_dim = self._proj_up_dim
        if self.embedding_dim > 0:
            inner = self._inner_embedding_dim
            require(self.num_heads >= 1 and inner % self.num_heads == 0,
                     f"mLSTM num_heads={self.num_heads} must divide the inner dim {inner}")
            require(self.qkv_proj_blocksize >= 1 and inner % self.qkv_proj_blocksize == 0,
                     f"mLSTM qkv_proj_blocksize={self.qkv_proj_blocksize} must divide the inner dim {inner}")
        require(self.conv1d_kernel_size >= 0, f"conv1d_kernel_size must be >= 0, got {self.conv1d_kernel_size}")

    @property
    def inner_dim(self) -> int:
        return self._inner_embedding_dim


@dataclass
class mLSTMBlockConfig(ConfigMixin):
    mlstm: mLSTMLayerConfig = field(default_factory=mLSTMLayerConfig)
    _num_blocks: int = None
    _block_idx: int = None

    def __post_init__(self):
        check_field_types(self)
        self.mlstm._num_blocks = self._num_blocks
        self.mlstm.__post_init__()


@dataclass
class sLSTMLayerConfig(ConfigMixin):
    """The official sLSTMCellConfig fields plus the layer's. The CUDA-kernel fields (dtypes, batch_size, shapes,
    clipping) are accepted for compatibility; this library's sLSTM computes in float32 or wider.

    `backend` keeps its official name and values, but here it runs no kernel: it says how the recurrent kernel
    and bias are laid out in the state_dict, and the code reads it as `weight_layout`. Which sLSTM implementation
    runs is a runtime option (RuntimeOptions.slstm_backend)."""

    hidden_size: int = -1  # = embedding_dim
    num_heads: int = 4
    num_states: int = 4
    backend: str = "cuda"  # the weight layout, "vanilla" or "cuda" (official name; see weight_layout)
    function: str = "slstm"
    bias_init: Literal["powerlaw_blockdependent", "small_init", "standard", "zeros"] = "powerlaw_blockdependent"
    recurrent_weight_init: Literal["zeros", "standard"] = "zeros"
    _block_idx: int = 0
    _num_blocks: int = 1
    num_gates: int = 4
    gradient_recurrent_cut: bool = False
    gradient_recurrent_clipval: float | None = None
    forward_clipval: float | None = None
    batch_size: int = 8
    input_shape: Literal["BSGNH", "SBGNH"] = "BSGNH"
    internal_input_shape: Literal["SBNGH", "SBGNH", "SBNHG"] = "SBNGH"
    output_shape: Literal["BNSH", "SBH", "BSH", "SBNH"] = "BNSH"
    constants: dict = field(default_factory=dict)
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    dtype_b: Literal["float32", "bfloat16", "float16"] | None = "float32"
    dtype_r: Literal["float32", "bfloat16", "float16"] | None = None
    dtype_w: Literal["float32", "bfloat16", "float16"] | None = None
    dtype_g: Literal["float32", "bfloat16", "float16"] | None = None
    dtype_s: Literal["float32", "bfloat16", "float16"] | None = None
    dtype_a: Literal["float32", "bfloat16", "float16"] | None = None
    enable_automatic_mixed_precision: bool = True
    initial_val: float | list[float] = 0.0
    # the layer
    embedding_dim: int = -1
    conv1d_kernel_size: int = 4
    group_norm_weight: bool = True
    dropout: float = 0.0

    def __post_init__(self):
        check_field_types(self)
        self.hidden_size = self.embedding_dim
        if self.num_heads <= 0:
            self.num_heads = 1
        require(self.backend in SLSTM_WEIGHT_LAYOUTS, f"unknown sLSTM backend {self.backend!r}; expected one of "
                 f"{SLSTM_WEIGHT_LAYOUTS} (it names the weight layout of an official checkpoint; both run this "
                 "library's PyTorch sLSTM)")
        require(self.function in SLSTM_FUNCTIONS,
                 f"unknown sLSTM function {self.function!r}; expected one of {SLSTM_FUNCTIONS}")
        require(self.bias_init in SLSTM_BIAS_INITS,
                 f"unknown sLSTM bias_init {self.bias_init!r}; expected one of {SLSTM_BIAS_INITS}")
        require(self.recurrent_weight_init in SLSTM_RECURRENT_INITS, f"unknown sLSTM recurrent_weight_init "
                 f"{self.recurrent_weight_init!r}; expected one of {SLSTM_RECURRENT_INITS}")
        require(self.conv1d_kernel_size >= 0, f"conv1d_kernel_size must be >= 0, got {self.conv1d_kernel_size}")
        if self.embedding_dim > 0:
            require(self.embedding_dim % self.num_heads == 0,
                     f"sLSTM num_heads={self.num_heads} must divide embedding_dim={self.embedding_dim}")
        # the official dtype defaults, kept for compatibility
        self.dtype_b = self.dtype_b or self.dtype
        self.dtype_a = self.dtype_a or self.dtype_b
        self.dtype_r = self.dtype_r or self.dtype
        self.dtype_w = self.dtype_w or self.dtype
        self.dtype_s = self.dtype_s or self.dtype_w
        self.dtype_g = self.dtype_g or self.dtype_r
        self.num_states = 4 if self.function == "slstm" else 2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def weight_layout(self) -> str:
        """The field `backend` by what it means here: how `_recurrent_kernel_` and `_bias_` are laid out in the
        state_dict, "vanilla" or "cuda", as the official backend of that name stores them (the two layouts:
        ops/slstm/README.md, "Official weight layouts")."""
        return self.backend


@dataclass
class FeedForwardConfig(UpProjConfigMixin, ConfigMixin):
    proj_factor: float = 1.3
    act_fn: str = "gelu"
    embedding_dim: int = -1
    dropout: float = 0.0
    bias: bool = False
    ff_type: Literal["ffn_gated"] = "ffn_gated"
    _num_blocks: int = 1

    def __post_init__(self):
        check_field_types(self)
        self._set_proj_up_dim(self.embedding_dim)
        require(0 <= self.dropout <= 1, f"FeedForwardConfig.dropout must be in [0, 1], got {self.dropout}")
        require(self.act_fn in ACTIVATIONS, f"unknown activation act_fn={self.act_fn!r}; expected one of "
                 f"{ACTIVATIONS}")
        require(self.ff_type == "ffn_gated", f"unknown ff_type {self.ff_type!r}; expected 'ffn_gated'")


@dataclass
class sLSTMBlockConfig(ConfigMixin):
    slstm: sLSTMLayerConfig = field(default_factory=sLSTMLayerConfig)
    feedforward: FeedForwardConfig | None = field(default_factory=FeedForwardConfig)
    _num_blocks: int = None
    _block_idx: int = None

    def __post_init__(self):
        check_field_types(self)
        self.slstm._block_idx = self._block_idx
        self.slstm._num_blocks = self._num_blocks
        self.slstm.__post_init__()
        if self.feedforward is not None:
            self.feedforward.__post_init__()


@dataclass
class xLSTMBlockStackConfig(ConfigMixin):
    mlstm_block: mLSTMBlockConfig | None = None
    slstm_block: sLSTMBlockConfig | None = None
    context_length: int = -1  # kept for compatibility: there is no context limit
    num_blocks: int = 1
    embedding_dim: int = 128
    add_post_blocks_norm: bool = True
    bias: bool = False
    dropout: float = 0.0
    slstm_at: list[int] | Literal["all"] = field(default_factory=list)
    _block_map: str = None

    def __post_init__(self):
        require(isinstance(self.num_blocks, int) and self.num_blocks >= 1,
                 f"num_blocks must be a positive int, got {self.num_blocks!r}")
        require(isinstance(self.embedding_dim, int) and self.embedding_dim >= 1,
                 f"embedding_dim must be a positive int, got {self.embedding_dim!r}")
        require(self.mlstm_block is not None or self.slstm_block is not None,
                 "the stack needs an mlstm_block or an slstm_block config")
        if self.mlstm_block is None or self.slstm_at == "all":
            self.slstm_at = list(range(self.num_blocks))
        require(isinstance(self.slstm_at, list | tuple), f"slstm_at must be a list of block indices or 'all', "
                 f"got {self.slstm_at!r}")
        self.slstm_at = list(self.slstm_at)
        check_field_types(self)
        require(0 <= self.dropout <= 1, f"dropout must be in [0, 1], got {self.dropout}")
        for idx in self.slstm_at:
            require(0 <= idx < self.num_blocks,
                     f"slstm_at entry {idx!r} is out of range for num_blocks={self.num_blocks} "
                     f"(0..{self.num_blocks - 1})")
        require(len(set(self.slstm_at)) == len(self.slstm_at), f"slstm_at has duplicates: {self.slstm_at}")
        require(not self.slstm_at or self.slstm_block is not None,
                 f"slstm_at={self.slstm_at} places sLSTM blocks, but slstm_block is None")
        if self.mlstm_block is not None:
            block = self.mlstm_block = copy.deepcopy(self.mlstm_block)
            block.mlstm.embedding_dim, block.mlstm.bias = self.embedding_dim, self.bias
            block.mlstm.dropout, block.mlstm.context_length = self.dropout, self.context_length
            block._num_blocks = self.num_blocks
            block.__post_init__()
        if self.slstm_block is not None:
            block = self.slstm_block = copy.deepcopy(self.slstm_block)
            block.slstm.dropout, block.slstm.embedding_dim = self.dropout, self.embedding_dim
            block._num_blocks = self.num_blocks
            if block.feedforward is not None:
                block.feedforward.embedding_dim, block.feedforward._num_blocks = self.embedding_dim, self.num_blocks
            block.__post_init__()
        self._block_map = ",".join("1" if idx in self.slstm_at else "0" for idx in range(self.num_blocks))

    @property
    def block_map(self) -> list[int]:
        """1 where block i is an sLSTM block, 0 where it is an mLSTM block."""
        return [int(x) for x in self._block_map.split(",")]

    def block_config(self, idx: int) -> mLSTMBlockConfig | sLSTMBlockConfig:
        """The config of block `idx`, with its index set (the sLSTM forget-gate init depends on it)."""
        block = copy.deepcopy(self.slstm_block if self.block_map[idx] else self.mlstm_block)
        block._block_idx = idx
        block.__post_init__()
        return block


@dataclass
class xLSTMLMModelConfig(xLSTMBlockStackConfig):
    vocab_size: int = -1
    tie_weights: bool = False
    weight_decay_on_embedding: bool = False
    add_embedding_dropout: bool = False

    def __post_init__(self):
        require(isinstance(self.vocab_size, int) and self.vocab_size >= 1,
                 f"vocab_size must be a positive int, got {self.vocab_size!r}")
        super().__post_init__()
