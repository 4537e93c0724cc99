"""xLSTM Large, the xLSTM-7B architecture: embedding, pre-norm mLSTM blocks, output norm, soft-capped logits.

Module and parameter names are those of the Hugging Face checkpoint in its fused layout
(`backbone.blocks.{i}.mlstm_layer.qkv_opreact.weight`, ...); `checkpoint/` reads and writes both layouts.
"""

from os import PathLike

import torch
from torch import nn

from ... import checkpoint
from ...config import RuntimeOptions, xLSTMLargeConfig
from ...ops.mlstm import check_state, mLSTMState
from ..checks import check_documents, check_inplace, check_logits_to_keep, check_state_type, check_token_ids
from ..state import xLSTMLargeState
from .layers import LargeMLSTMBlock, LargeMultiHeadLayerNorm, RMSNorm, soft_cap


class xLSTMLargeBackbone(nn.Module):
    def __init__(self, config: xLSTMLargeConfig):
        super().__init__()
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_dim)
        self.blocks = nn.ModuleList(LargeMLSTMBlock(config) for _ in range(config.num_blocks))
        self.out_norm = RMSNorm(config.embedding_dim, eps=config.norm_eps, use_bias=config.use_bias,
                                force_float32=config.norm_reduction_force_float32) if config.add_out_norm else None

    def forward(self, input_ids: torch.Tensor, state: xLSTMLargeState | None, runtime: RuntimeOptions,
                resets: torch.Tensor | None = None, inplace: bool = False, attention_mask: torch.Tensor | None = None,
                hidden_states: list | None = None) -> tuple[torch.Tensor, xLSTMLargeState]:
        """input_ids [B, S] -> normed hidden states [B, S, d], new state (with inplace, written into `state`).

        attention_mask [B, S] bool (True: a token; validated by the caller) or None: every block's memory holds
        still at pads. hidden_states: a list to append to, in order, the input of every block (the first is the
        embedding) and then the final output (normed): num_blocks + 1 tensors [B, S, d], as transformers'
        output_hidden_states.
        """
        x = self.embeddings(input_ids)
        new_state = []
        for block, block_state in zip(self.blocks, state or [None] * len(self.blocks), strict=True):
            if hidden_states is not None:
                hidden_states.append(x)
            x, block_state = block(x, block_state, runtime, resets, inplace, attention_mask)
            new_state.append(block_state if inplace else block_state.to(runtime.state_dtype))
        x = x if self.out_norm is None else self.out_norm(x)
        if hidden_states is not None:
            hidden_states.append(x)
        return x, tuple(new_state)


class xLSTMLarge(nn.Module):
    """The xLSTM-7B architecture at any size.

    `logits, state = model(input_ids)`, then `model(next_ids, state=state)` continues from the state:
    logits [B, S, vocab_size] in float32, state one `mLSTMState` per block (runtime.state_dtype).
    Execution choices (kernel, chunk size, state dtype, segmenting) are in `model.runtime`.
    The stateful contract shared with the NeurIPS LM (model/README.md): `forward_with_state`, `allocate_state`,
    `check_state`, `get_input_embeddings`; here `forward` is `forward_with_state`.
    """

    def __init__(self, config: xLSTMLargeConfig, runtime: RuntimeOptions | None = None):
        super().__init__()
        self.config = config
        self.runtime = runtime or RuntimeOptions()
        self.backbone = xLSTMLargeBackbone(config)
        self.lm_head = nn.Linear(config.embedding_dim, config.vocab_size, bias=False)
        self.reset_parameters()

    def forward(self, input_ids: torch.Tensor, state: xLSTMLargeState | None = None, *,
                attention_mask: torch.Tensor | None = None, logits_to_keep: int = 0,
                resets: torch.Tensor | None = None, inplace: bool = False) -> tuple[torch.Tensor, xLSTMLargeState]:
        """The same as forward_with_state: logits and the state after the tokens."""
        return self.forward_with_state(input_ids, state, attention_mask=attention_mask, logits_to_keep=logits_to_keep,
                                       resets=resets, inplace=inplace)

    def forward_with_state(self, input_ids: torch.Tensor, state: xLSTMLargeState | None = None, *,
                           attention_mask: torch.Tensor | None = None, resets: torch.Tensor | None = None,
                           logits_to_keep: int = 0, inplace: bool = False) -> tuple[torch.Tensor, xLSTMLargeState]:
        """Logits of the tokens and the state after them.

        Args:
            input_ids (LongTensor): `[B, S]`, any S >= 1, ids in [0, vocab_size).
            state (tuple of mLSTMState, optional): from a previous call or `allocate_state`; empty when None.
            attention_mask (Tensor, optional): `[B, S]`, bool or integer 0/1 (1: a token, 0: a pad), as transformers
                gives it; each row's tokens contiguous (left and/or right padding). A pad leaves the state of its
                row exactly unchanged, so each row gets what it gets alone. Logits at pads are finite but
                unspecified.
            resets (BoolTensor, optional): `[B, S]`; documents start at these tokens and the state is emptied
                there, so packed documents run exactly as if alone.
            logits_to_keep (int): if > 0, return logits only for the last `logits_to_keep` positions, so a long
                prompt never materializes `[B, S, vocab_size]`. Default: 0 (all positions).
            inplace (bool): write the new state into `state`'s tensors (in their dtype) and return `state`
                itself; the values equal those of a call without it. For decoding without autograd from an
                allocated state (a CUDA graph keeps its addresses). Default: False.

        Returns:
            logits `[B, S or logits_to_keep, vocab_size]` (float32) and the new state.
        """
        B, S = check_token_ids(input_ids, self.config.vocab_size)
        check_inplace(state, inplace)
        if state is not None:
            self.check_state(state, B, input_ids.device)
        mask = check_documents(attention_mask, resets, B, S, input_ids.device)
        check_logits_to_keep(logits_to_keep)
        keep_from = max(S - logits_to_keep, 0) if logits_to_keep else 0
        # without autograd, long inputs go through all blocks one segment at a time: same result, bounded memory
        segment = S if torch.is_grad_enabled() else self.runtime.max_inference_chunksize
        logits, given = [], state
        for start in range(0, S, segment):
            end = min(start + segment, S)
            hidden, state = self.backbone(input_ids[:, start:end], state, self.runtime,
                                          None if resets is None else resets[:, start:end], inplace,
                                          None if mask is None else mask[:, start:end])
            if end > keep_from:
                logits.append(self.logits(hidden[:, max(keep_from - start, 0):]))
        return (logits[0] if len(logits) == 1 else torch.cat(logits, dim=1)), (given if inplace else state)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Normed hidden states [..., d] -> soft-capped float32 logits [..., vocab_size]."""
        logits, cap = self.lm_head(hidden).float(), self.config.output_logit_soft_cap
        if cap is None or torch.is_grad_enabled():
            return soft_cap(logits, cap)
        return logits.div_(cap).tanh_().mul_(cap)  # in place: temporaries of [..., vocab] cost more than tanh

    def allocate_state(self, batch_size: int, device: torch.device | str | None = None,
                       dtype: torch.dtype | None = None) -> xLSTMLargeState:
        """The empty state (zeros, m = 0) for `batch_size` sequences: one mLSTMState (C [B, H, DK, DV],
        n [B, H, DK], m [B, H]) per block, in `dtype` (default runtime.state_dtype, float32 unless changed), on
        `device` (default the parameters')."""
        c = self.config
        device = self.lm_head.weight.device if device is None else device
        dtype = self.runtime.state_dtype if dtype is None else dtype
        return tuple(mLSTMState.zeros(batch_size, c.num_heads, c.qk_head_dim, c.v_head_dim, dtype=dtype,
                                      device=device) for _ in range(c.num_blocks))

    def check_state(self, state: xLSTMLargeState, batch_size: int, device: torch.device | None = None) -> None:
        """Raise ValueError (TypeError for a wrong type or dtype) unless `state` is one mLSTMState per block of
        floating-point tensors for `batch_size` sequences, on `device` when given."""
        c = self.config
        if not isinstance(state, tuple | list) or len(state) != c.num_blocks:
            got = len(state) if isinstance(state, tuple | list) else type(state).__name__
            raise ValueError(f"state must hold one mLSTMState per block ({c.num_blocks}), got {got}")
        for idx, block_state in enumerate(state):
            check_state_type(block_state, mLSTMState, f"state[{idx}]", device)
            check_state(block_state, batch_size, c.num_heads, c.qk_head_dim, c.v_head_dim, where=f"state[{idx}]")

    def residual_blocks(self) -> nn.ModuleList:
        """The residual blocks in order (`backbone.blocks`): what FSDP shards and activation checkpointing wraps."""
        return self.backbone.blocks

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding (`backbone.embeddings`), under the name transformers gives it."""
        return self.backbone.embeddings

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialization of the Hugging Face / NX-AI recipe, except that the FFN gate is not zeroed."""
        c = self.config
        for module in self.modules():
            if isinstance(module, RMSNorm | LargeMultiHeadLayerNorm):
                nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        small = (2 / (5 * c.embedding_dim)) ** 0.5  # "small init" (Nguyen & Salazar, 2019)
        nn.init.normal_(self.backbone.embeddings.weight, std=small)
        nn.init.normal_(self.lm_head.weight, std=small)
        for block in self.backbone.blocks:
            layer = block.mlstm_layer
            nn.init.normal_(layer.qkv_opreact.weight, std=small)
            layer.qkv_opreact.weight[2 * c.qk_dim + c.v_dim:].zero_()  # output gate starts at sigmoid(0)
            nn.init.zeros_(layer.ifgate_preact.weight)
            i_bias, f_bias = layer.ifgate_preact.bias.split(c.num_heads)
            i_bias.fill_(-10.0)  # input gates nearly closed
            f_bias.copy_(torch.linspace(3.0, 6.0, c.num_heads, device=f_bias.device))  # forget gates open
            nn.init.normal_(layer.out_proj.weight, std=2 / c.num_blocks / c.v_dim**0.5)  # "wang init"
            nn.init.normal_(block.ffn.proj_up_gate_z.weight, std=small)
            nn.init.normal_(block.ffn.proj_down.weight, std=2 / c.num_blocks / c.ffn_dim**0.5)

    @classmethod
    def from_pretrained(cls, path: str | PathLike, dtype: torch.dtype | None = None,
                        device: torch.device | str | None = None, **runtime_options) -> "xLSTMLarge":
        """Load a Hugging Face folder (config.json + model.safetensors or shards), or the NX-AI layout.

        dtype defaults to the stored one. Tensors are read one at a time into a model built without
        random weights, so loading float32 into bfloat16 needs about the bfloat16 model's memory.
        `runtime_options` override those derived from config.json (see RuntimeOptions).
        """
        return checkpoint.load_pretrained(cls, path, dtype=dtype, device=device, **runtime_options)

    def save_pretrained(self, path: str | PathLike, max_shard_size: int | str = "5GB") -> None:
        """Write config.json and safetensors weights in the Hugging Face layout (config.weight_mode). If the save
        fails or is killed, the folder loads the old checkpoint exactly, the new one exactly, or raises a
        CheckpointError that calls it inconsistent (README, "Drop-in checkpoints")."""
        checkpoint.save_pretrained(self, path, max_shard_size=max_shard_size)
