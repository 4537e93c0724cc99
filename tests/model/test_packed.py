"""Packed documents: with resets at document starts, each document's logits (and the last one's state) equal
those of the document run alone. Float64, so that only the algorithm can differ."""

import itertools

import pytest
import torch

import xlstm_engine as xe
from xlstm_engine.model.neurips.components import CausalConv1d
from xlstm_engine.testing import assert_close

STARTS = [[0, 9, 10, 37, 63], [0, 25]]  # per row; 10 follows 9: a one-token document
S = 70


def resets() -> torch.Tensor:
    r = torch.zeros(len(STARTS), S, dtype=torch.bool)
    for row, starts in enumerate(STARTS):
        r[row, starts] = True
    return r


def documents(row: int):
    return itertools.pairwise([*STARTS[row], S])


def large_model():
    model = xe.xLSTMLarge(xe.xLSTMLargeConfig(embedding_dim=48, num_heads=3, num_blocks=2, vocab_size=61),
                          xe.RuntimeOptions(chunk_size=16, state_dtype=torch.float64)).double()
    with torch.no_grad():
        for block in model.backbone.blocks:
            block.mlstm_layer.ifgate_preact.weight.normal_(std=0.3)
    return model


def neurips_model(function="slstm"):
    config = xe.xLSTMLMModelConfig(
        vocab_size=61, num_blocks=3, embedding_dim=32, slstm_at=[1],
        mlstm_block=xe.mLSTMBlockConfig(mlstm=xe.mLSTMLayerConfig(num_heads=2)),
        slstm_block=xe.sLSTMBlockConfig(slstm=xe.sLSTMLayerConfig(num_heads=2, function=function)))
    model = xe.xLSTMLMModel(config, xe.RuntimeOptions(chunk_size=16, state_dtype=torch.float64)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def flatten(state) -> list[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    return [] if state is None else [t for part in state for t in flatten(part)]


def run(model, ids, resets=None, state=None):
    return model.forward_with_state(ids, state, resets=resets)


@pytest.mark.parametrize("make", [large_model, neurips_model, lambda: neurips_model("lstm")],
                         ids=["large", "neurips", "neurips-lstm"])
def test_packed_equals_documents_alone(make):
    model = make()
    ids = torch.randint(0, 61, (len(STARTS), S))
    with torch.no_grad():
        _, warm = run(model, torch.randint(0, 61, (len(STARTS), 5)))  # a state the first reset must drop
        logits, state = run(model, ids, resets(), warm)
        for row in range(len(STARTS)):
            for start, end in documents(row):
                alone, alone_state = run(model, ids[row:row + 1, start:end])
                assert_close(f"logits[{row}, {start}:{end}]", alone, logits[row:row + 1, start:end], ratio=1e-10)
            for a, b in zip(alone_state, state, strict=True):  # the last document's state
                for x, y in zip(flatten(a), flatten(b), strict=True):
                    assert_close("state", x, y[row:row + 1], ratio=1e-10)


def test_packed_loss_and_gradients_equal_documents_alone():
    """The loss of a packed batch is the sum of the documents' losses, and so are the gradients."""
    model = neurips_model()
    ids = torch.randint(0, 61, (len(STARTS), S))
    targets = torch.randint(0, 61, (len(STARTS), S))

    def loss(logits, tgt):
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt.flatten(), reduction="sum")

    packed = loss(model(ids, resets=resets()), targets)
    packed.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    alone = sum(loss(model(ids[row:row + 1, a:b]), targets[row:row + 1, a:b])
                for row in range(len(STARTS)) for a, b in documents(row))
    alone.backward()
    assert_close("loss", alone.detach(), packed.detach(), ratio=1e-10)
    for name, p in model.named_parameters():
        assert_close(name, p.grad, grads[name], ratio=1e-10, atol=1e-14)


def test_conv_resets():
    conv = CausalConv1d(5, 4).double()
    x = torch.randn(2, S, 5, dtype=torch.float64)
    history = torch.randn(2, 3, 5, dtype=torch.float64)
    y, state = conv(x, history, resets())
    for row in range(len(STARTS)):
        for start, end in documents(row):
            y_alone, state_alone = conv(x[row:row + 1, start:end])  # every row starts with a reset
            assert_close("y", y_alone, y[row:row + 1, start:end], ratio=1e-12)
        assert_close("state", state_alone, state[row:row + 1], ratio=1e-12)
    no_reset = torch.zeros(2, S, dtype=torch.bool)
    assert_close("no resets", conv(x, history)[0], conv(x, history, no_reset)[0], ratio=1e-12)
    assert_close("one token", conv(x[:, :1], history)[0], conv(x[:, :1], history, no_reset[:, :1])[0], ratio=1e-12)
