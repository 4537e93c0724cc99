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


@pytest.mark.parametrize("batch", [1, 3])
def test_cuda_graph_decoding_equals_eager(batch, make_large):
    model = on_cuda(make_large(embedding_dim=64))
    ids = torch.randint(3, 101, (batch, 20), device="cuda")
    eager = xe.generate(model, ids, max_new_tokens=16)
    assert torch.equal(xe.generate(model, ids, max_new_tokens=16, cuda_graph=True), eager)
    # a new prompt: a fresh capture over a fresh state gives the same as eager again
    other = torch.randint(3, 101, (batch, 9), device="cuda")
    assert torch.equal(xe.generate(model, other, max_new_tokens=16, cuda_graph=True),
                       xe.generate(model, other, max_new_tokens=16))
    sampled = dict(do_sample=True, top_k=20, max_new_tokens=16)
    assert torch.equal(xe.generate(model, ids, seed=3, cuda_graph=True, **sampled),
                       xe.generate(model, ids, seed=3, **sampled))


def test_cuda_graph_capture_leaves_the_state_as_it_was(make_large):
    model = on_cuda(make_large(embedding_dim=64))
    ps = xe.prefill(model, torch.randint(3, 101, (2, 12), device="cuda"))
    run = xe.generation.Decoding(model, None, state=ps, max_new_tokens=1, cuda_graph=True)
    before = [t.clone() for t in xe.generation.state.flatten_state(run.state).values()]
    xe.generation.cuda_graph.StepGraph(model, run.state, 2, torch.device("cuda"))
    after = list(xe.generation.state.flatten_state(run.state).values())
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
