"""What generation needs from a model: the stateful contract of model/README.md, nothing more.

Both `xLSTMLarge` and `xLSTMLMModel` satisfy `GenerationModel`; generation never branches on the model type.
"""

import hashlib
import json
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class GenerationModel(Protocol):
    """A causal LM with a recurrent state.

    `config` has `vocab_size` and `to_dict()`; `bos_token_id`, `eos_token_id` and `pad_token_id` where the
    model's config has them (xLSTMLargeConfig does, the NeurIPS config does not).
    """

    config: Any

    def forward_with_state(self, ids: torch.Tensor, state: Any = None, *, attention_mask: torch.Tensor | None = None,
                           resets: torch.Tensor | None = None, logits_to_keep: int = 0, inplace: bool = False
                           ) -> tuple[torch.Tensor, Any]:
        """ids [B, S] -> logits [B, S or logits_to_keep, V], the state after the tokens. attention_mask [B, S]:
        1 = token, 0 = pad (a pad leaves the state unchanged). inplace=True writes into `state`'s tensors."""

    def allocate_state(self, batch_size: int, device: torch.device | str | None = None,
                       dtype: torch.dtype | None = None) -> Any:
        """The empty state for `batch_size` rows, equal to starting from None."""

    def check_state(self, state: Any, batch_size: int, device: torch.device | None = None) -> None:
        """Raise ValueError/TypeError unless `state` fits this model and batch size."""


def check_model(model) -> None:
    """Raise TypeError naming what is missing unless `model` offers the generation contract."""
    missing = [name for name in ("forward_with_state", "allocate_state", "check_state", "config")
               if not hasattr(model, name)]
    if missing:
        raise TypeError(f"model must offer the stateful contract of xlstm_engine/model/README.md (xLSTMLarge, "
                        f"xLSTMLMModel); {type(model).__name__} lacks {', '.join(missing)}")


def config_token_id(model, name: str):
    """The model config's `bos_token_id` / `eos_token_id` / `pad_token_id`, or None where it has none."""
    return getattr(model.config, name, None)


def fingerprint(model) -> str:
    """sha256 of the model class name and the canonical JSON of its architecture config: two models whose states
    can be exchanged have the same fingerprint (runtime options and weights do not count)."""
    config = json.dumps(model.config.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{type(model).__name__}\n{config}".encode()).hexdigest()
