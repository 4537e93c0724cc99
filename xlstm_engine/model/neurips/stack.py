"""xLSTMBlockStack and xLSTMLMModel: drop-ins for the official classes, plus a stateful path.

    y = stack(x)                                   # [B, S, E] -> [B, S, E], as the official call
    y, state = stack.forward_with_state(x, state)  # a whole chunk in parallel, from a state, returning the new one
    y, state = stack.step(x_t, state)              # one token [B, 1, E]
    logits = lm(ids); logits, state = lm.forward_with_state(ids, state); logits, state = lm.step(ids_t, state)

There is no context_length limit: the mLSTM runs chunkwise and the state carries everything, conv history
included. State: one mLSTMLayerState / sLSTMLayerState per block (`model.state`); `allocate_state` gives an empty
one, which `forward_with_state(..., inplace=True)` updates where it lies (the contract of model/README.md).
"""

import torch
from torch import nn

from ...config import RuntimeOptions
from ...config.neurips import xLSTMBlockStackConfig, xLSTMLMModelConfig
from ...ops.mlstm import check_state as check_mlstm_state
from ...ops.mlstm import mLSTMState
from ...ops.slstm import check_state as check_slstm_state
from ...ops.slstm import sLSTMState
from ..checks import (
    check_documents,
    check_hidden,
    check_inplace,
    check_logits_to_keep,
    check_state_type,
    check_token_ids,
)
from ..state import mLSTMLayerState, sLSTMLayerState, xLSTMStackState
from .blocks import xLSTMBlock
from .components import LayerNorm, small_init_
from .slstm_layer import sLSTMLayer


class xLSTMBlockStack(nn.Module):
    def __init__(self, config: xLSTMBlockStackConfig, runtime: RuntimeOptions | None = None):
        super().__init__()
        self.config = config
        self.runtime = runtime or RuntimeOptions()
        self.blocks = nn.ModuleList(xLSTMBlock(config.block_config(i)) for i in range(config.num_blocks))
        self.post_blocks_norm = LayerNorm(config.embedding_dim) if config.add_post_blocks_norm else nn.Identity()
        self.reset_parameters()

    def forward(self, x: torch.Tensor, resets: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """x [B, S, E] -> y [B, S, E]: the official call (other keyword arguments are ignored, as there);
        resets and attention_mask as in forward_with_state."""
        return self.forward_with_state(x, resets=resets, attention_mask=attention_mask)[0]

    def forward_with_state(self, x: torch.Tensor, state: xLSTMStackState | None = None, *,
                           attention_mask: torch.Tensor | None = None, resets: torch.Tensor | None = None,
                           inplace: bool = False) -> tuple[torch.Tensor, xLSTMStackState]:
        """Process x [B, S, E] (any S >= 1) in parallel from `state` (None: empty). Returns y and the new state.

        attention_mask [B, S] (bool or integer 0/1, 1: a token, each row's tokens contiguous; optional): a pad leaves
        every state of its row (conv histories included) exactly unchanged, so each row gets what it gets alone;
        y at pads is finite but unspecified.

        resets [B, S] (bool, optional): documents start at these tokens; every layer's state (conv history
        included) is emptied there, so packed documents run exactly as if alone.
        inplace (bool): write the new state into `state`'s tensors (in their dtypes) and return `state` itself;
        the values equal those of a call without it. For decoding without autograd from `allocate_state`.
        """
        B, S = check_hidden(x, self.config.embedding_dim)
        check_inplace(state, inplace)
        if state is not None:
            self.check_state(state, B, x.device)
        mask = check_documents(attention_mask, resets, B, S, x.device)
        new_state = []
        for block, block_state in zip(self.blocks, state or [None] * len(self.blocks), strict=True):
            x, block_state = block(x, block_state, self.runtime, resets, inplace, mask)
            new_state.append(block_state if inplace else _cast(block_state, self.runtime.state_dtype))
        return self.post_blocks_norm(x), (state if inplace else tuple(new_state))

    def step(self, x: torch.Tensor, state: xLSTMStackState | None = None) -> tuple[torch.Tensor, xLSTMStackState]:
        """One token: x [B, 1, E] -> y [B, 1, E], new state."""
        if isinstance(x, torch.Tensor) and x.ndim == 3 and x.shape[1] != 1:  # forward_with_state checks the rest
            raise ValueError(f"step takes one token x [B, 1, E], got shape {tuple(x.shape)}")
        return self.forward_with_state(x, state)

    def allocate_state(self, batch_size: int, device: torch.device | str | None = None,
                       dtype: torch.dtype | None = None) -> xLSTMStackState:
        """The empty state for `batch_size` sequences, one layer state per block: the mLSTM memory (C, n, m) or
        the sLSTM state (h, c, n, m) in `dtype` (default runtime.state_dtype, float32 unless changed), zeros; the
        conv history [B, K-1, D] zeros in the parameters' dtype (the activations' without autocast), None without
        a conv. On `device` (default the parameters')."""
        param = next(self.parameters())
        device = param.device if device is None else device
        dtype = self.runtime.state_dtype if dtype is None else dtype
        state = []
        for block in self.blocks:
            c = block.xlstm.config
            if isinstance(block.xlstm, sLSTMLayer):
                layer_state, dim = sLSTMLayerState, c.embedding_dim
                cell = sLSTMState.zeros(batch_size, c.num_heads, c.head_dim, dtype=dtype, device=device)
            else:
                layer_state, dim, head_dim = mLSTMLayerState, c.inner_dim, c.inner_dim // c.num_heads
                cell = mLSTMState.zeros(batch_size, c.num_heads, head_dim, head_dim, dtype=dtype, device=device)
            K = c.conv1d_kernel_size
            conv = torch.zeros(batch_size, K - 1, dim, dtype=param.dtype, device=device) if K > 0 else None
            state.append(layer_state(conv, cell))
        return tuple(state)

    def check_state(self, state: xLSTMStackState, batch_size: int, device: torch.device | None = None) -> None:
        """Raise ValueError (TypeError for a wrong type or dtype) unless `state` fits this stack and batch size:
        one mLSTMLayerState / sLSTMLayerState per block, of floating-point tensors on `device` when given."""
        if not isinstance(state, tuple | list) or len(state) != len(self.blocks):
            got = len(state) if isinstance(state, tuple | list) else type(state).__name__
            raise ValueError(f"state must hold one layer state per block ({len(self.blocks)}), got {got}")
        for idx, (block, block_state) in enumerate(zip(self.blocks, state, strict=True)):
            layer, where = block.xlstm, f"state[{idx}]"
            is_slstm = isinstance(layer, sLSTMLayer)
            check_state_type(block_state, sLSTMLayerState if is_slstm else mLSTMLayerState, where, device)
            conv, cell = block_state
            check_state_type(cell, sLSTMState if is_slstm else mLSTMState, f"{where}.cell", device)
            c = layer.config
            if is_slstm:
                dim = c.embedding_dim
                check_slstm_state(cell, batch_size, c.num_heads, c.head_dim, where=f"{where}.cell")
            else:
                dim, head_dim = c.inner_dim, c.inner_dim // c.num_heads
                check_mlstm_state(cell, batch_size, c.num_heads, head_dim, head_dim, where=f"{where}.cell")
            K = c.conv1d_kernel_size
            expected_conv = (batch_size, K - 1, dim) if K > 0 else None
            got_conv = None if conv is None else tuple(conv.shape)
            if got_conv != expected_conv:
                raise ValueError(f"{where}.conv must be {'None' if K == 0 else expected_conv}, got {got_conv}")

    def reset_parameters(self) -> None:
        for block in self.blocks:
            block.reset_parameters()
        if isinstance(self.post_blocks_norm, LayerNorm):
            self.post_blocks_norm.reset_parameters()


class xLSTMLMModel(nn.Module):
    """Token embedding, xLSTMBlockStack, LM head (optionally tied). Parameters are initialized on construction
    (the official model leaves that to a reset_parameters() call)."""

    def __init__(self, config: xLSTMLMModelConfig, runtime: RuntimeOptions | None = None):
        super().__init__()
        self.config = config
        self.xlstm_block_stack = xLSTMBlockStack(config, runtime)
        self.token_embedding = nn.Embedding(config.vocab_size, config.embedding_dim)
        self.emb_dropout = nn.Dropout(config.dropout) if config.add_embedding_dropout else nn.Identity()
        self.lm_head = nn.Linear(config.embedding_dim, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.token_embedding.weight
        self.reset_parameters()

    @property
    def runtime(self) -> RuntimeOptions:
        """The stack's runtime options (one object for the whole model)."""
        return self.xlstm_block_stack.runtime

    @runtime.setter
    def runtime(self, runtime: RuntimeOptions) -> None:
        self.xlstm_block_stack.runtime = runtime

    def forward(self, idx: torch.Tensor, resets: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """idx [B, S] -> logits [B, S, vocab_size]. resets [B, S]: documents start there (packed sequences);
        attention_mask [B, S]: 0 marks pads (as in forward_with_state)."""
        return self.forward_with_state(idx, resets=resets, attention_mask=attention_mask)[0]

    def forward_with_state(self, idx: torch.Tensor, state: xLSTMStackState | None = None, *,
                           attention_mask: torch.Tensor | None = None, resets: torch.Tensor | None = None,
                           logits_to_keep: int = 0, inplace: bool = False) -> tuple[torch.Tensor, xLSTMStackState]:
        """idx [B, S] from `state` -> logits [B, S or logits_to_keep, vocab_size], new state.

        attention_mask, resets and inplace as in xLSTMBlockStack.forward_with_state (logits at pads are finite but
        unspecified); logits_to_keep > 0 keeps the logits of the last positions only (0: all), as in xLSTMLarge.
        """
        check_token_ids(idx, self.config.vocab_size, "idx")
        check_logits_to_keep(logits_to_keep)
        x, state = self.xlstm_block_stack.forward_with_state(self.emb_dropout(self.token_embedding(idx)), state,
                                                             attention_mask=attention_mask, resets=resets,
                                                             inplace=inplace)
        return self.lm_head(x[:, -logits_to_keep:] if logits_to_keep else x), state

    def step(self, idx: torch.Tensor, state: xLSTMStackState | None = None) -> tuple[torch.Tensor, xLSTMStackState]:
        """One token idx [B, 1] -> logits [B, 1, vocab_size], new state."""
        if isinstance(idx, torch.Tensor) and idx.ndim == 2 and idx.shape[1] != 1:  # forward_with_state checks the rest
            raise ValueError(f"step takes one token per sequence, idx [B, 1], got shape {tuple(idx.shape)}")
        return self.forward_with_state(idx, state)

    def allocate_state(self, batch_size: int, device: torch.device | str | None = None,
                       dtype: torch.dtype | None = None) -> xLSTMStackState:
        """The empty state for `batch_size` sequences (xLSTMBlockStack.allocate_state)."""
        return self.xlstm_block_stack.allocate_state(batch_size, device, dtype)

    def check_state(self, state: xLSTMStackState, batch_size: int, device: torch.device | None = None) -> None:
        """Raise unless `state` fits this model and batch size (xLSTMBlockStack.check_state)."""
        self.xlstm_block_stack.check_state(state, batch_size, device)

    def residual_blocks(self) -> nn.ModuleList:
        """The residual blocks in order (`xlstm_block_stack.blocks`): what FSDP shards and activation
        checkpointing wraps."""
        return self.xlstm_block_stack.blocks

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding (`token_embedding`), under the name transformers gives it."""
        return self.token_embedding

    def reset_parameters(self) -> None:
        self.xlstm_block_stack.reset_parameters()
        small_init_(self.token_embedding.weight, self.config.embedding_dim)
        if not self.config.tie_weights:
            small_init_(self.lm_head.weight, self.config.embedding_dim)


def _cast(state, dtype: torch.dtype):
    """A layer state with its cell state in `dtype` (the conv history keeps the activations' dtype)."""
    conv, cell = state
    return type(state)(conv, type(cell)(*(t.to(dtype) for t in cell)))
