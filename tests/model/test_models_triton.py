"""The models on the Triton mLSTM kernels, with no change to their code: the same logits, parameter gradients and
decoding as on the PyTorch chunkwise form (in Triton's interpreter without a GPU)."""

import pytest
import torch
import torch.nn.functional as F

import xlstm_engine as xe
from xlstm_engine.testing import adaptive_ratio, assert_close

pytest.importorskip("triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def large():
    """xLSTM Large with head dims 16 (qk) and 32 (v)."""
    return xe.xLSTMLarge(xe.xLSTMLargeConfig(embedding_dim=64, num_heads=2, num_blocks=2, vocab_size=61))


def neurips():
    """NeurIPS xLSTM, mLSTM blocks with head dim 32."""
    layer = xe.mLSTMLayerConfig(num_heads=2, qkv_proj_blocksize=4, conv1d_kernel_size=4)
    return xe.xLSTMLMModel(xe.xLSTMLMModelConfig(vocab_size=61, num_blocks=2, embedding_dim=32, context_length=64,
                                                 mlstm_block=xe.mLSTMBlockConfig(mlstm=layer)))


@pytest.mark.parametrize("build", [large, neurips], ids=["large-triton", "neurips-triton"])
def test_models_on_the_triton_kernels(build):
    """Triton in float32 against the chunkwise form in float64: within the float32 bound, or within twice the error
    of the float32 chunkwise form (two layers of float32 rounding reach the bound for small gradients), but never
    more than ADAPTIVE_CEILINGS[float32]. A bias gradient is a sum over all tokens, which may cancel (the input
    gate's nearly does: a shift of all log i changes h only through the normalizer's floor), so its error (and
    the chunkwise form's, for the adaptive bound) is relative to the sum of the terms' magnitudes instead of its
    own, as for any float sum. No other slack: the absolute floor is assert_close's default."""
    torch.manual_seed(0)
    model = build()
    with torch.no_grad():  # away from the init, so that every gate and memory matters
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    model = model.to(DEVICE)
    ids = torch.randint(0, 61, (2, 40), device=DEVICE)
    terms = {}
    ref = run(model.double(), "chunkwise", ids, terms)
    own = run(model.float(), "chunkwise", ids)
    out = run(model, "triton", ids)
    for name in ref:
        magnitude = None if name not in terms else terms[name].cpu()
        ratio = adaptive_ratio(ref[name].cpu(), own[name].cpu(), magnitude=magnitude)
        assert_close(name, ref[name].cpu(), out[name].cpu(), ratio, magnitude=magnitude)


def run(model, backend: str, ids, terms: dict | None = None) -> dict[str, torch.Tensor]:
    """Logits, the gradients of all parameters, and the logits of decoding token by token after a prompt. terms:
    filled with sum |d output| over the tokens of each Linear's bias (the magnitude of its gradient's terms)."""
    model.runtime = model.runtime.replace(mlstm_backend=backend, state_dtype=next(model.parameters()).dtype)
    model.zero_grad()
    hooks = [] if terms is None else [
        module.register_full_backward_hook(
            lambda module, grad_in, grad_out, name=name: terms.update({f"{name}.bias": grad_out[0].abs().flatten(
                0, -2).sum(0)}))
        for name, module in model.named_modules() if isinstance(module, torch.nn.Linear) and module.bias is not None]
    logits, _ = model.forward_with_state(ids)
    F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
    for hook in hooks:
        hook.remove()
    with torch.no_grad():  # the Triton step kernel
        _, state = model.forward_with_state(ids[:, :30])
        steps = []
        for t in range(30, 36):
            step_logits, state = model.forward_with_state(ids[:, t:t + 1], state)
            steps.append(step_logits)
    return dict(logits=logits.detach(), steps=torch.cat(steps, 1),
                **{name: p.grad.clone() for name, p in model.named_parameters()})
