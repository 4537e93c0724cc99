"""The sLSTM memory: one (h, c, n, m) quadruple per sequence, head and channel."""

from typing import NamedTuple

import torch


class sLSTMState(NamedTuple):
    """Stabilized sLSTM memory. The unstabilized cell and normalizer are (c·e^m, n·e^m).

    The order (h, c, n, m) is the official state's (y, c, n, m), and the fast path's buffers keep it.

    h: [B, H, D] previous cell output, the recurrent input
    c: [B, H, D] cell
    n: [B, H, D] normalizer
    m: [B, H, D] log-space stabilizer
    """

    h: torch.Tensor
    c: torch.Tensor
    n: torch.Tensor
    m: torch.Tensor

    @classmethod
    def zeros(cls, batch_size: int, num_heads: int, head_dim: int, *,
              dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> "sLSTMState":
        """The empty memory: all zeros. n = 0 marks it as empty (the first step sets m to the input gate)."""
        return cls(*(torch.zeros(batch_size, num_heads, head_dim, dtype=dtype, device=device) for _ in range(4)))

    def to(self, *args, **kwargs) -> "sLSTMState":
        return sLSTMState(*(t.to(*args, **kwargs) for t in self))

    def detach(self) -> "sLSTMState":
        return sLSTMState(*(t.detach() for t in self))
