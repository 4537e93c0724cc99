"""The xLSTM Large (xLSTM-7B) architecture config: what a checkpoint saves. Validated on construction, frozen.

Execution choices (kernel, chunk size, state dtype, memory bounds) live in `config.runtime.RuntimeOptions`.
"""

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .base import check_field_types, require

WEIGHT_MODES = ("single", "fused")

# Fields of the official and Hugging Face configs that choose how to run, not what to compute
OFFICIAL_RUNTIME_KEYS = frozenset({
    "chunkwise_kernel", "sequence_kernel", "step_kernel", "mode", "chunk_size", "return_last_states",
    "autocast_kernel_dtype", "inference_state_dtype", "max_inference_chunksize", "use_cache",
})


def round_up_to_multiple(x: float, multiple: int) -> int:
    """The official rounding, int(((x + multiple - 1) // multiple) * multiple), kept exactly: for a float x it
    is not a ceiling (768 * 2.667 = 2048.3 gives 2048, not 2112), and checkpoints depend on it."""
    return int(((x + multiple - 1) // multiple) * multiple)


@dataclass(frozen=True)
class xLSTMLargeConfig:
    """The xLSTM-7B architecture ("xLSTM Large"): pre-norm mLSTM blocks with a SwiGLU feed-forward.

    Field names and defaults follow the official `xlstm.xlstm_large.model.xLSTMLargeConfig`. Its kernel and
    mode fields are execution choices here (`RuntimeOptions`); `from_dict` accepts and maps them.
    """

    embedding_dim: int
    num_heads: int
    num_blocks: int
    vocab_size: int
    use_bias: bool = False  # on q, k, v, the output gate, out_proj, the FFN and the norms (gates always have one)
    norm_eps: float = 1e-6
    norm_reduction_force_float32: bool = True
    add_out_norm: bool = True
    qk_dim_factor: float = 0.5
    v_dim_factor: float = 1.0
    eps: float = 1e-6  # mLSTM denominator
    ffn_proj_factor: float = 2.6667
    ffn_round_up_to_multiple_of: int = 64
    gate_soft_cap: float | None = 15.0
    output_logit_soft_cap: float | None = 30.0
    weight_mode: str = "single"  # the layout written to checkpoints; the model itself always runs fused
    # tokenizer identity, carried for generation and the Hugging Face config; not used by the forward
    bos_token_id: int | None = 0
    eos_token_id: int | tuple[int, ...] | None = 2
    pad_token_id: int | None = 1

    def __post_init__(self):
        if isinstance(self.eos_token_id, list):  # as JSON gives it
            object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
        check_field_types(self)
        for name in ("embedding_dim", "num_heads", "num_blocks", "vocab_size", "ffn_round_up_to_multiple_of"):
            require(getattr(self, name) >= 1,
                    f"xLSTMLargeConfig.{name} must be a positive int, got {getattr(self, name)!r}")
        for name in ("qk_dim_factor", "v_dim_factor", "ffn_proj_factor", "norm_eps", "eps"):
            # also rejects nan; inf would overflow int() in the dims
            require(0 < getattr(self, name) < math.inf,
                    f"xLSTMLargeConfig.{name} must be a finite number > 0, got {getattr(self, name)!r}")
        for name in ("gate_soft_cap", "output_logit_soft_cap"):  # cap * tanh(x / cap)
            require(getattr(self, name) is None or 0 < getattr(self, name) < math.inf,
                    f"xLSTMLargeConfig.{name} must be > 0 or None, got {getattr(self, name)!r} (a cap must also be "
                    "finite)")
        require(self.weight_mode in WEIGHT_MODES,
                f"xLSTMLargeConfig.weight_mode must be one of {WEIGHT_MODES}, got {self.weight_mode!r}")
        for name, dim in (("qk_dim", self.qk_dim), ("v_dim", self.v_dim)):
            require(dim >= self.num_heads and dim % self.num_heads == 0,
                    f"{name} = int(embedding_dim * {name}_factor) = {dim} must be a positive multiple of num_heads = "
                    f"{self.num_heads}")
        # the official rounding gives 0 whenever embedding_dim * ffn_proj_factor < 1
        require(self.ffn_dim >= 1,
                f"xLSTMLargeConfig: ffn_dim = round_up_to_multiple(embedding_dim * ffn_proj_factor, "
                f"ffn_round_up_to_multiple_of) = round_up_to_multiple({self.embedding_dim} * {self.ffn_proj_factor}, "
                f"{self.ffn_round_up_to_multiple_of}) = {self.ffn_dim}; it must be >= 1, so embedding_dim * "
                "ffn_proj_factor must be >= 1")

    @property
    def qk_dim(self) -> int:
        return int(self.embedding_dim * self.qk_dim_factor)

    @property
    def v_dim(self) -> int:
        return int(self.embedding_dim * self.v_dim_factor)

    @property
    def qk_head_dim(self) -> int:
        return self.qk_dim // self.num_heads

    @property
    def v_head_dim(self) -> int:
        return self.v_dim // self.num_heads

    @property
    def ffn_dim(self) -> int:
        return round_up_to_multiple(self.embedding_dim * self.ffn_proj_factor, self.ffn_round_up_to_multiple_of)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "xLSTMLargeConfig":
        """Strict: a key that is not a field raises ValueError naming it.

        The official config's execution fields are accepted and ignored here; use
        `RuntimeOptions.from_config_dict` to read them.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields - OFFICIAL_RUNTIME_KEYS)
        require(not unknown, f"unknown xLSTMLargeConfig key(s) {unknown}; expected fields {sorted(fields)}")
        return cls(**{k: v for k, v in d.items() if k in fields})


# Named presets. "7b" is NX-AI/xLSTM-7b; "160m" is the CPU benchmark size.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(embedding_dim=64, num_heads=2, num_blocks=2, vocab_size=256),
    "160m": dict(embedding_dim=768, num_heads=4, num_blocks=12, vocab_size=50304),
    "7b": dict(embedding_dim=4096, num_heads=8, num_blocks=32, vocab_size=50304, ffn_proj_factor=2.667),
}
