"""transformers' `xLSTMConfig` (model_type "xlstm") <-> our xLSTMLargeConfig and RuntimeOptions.

The Hugging Face config is the one the classes carry (`model.config`): it reads any xLSTM config.json, and
transformers' Auto classes, pipelines and PEFT know it. Architecture fields map onto xLSTMLargeConfig through
`checkpoint.hf_config` (the same rules as loading a folder), execution fields (`chunk_size`,
`inference_state_dtype`, `max_inference_chunksize`, a "parallel--" `chunkwise_kernel`) onto RuntimeOptions.
"""

import dataclasses

import torch
from transformers import xLSTMConfig

from ..checkpoint.hf_config import config_from_dict, config_to_dict
from ..config import RuntimeOptions, xLSTMLargeConfig

# Fields that say nothing about the function the weights compute: they may differ between the config a model is
# built from and the checkpoint it loads.
TOKEN_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id")
NON_ARCH_FIELDS = (*TOKEN_FIELDS, "weight_mode")


def large_config(config: xLSTMConfig) -> xLSTMLargeConfig:
    """The architecture of a transformers xLSTMConfig. Raises CheckpointError (a ValueError) naming a bad field."""
    return config_from_dict(config.to_dict(), f"{type(config).__name__}")


def runtime_options(config: xLSTMConfig) -> RuntimeOptions:
    """The execution choices of a transformers xLSTMConfig (kernel names map to "auto": we pick our kernels)."""
    return RuntimeOptions.from_config_dict(config.to_dict())


def hf_config(config: xLSTMLargeConfig, runtime: RuntimeOptions | None = None, dtype: torch.dtype = torch.float32,
              **overrides) -> xLSTMConfig:
    """A transformers xLSTMConfig for our architecture (and runtime options), e.g. to wrap an xLSTMLarge."""
    d = config_to_dict(config, dtype)
    if runtime is not None:
        d.update(chunk_size=runtime.chunk_size, max_inference_chunksize=runtime.max_inference_chunksize,
                 inference_state_dtype=str(runtime.state_dtype).removeprefix("torch."))
    return xLSTMConfig.from_dict({**d, **overrides})


def same_architecture(a: xLSTMLargeConfig, b: xLSTMLargeConfig) -> bool:
    """Whether two configs compute the same function of the same weights (token ids and weight_mode aside)."""
    keep = {**dict.fromkeys(TOKEN_FIELDS), "weight_mode": "single"}
    return dataclasses.replace(a, **keep) == dataclasses.replace(b, **keep)
