"""The mLSTM memory: one (C, n, m) triple per sequence and head."""

from typing import NamedTuple

import torch


class mLSTMState(NamedTuple):
    """Stabilized mLSTM memory. The unstabilized memory is (C·e^m, n·e^m).

    C: [B, H, DK, DV] matrix memory
    n: [B, H, DK]     normalizer
    m: [B, H]         log-space stabilizer
    """

    C: torch.Tensor
    n: torch.Tensor
    m: torch.Tensor

    @classmethod
    def zeros(cls, batch_size: int, num_heads: int, qk_head_dim: int, v_head_dim: int, *,
              dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> "mLSTMState":
        """The empty memory. Note m0 = 0 (not -inf), as in the reference implementations."""
        return cls(
            torch.zeros(batch_size, num_heads, qk_head_dim, v_head_dim, dtype=dtype, device=device),
            torch.zeros(batch_size, num_heads, qk_head_dim, dtype=dtype, device=device),
            torch.zeros(batch_size, num_heads, dtype=dtype, device=device),
        )

    def to(self, *args, **kwargs) -> "mLSTMState":
        return mLSTMState(*(t.to(*args, **kwargs) for t in self))

    def detach(self) -> "mLSTMState":
        return mLSTMState(*(t.detach() for t in self))
