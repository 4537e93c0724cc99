"""transformers classes over the xLSTM Large core: `xLSTMModel` (the backbone) and `xLSTMForCausalLM` (with the
LM head), for `generate`, `pipeline`, the Auto classes, PEFT and the Trainer.

One set of modules: the classes hold the core's own modules (model/large) under the Hugging Face names
(`backbone.embeddings`, `backbone.blocks.{i}`, `backbone.out_norm`, `lm_head`), so the state_dict has the
checkpoint's keys (in the fused layout, which save_pretrained turns into config.weight_mode's), and the forward is
the core's: exact padding, a float32 state, our kernels.
"""

import copy
import dataclasses
from dataclasses import dataclass
from os import PathLike
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel, xLSTMConfig
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from ..config import RuntimeOptions
from ..model import xLSTMLarge
from ..model.checks import check_attention_mask, check_hidden, check_logits_to_keep, check_token_ids
from ..model.large.layers import LargeMLSTMBlock, soft_cap
from ..ops.mlstm import check_state, mLSTMState
from .cache import xLSTMStateCache
from .config import hf_config, large_config, runtime_options, same_architecture
from .io import IGNORED_LOAD_KWARGS, load_core, resolve_device, resolve_dtype, resolve_folder, save_folder

# Keywords that generate() and the Trainer may pass and that a recurrent model has no use for
_IGNORED_FORWARD_KWARGS = ("position_ids", "cache_position", "token_type_ids", "output_attentions")


class xLSTMBlock(GradientCheckpointingLayer, LargeMLSTMBlock):
    """The core block, unchanged, plus transformers' activation-checkpointing switch: after
    `model.gradient_checkpointing_enable()` its forward runs under torch.utils.checkpoint in training, so its
    activations are recomputed in the backward. The classes turn the core's blocks into this class in place."""


@dataclass
class xLSTMOutput(ModelOutput):
    """Output of xLSTMModel.

    last_hidden_state: [B, S, d], after the output norm.
    cache: the state after the tokens (`use_cache=True`), else None. Also readable as `cache_params`.
    hidden_states: with `output_hidden_states=True`, num_blocks + 1 tensors [B, S, d]: the input of every block,
        then the out-normed output (the last equals last_hidden_state).
    """

    last_hidden_state: torch.FloatTensor | None = None
    cache: xLSTMStateCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None

    @property
    def cache_params(self) -> xLSTMStateCache | None:
        return self.cache


@dataclass
class xLSTMCausalLMOutput(ModelOutput):
    """Output of xLSTMForCausalLM.

    loss: with `labels`, the mean cross-entropy of the next-token predictions (a scalar), else None.
    logits: [B, S or logits_to_keep, vocab_size], float32, soft-capped.
    cache, hidden_states: as in xLSTMOutput (`cache_params` reads cache).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: xLSTMStateCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None

    @property
    def cache_params(self) -> xLSTMStateCache | None:
        return self.cache


class xLSTMPreTrainedModel(PreTrainedModel):
    """What both classes share: transformers' xLSTMConfig, loading and saving Hugging Face folders through
    checkpoint/, the recurrent-model flags generate() reads."""

    config_class = xLSTMConfig
    base_model_prefix = "backbone"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _is_stateful = True  # generate() refuses assisted decoding, which would need to rewind the state
    _no_split_modules: ClassVar[list[str]] = ["xLSTMBlock"]

    def _init_weights(self, module: nn.Module) -> None:
        """Nothing: the core draws its initialization when it is built (xLSTMLarge.reset_parameters), and a model
        wrapped around loaded weights must keep them."""

    @classmethod
    def _from_core(cls, core: xLSTMLarge, config: xLSTMConfig) -> "xLSTMPreTrainedModel":
        raise NotImplementedError

    @classmethod
    def from_core(cls, core: xLSTMLarge, config: xLSTMConfig | None = None) -> "xLSTMPreTrainedModel":
        """Wrap an existing xLSTMLarge without copying: the new model uses its modules (and runtime options).
        `config` defaults to one built from core.config and core.runtime."""
        if config is None:
            config = hf_config(core.config, core.runtime, dtype=core.lm_head.weight.dtype)
        return cls._from_core(core, config)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | PathLike, *model_args,
                        config: xLSTMConfig | str | PathLike | None = None, dtype=None, torch_dtype=None, device=None,
                        device_map=None, runtime: RuntimeOptions | None = None, cache_dir=None,
                        force_download: bool = False, local_files_only: bool = False, token=None, revision=None,
                        subfolder: str = "", **kwargs):
        """Load a Hugging Face xLSTM folder (or Hub repo id): config.json, safetensors weights (one file or shards,
        'single' or 'fused' layout) and generation_config.json. Tokenizer files are AutoTokenizer's business.

        dtype (or torch_dtype): None or "auto" keeps the stored dtype. device / device_map: one device (the
        weights are read straight onto it). runtime: RuntimeOptions; default from the config's execution fields.
        Other keywords set config fields (`use_cache=False`, token ids, ...); fields of the architecture must
        agree with the folder. Returns the model in eval mode.
        """
        if model_args:
            raise TypeError(f"{cls.__name__}.from_pretrained takes no extra positional arguments, got {model_args}")
        for key in IGNORED_LOAD_KWARGS:
            kwargs.pop(key, None)
        for key, harmless in (("use_safetensors", True), ("output_loading_info", False)):
            value = kwargs.pop(key, harmless)
            if value not in (harmless, None):
                raise ValueError(f"{cls.__name__}.from_pretrained does not support {key}={value!r}")
        if (kwargs.pop("adapter_kwargs", None) or {}).get("_adapter_model_path"):  # the Auto classes found one
            raise ValueError(f"{pretrained_model_name_or_path} is a PEFT adapter: load its base model, then "
                             "peft.PeftModel.from_pretrained(model, adapter_folder)")
        folder = resolve_folder(pretrained_model_name_or_path, subfolder, cache_dir=cache_dir,
                                force_download=force_download, local_files_only=local_files_only, token=token,
                                revision=revision)
        if config is None or isinstance(config, str | PathLike):
            config, unused = xLSTMConfig.from_pretrained(folder if config is None else config,
                                                         return_unused_kwargs=True, **kwargs)
        else:
            config, unused = copy.deepcopy(config), {}
            for key, value in kwargs.items():
                if hasattr(config, key):
                    setattr(config, key, value)
                else:
                    unused[key] = value
        if unused:
            raise TypeError(f"{cls.__name__}.from_pretrained got unknown keyword argument(s) {sorted(unused)}: "
                            "neither loading options nor xLSTMConfig fields")
        device = resolve_device(device, device_map)
        core = load_core(folder, config, resolve_dtype(dtype if dtype is not None else torch_dtype), device,
                         need_head=cls is not xLSTMModel)
        core.runtime = runtime_options(config) if runtime is None else runtime
        config.dtype = core.lm_head.weight.dtype  # as loaded, which transformers records in the config
        model = cls._from_core(core, config)
        if model.can_generate() and (folder / "generation_config.json").is_file():
            model.generation_config = GenerationConfig.from_pretrained(folder)
        return model.eval()

    def save_pretrained(self, save_directory: str | PathLike, is_main_process: bool = True,
                        state_dict: dict[str, torch.Tensor] | None = None, push_to_hub: bool = False,
                        max_shard_size: int | str = "5GB", safe_serialization: bool = True, **kwargs) -> None:
        """Write config.json (transformers' xLSTMConfig, every field), the weights in config.weight_mode's layout
        (model.safetensors, or shards with an index above max_shard_size) and generation_config.json.

        A save that fails or is killed leaves a folder that loads the old model exactly, the new one exactly, or
        raises a CheckpointError saying it is inconsistent (checkpoint.safetensors_io.save_checkpoint).
        transformers' own xLSTMForCausalLM/xLSTMModel load the folder. `state_dict` (our keys) replaces the
        model's own tensors, as the Trainer passes it.
        """
        for key in ("save_peft_format", "save_original_format", "token", "distributed_checkpoint"):
            kwargs.pop(key, None)
        if kwargs.pop("variant", None) is not None or not safe_serialization:
            raise ValueError("save_pretrained writes safetensors files without a variant name")
        if push_to_hub:
            raise NotImplementedError("push_to_hub: save the folder, then upload it with huggingface_hub's "
                                      "upload_folder")
        if kwargs:
            raise TypeError(f"save_pretrained got unknown keyword argument(s) {sorted(kwargs)}")
        if not is_main_process:
            return
        tensors = self.state_dict() if state_dict is None else state_dict
        config = copy.deepcopy(self.config)
        config.architectures = [type(self).__name__]
        config.dtype = next(iter(tensors.values())).dtype
        save_folder(save_directory, {key: t.detach() for key, t in tensors.items()}, config,
                    is_base=isinstance(self, xLSTMModel), max_shard_size=max_shard_size)
        if self.can_generate() and self.generation_config is not None:
            self.generation_config.save_pretrained(save_directory)


def _share_modules(owner: nn.Module, backbone: nn.Module) -> None:
    """Make `backbone`'s modules `owner`'s, under the same names, and keep the two in step: they share one module
    dict, so a module replaced on either (PEFT, resize_token_embeddings) is replaced on both."""
    for idx, block in enumerate(backbone.blocks):
        if type(block) is LargeMLSTMBlock:
            block.__class__ = xLSTMBlock  # a subclass without state of its own: nothing else changes
        elif not isinstance(block, xLSTMBlock):
            raise TypeError(f"backbone.blocks[{idx}] is a {type(block).__name__}, expected a LargeMLSTMBlock")
    for name, module in backbone._modules.items():
        owner.add_module(name, module)
    backbone._modules = owner._modules
    owner.__dict__["_large"] = backbone  # not registered: its modules already are, as owner's


def _new_token_mask(attention_mask: torch.Tensor | None, B: int, S: int) -> torch.Tensor | None:
    """The columns of `attention_mask` that belong to the S new tokens. generate() passes the mask of the whole
    sequence so far ([B, S_total], S_total >= S) and only the tokens the state has not seen."""
    if attention_mask is None:
        return None
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.ndim != 2 or attention_mask.shape[0] != B \
            or attention_mask.shape[1] < S:
        got = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else type(attention_mask)
        raise ValueError(f"attention_mask must be a tensor [B, S_total] = [{B}, >= {S}] (the last S columns belong "
                         f"to input_ids), got {got}")
    return attention_mask[:, attention_mask.shape[1] - S:]


def _check_forward_kwargs(kwargs: dict) -> None:
    unknown = sorted(set(kwargs) - set(_IGNORED_FORWARD_KWARGS))
    if unknown:
        raise TypeError(f"forward got unknown keyword argument(s) {unknown}")
    if kwargs.get("output_attentions"):
        raise ValueError("output_attentions=True: an xLSTM has no attention weights")


def _one_cache(cache, cache_params):
    if cache is not None and cache_params is not None:
        raise ValueError("give cache or cache_params (its former name), not both")
    cache = cache if cache is not None else cache_params
    if cache is not None and not isinstance(cache, xLSTMStateCache):
        raise TypeError(f"cache must be an xLSTMStateCache (from a previous output's .cache), got "
                        f"{type(cache).__name__}")
    return cache


class xLSTMModel(xLSTMPreTrainedModel):
    """The xLSTM Large backbone as a transformers model: token ids -> out-normed hidden states [B, S, d].

    `model.runtime` (RuntimeOptions) holds the execution choices (kernel, chunk size, state dtype), taken from the
    config's execution fields. Keys: `embeddings.weight`, `blocks.{i}.…`, `out_norm.weight`.
    """

    def __init__(self, config: xLSTMConfig, core: xLSTMLarge | None = None):
        super().__init__(config)
        self.large_config = large_config(config)  # the architecture, frozen: the blocks hold it too
        if core is None:
            core = xLSTMLarge(self.large_config, runtime_options(config))
        elif not same_architecture(core.config, self.large_config):
            raise ValueError(f"the core's config {core.config} is another architecture than the given config's "
                             f"{self.large_config}")
        self.runtime = core.runtime
        _share_modules(self, core.backbone)
        self.post_init()

    @classmethod
    def _from_core(cls, core: xLSTMLarge, config: xLSTMConfig) -> "xLSTMModel":
        return cls(config, core=core)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.FloatTensor | None = None, cache: xLSTMStateCache | None = None,
                use_cache: bool | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, cache_params: xLSTMStateCache | None = None, **kwargs
                ) -> xLSTMOutput | tuple:
        """Hidden states of the tokens, continuing from `cache`.

        Args:
            input_ids: [B, S] token ids.
            attention_mask: [B, S_total >= S], 1 (or True) for a token, 0 for a pad; its last S columns belong to
                input_ids. Each row's ones are contiguous (left or right padding). A pad leaves the row's state
                unchanged, so a padded row computes exactly what it computes alone; outputs at pads are unspecified.
            inputs_embeds: [B, S, d] instead of input_ids (prompt tuning; generate's first step).
            cache (or cache_params): the state to continue from (an output's `.cache`); empty when None.
            use_cache: return the new state in `.cache` (default config.use_cache). A given cache object is updated
                and returned.
            output_hidden_states: also return the input of every block and the final output.
        """
        _check_forward_kwargs(kwargs)
        cache = _one_cache(cache, cache_params)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None \
            else output_hidden_states
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if input_ids is not None:
            B, S = check_token_ids(input_ids, self.embeddings.num_embeddings)
            device = input_ids.device
        else:
            B, S = check_hidden(inputs_embeds, self.large_config.embedding_dim, "inputs_embeds")
            device = inputs_embeds.device
        mask = check_attention_mask(_new_token_mask(attention_mask, B, S), B, S, device)  # bool, None if no pad
        state = None if cache is None else cache.state
        if state is not None:
            self._check_state(state, B, device)
        hidden_states = [] if output_hidden_states else None
        # without autograd, long inputs go through all blocks one segment at a time (as the core): same result,
        # bounded activation memory
        segment = S if torch.is_grad_enabled() or hidden_states is not None else self.runtime.max_inference_chunksize
        self._large.training = self.training  # unregistered, so .train()/.eval() do not reach it
        pieces = []
        for start in range(0, S, segment):
            end = min(start + segment, S)
            piece_mask = None if mask is None else mask[:, start:end]
            if input_ids is not None:
                hidden, state = self._large(input_ids[:, start:end], state, self.runtime,
                                            attention_mask=piece_mask, hidden_states=hidden_states)
            else:
                hidden, state = self._run_blocks(inputs_embeds[:, start:end], state, piece_mask, hidden_states)
            pieces.append(hidden)
        if use_cache:
            cache = cache if cache is not None else xLSTMStateCache()
            cache.update(state, S)
        out = xLSTMOutput(last_hidden_state=pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1),
                          cache=cache if use_cache else None,
                          hidden_states=None if hidden_states is None else tuple(hidden_states))
        return out if return_dict else out.to_tuple()

    def _run_blocks(self, x: torch.Tensor, state, mask: torch.Tensor | None, hidden_states: list | None):
        """The backbone's forward from embeddings x [B, S, d] instead of ids (inputs_embeds): every block, then the
        output norm. The same calls as xLSTMLargeBackbone.forward after its embedding lookup."""
        new_state = []
        for block, block_state in zip(self.blocks, state or [None] * len(self.blocks), strict=True):
            if hidden_states is not None:
                hidden_states.append(x)
            x, block_state = block(x, block_state, self.runtime, None, False, mask)
            new_state.append(block_state.to(self.runtime.state_dtype))
        x = x if self.out_norm is None else self.out_norm(x)
        if hidden_states is not None:
            hidden_states.append(x)
        return x, tuple(new_state)

    def _check_state(self, state, batch_size: int, device: torch.device) -> None:
        c = self.large_config
        if not isinstance(state, tuple | list) or len(state) != c.num_blocks:
            raise ValueError(f"cache.state must hold one mLSTMState per block ({c.num_blocks})")
        for idx, block_state in enumerate(state):
            if not isinstance(block_state, mLSTMState):
                raise TypeError(f"cache.state[{idx}] must be an mLSTMState, got {type(block_state).__name__}")
            check_state(block_state, batch_size, c.num_heads, c.qk_head_dim, c.v_head_dim, where=f"cache.state[{idx}]")
            if block_state.C.device != device:
                raise ValueError(f"cache.state[{idx}] is on {block_state.C.device}; the input is on {device}")


class xLSTMForCausalLM(xLSTMPreTrainedModel, GenerationMixin):
    """xLSTM Large as a transformers causal LM: `backbone` (an xLSTMModel) and `lm_head`, float32 soft-capped
    logits, the shifted next-token loss, generate() (greedy, sampling, beam search, padded batches).

    `model.core` is an xLSTMLarge over the same modules (the library's own contract: forward_with_state,
    allocate_state, xlstm_engine.generate); `model.runtime` its RuntimeOptions.
    """

    def __init__(self, config: xLSTMConfig, core: xLSTMLarge | None = None):
        super().__init__(config)
        if core is None:
            core = xLSTMLarge(large_config(config), runtime_options(config))
        self.backbone = xLSTMModel(config, core=core)
        self.lm_head = core.lm_head
        self.__dict__["_core"] = core  # not registered: its modules are this model's
        self.post_init()

    @classmethod
    def _from_core(cls, core: xLSTMLarge, config: xLSTMConfig) -> "xLSTMForCausalLM":
        return cls(config, core=core)

    @property
    def runtime(self) -> RuntimeOptions:
        return self.backbone.runtime

    @runtime.setter
    def runtime(self, value: RuntimeOptions) -> None:
        if not isinstance(value, RuntimeOptions):
            raise TypeError(f"runtime must be a RuntimeOptions, got {type(value).__name__}")
        self.backbone.runtime = value

    @property
    def core(self) -> xLSTMLarge:
        """An xLSTMLarge over this model's modules and runtime (no copy; the same object on every call)."""
        core = self._core
        core.backbone, core.lm_head, core.runtime = self.backbone._large, self.lm_head, self.runtime
        vocab_size = self.backbone.embeddings.num_embeddings
        if core.config.vocab_size != vocab_size:  # resize_token_embeddings: the core validates ids against it
            core.config = dataclasses.replace(core.config, vocab_size=vocab_size)
        return core

    def get_input_embeddings(self) -> nn.Embedding:
        return self.backbone.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.backbone.embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.FloatTensor | None = None, cache: xLSTMStateCache | None = None,
                labels: torch.LongTensor | None = None, use_cache: bool | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None, logits_to_keep: int = 0,
                cache_params: xLSTMStateCache | None = None, num_items_in_batch: int | torch.Tensor | None = None,
                **kwargs) -> xLSTMCausalLMOutput | tuple:
        """Logits (and loss) of the tokens, continuing from `cache`; the arguments of xLSTMModel.forward, and:

        labels: [B, S] targets, usually input_ids itself: position t is scored on predicting labels[:, t + 1].
            Targets of -100 are ignored, and so is every prediction whose position or target is a pad
            (attention_mask 0): a padded batch has the loss of its rows without the pads.
        logits_to_keep: if > 0, logits of the last logits_to_keep positions only (generate() passes 1).
        num_items_in_batch: divide the summed loss by this instead of the number of scored targets (the
            Trainer's gradient accumulation).
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        check_logits_to_keep(logits_to_keep)
        if labels is not None and logits_to_keep:
            raise ValueError("labels need the logits of every position; do not pass logits_to_keep with them")
        out = self.backbone(input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, cache=cache,
                            use_cache=use_cache, output_hidden_states=output_hidden_states, return_dict=True,
                            cache_params=cache_params, **kwargs)
        hidden = out.last_hidden_state
        logits = self._logits(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
        loss = None
        if labels is not None:
            mask = _new_token_mask(attention_mask, *logits.shape[:2])
            loss = causal_lm_loss(logits, labels, mask, num_items_in_batch)
        result = xLSTMCausalLMOutput(loss=loss, logits=logits, cache=out.cache, hidden_states=out.hidden_states)
        return result if return_dict else result.to_tuple()

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Out-normed hidden states [..., d] -> soft-capped float32 logits [..., vocab_size] (cap in float32)."""
        return soft_cap(self.lm_head(hidden).float(), self.backbone.large_config.output_logit_soft_cap)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None,
                   num_items_in_batch: int | torch.Tensor | None = None) -> torch.Tensor:
    """Shifted next-token cross-entropy: logits [B, S, V] at position t against labels [B, S] at t + 1.

    A target counts unless it is -100 or `mask` [B, S] (0 = pad) marks its position or the predicting one as a
    pad. Returns the sum over counted targets divided by their number (or by num_items_in_batch); 0 when none count.
    """
    if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != tuple(logits.shape[:2]):
        got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a tensor [B, S] = {tuple(logits.shape[:2])} like input_ids, got {got}")
    targets = labels[:, 1:].to(logits.device)
    if mask is not None:
        real = mask.to(logits.device).bool()
        targets = targets.masked_fill(~(real[:, 1:] & real[:, :-1]), -100)
    total = F.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
    if num_items_in_batch is None:
        num_items_in_batch = (targets != -100).sum().clamp_min(1)
    elif isinstance(num_items_in_batch, torch.Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch
