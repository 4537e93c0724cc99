"""Generation on a GPU (skipped without CUDA): the Triton kernels (fused step, short-prompt and chunkwise) give the
tokens the CPU reference gives, and a padded batch equals each row alone."""

import pytest
import torch
from test_generation_padding import LENGTHS, padded_batch

import xlstm_engine as xe

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def on_cuda(model):
    """A copy on the GPU whose head dims the Triton kernels take (auto picks them on CUDA)."""
    return model.to("cuda")


@pytest.mark.parametrize("family", ["large", "neurips"])
@pytest.mark.parametrize("prompt_len", [5, 150])  # the short-prompt kernel, then the chunkwise one
def test_cuda_greedy_equals_cpu(family, prompt_len, make_large, make_neurips):
    make = (lambda: make_large(embedding_dim=64)) if family == "large" else make_neurips
    cpu = make()
    cpu.runtime = cpu.runtime.replace(mlstm_backend="naive_recurrent")
    gpu = on_cuda(make())
    ids = torch.randint(3, 101, (2, prompt_len))
    expected = xe.generate(cpu, ids, max_new_tokens=12)
    assert torch.equal(xe.generate(gpu, ids.cuda(), max_new_tokens=12).cpu(), expected)


@pytest.mark.parametrize("side", ["left", "right"])
def test_cuda_padded_batch_equals_each_row_alone(side, make_large):
    model = on_cuda(make_large(embedding_dim=64))
    rows = [torch.randint(3, 101, (n * 13,)) for n in LENGTHS]  # 91 tokens: more than one chunk
    ids, mask = padded_batch(rows, side)
    out = xe.generate(model, ids.cuda(), mask.cuda(), max_new_tokens=8).cpu()
    for b, row in enumerate(rows):
        alone = xe.generate(model, row[None].cuda(), max_new_tokens=8).cpu()
        assert out[b, ids.shape[1]:].tolist() == alone[0, len(row):].tolist(), (side, b)
