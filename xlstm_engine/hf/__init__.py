"""Hugging Face transformers classes over the xLSTM Large core (README.md here): `xLSTMForCausalLM`, `xLSTMModel`,
their cache and `register()` for the Auto classes. The only package that imports transformers (`pip install
'xlstm-engine[hf]'`)."""

try:
    import transformers
except ImportError as e:  # an optional extra: say which
    raise ImportError("xlstm_engine.hf needs transformers: pip install 'xlstm-engine[hf]'") from e

from transformers import xLSTMConfig

from .cache import xLSTMStateCache
from .config import hf_config, large_config, runtime_options
from .modeling import (
    causal_lm_loss,
    xLSTMBlock,
    xLSTMCausalLMOutput,
    xLSTMForCausalLM,
    xLSTMModel,
    xLSTMOutput,
    xLSTMPreTrainedModel,
)

__all__ = [
    "causal_lm_loss", "hf_config", "large_config", "register", "runtime_options", "xLSTMBlock", "xLSTMCausalLMOutput",
    "xLSTMConfig", "xLSTMForCausalLM", "xLSTMModel", "xLSTMOutput", "xLSTMPreTrainedModel", "xLSTMStateCache",
]


def register() -> None:
    """Make transformers' `AutoModelForCausalLM` and `AutoModel` build our classes for model_type "xlstm" (for
    this process; `pipeline("text-generation", "path")` and `from_pretrained` on the Auto classes included).

    transformers' own xLSTM classes stay importable by name; calling register() again does nothing new.
    """
    transformers.AutoModel.register(xLSTMConfig, xLSTMModel, exist_ok=True)
    transformers.AutoModelForCausalLM.register(xLSTMConfig, xLSTMForCausalLM, exist_ok=True)
