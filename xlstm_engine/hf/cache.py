"""The cache that transformers' `generate` carries between forward calls: our recurrent state, nothing more."""

import torch

from ..ops.mlstm import mLSTMState


class xLSTMStateCache:
    """The state of every block after the tokens seen so far, for `cache=` / `outputs.cache`.

    `state` is one `mLSTMState(C [B, H, DK, DV], n [B, H, DK], m [B, H])` per block, in `runtime.state_dtype`
    (float32 unless changed, whatever the model dtype), or None before the first call. `seqlen_offset` counts the
    token positions consumed (pads included), which `generate` compares with a full `input_ids` to feed only the
    tokens the state has not seen.

    A forward with `use_cache=True` rebinds `state` to the new tensors (the old ones are never written), so a state
    taken out of a cache earlier stays valid. `reorder_cache` is what beam search calls to follow its beams.
    """

    # What transformers' generate asks of a cache it did not create. It slices a full input_ids down to the tokens
    # after get_seq_length() only when not all(is_linear), which is the slicing a state that counts its tokens wants.
    is_compileable = False
    is_croppable = False  # a recurrent state cannot drop its last tokens
    is_linear = (False,)

    def __init__(self, state: tuple[mLSTMState, ...] | None = None, seqlen_offset: int = 0):
        self.state = state
        self.seqlen_offset = seqlen_offset

    def update(self, state: tuple[mLSTMState, ...], num_tokens: int) -> None:
        """Take the state after `num_tokens` more positions."""
        self.state = state
        self.seqlen_offset += num_tokens

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """The number of positions (pads included) the state has consumed."""
        return self.seqlen_offset

    @property
    def batch_size(self) -> int | None:
        return None if self.state is None else self.state[0].C.shape[0]

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Row b of the new state is row `beam_idx[b]` of the old one (beam search: beams that continue, repeated
        where one beam spawns several). beam_idx [B'] with values in [0, B)."""
        if self.state is None:
            return
        self.state = tuple(mLSTMState(*(t.index_select(0, beam_idx.to(t.device)) for t in block))
                           for block in self.state)

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Each row becomes `repeats` consecutive rows (generate's expansion of a prompt for beams or samples)."""
        if self.state is not None:
            self.state = tuple(mLSTMState(*(t.repeat_interleave(repeats, dim=0) for t in block))
                               for block in self.state)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only the rows `indices`."""
        self.reorder_cache(indices)

    def reset(self) -> None:
        """Forget everything: the next forward starts from the empty state."""
        self.state, self.seqlen_offset = None, 0

    @property
    def rnn_state(self) -> dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The state in transformers' `xLSTMCache.rnn_state` layout, {block: (C, n, m [B, H, 1])} (views)."""
        if self.state is None:
            return {}
        return {i: (s.C, s.n, s.m.unsqueeze(-1)) for i, s in enumerate(self.state)}

    def __repr__(self) -> str:
        dtype = None if self.state is None else self.state[0].C.dtype
        return f"{type(self).__name__}(batch_size={self.batch_size}, seqlen_offset={self.seqlen_offset}, dtype={dtype})"
