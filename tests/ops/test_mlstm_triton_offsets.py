"""64-bit offsets in the Triton mLSTM: t * stride passes 2^31 on long sequences of wide projections.

At the 7B geometry q, k, v and the gates are views into the fused projection, whose rows are 12,288 wide; from
token 174,763 on, t * 12,288 no longer fits in 32 bits. Such a call must give exactly what the same call on
contiguous copies (small strides) gives. GPU only: the buffer is 4.4 GB, and the interpreter computes offsets in
64 bits anyway.
"""

import pytest
import torch

from xlstm_engine.ops.mlstm import mlstm

pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (a 4.4 GB strided buffer)")

S, WIDTH = 180_000, 12_288  # the 7B's fused projection: q 2048 | k 2048 | v 4096 | o 4096 (the gates stand in it)
H, DK, DV = 8, 256, 512


def views(buffer: torch.Tensor):
    """q, k [1, S, H, DK], v [1, S, H, DV], i, f [1, S, H]: strided views into buffer [1, S, WIDTH]."""
    q = buffer[..., :H * DK].unflatten(-1, (H, DK))
    k = buffer[..., H * DK:2 * H * DK].unflatten(-1, (H, DK))
    v = buffer[..., 2 * H * DK:2 * H * DK + H * DV].unflatten(-1, (H, DV))
    gates = 2 * H * DK + H * DV
    return q, k, v, buffer[..., gates:gates + H], buffer[..., gates + H:gates + 2 * H]


def test_triton_offsets_past_2_31():
    assert (S - 1) * WIDTH > 2**31
    buffer = torch.empty(1, S, WIDTH, device="cuda", dtype=torch.bfloat16)
    buffer[..., :2 * H * DK + H * DV + 2 * H].normal_()
    buffer[..., 2 * H * DK + H * DV + H:2 * H * DK + H * DV + 2 * H] += 3.0  # forget gates near 1: long memory
    buffer.requires_grad_()
    strided = views(buffer)
    contiguous = [x.detach().contiguous().requires_grad_() for x in strided]
    assert strided[0].stride(1) == WIDTH and contiguous[0].stride(1) == H * DK

    h_strided, state_strided = mlstm(*strided, backend="triton", output_final_state=True)
    h_contiguous, state_contiguous = mlstm(*contiguous, backend="triton", output_final_state=True)
    late = (h_strided[0, 174_763:] != h_contiguous[0, 174_763:]).any(-1).any(-1).nonzero()
    assert torch.equal(h_strided, h_contiguous), f"{len(late)} of the tokens past 174,763 differ"
    for a, b in zip(state_strided, state_contiguous, strict=True):
        assert torch.equal(a, b)

    dh = torch.randn_like(h_strided)
    h_strided.backward(dh)
    h_contiguous.backward(dh)
    for name, view, x in zip("qkvif", views(buffer.grad), contiguous, strict=True):
        assert torch.equal(view, x.grad), f"d{name} differs"
