"""xLSTMLarge on its own: state passing, segmenting, last-position logits, backends, training, bad input."""

import copy

import pytest
import torch

import xlstm_engine as xe
from xlstm_engine.testing import TOLERANCES, assert_close, error_ratio

CONFIG = dict(embedding_dim=48, num_heads=3, num_blocks=2, vocab_size=61, use_bias=True)


def model64(**runtime):
    """A float64 model with a float64 state, so that only the algorithm differs between compared runs."""
    model = xe.xLSTMLarge(xe.xLSTMLargeConfig(**CONFIG), xe.RuntimeOptions(state_dtype=torch.float64, **runtime))
    with torch.no_grad():  # move the gates away from their init so the memory matters
        for block in model.backbone.blocks:
            block.mlstm_layer.ifgate_preact.weight.normal_(std=0.3)
            block.mlstm_layer.qkv_opreact.weight.normal_(std=0.2)
    return model.double()


@pytest.mark.parametrize("splits", [[1], [5], [64], [7, 8, 60], [1, 1, 1, 1]])
@torch.no_grad()
def test_state_carries_across_calls(splits):
    """Feeding the state of one call into the next gives the logits of one call over the concatenation."""
    model = model64(chunk_size=16)
    ids = torch.randint(0, 61, (2, 100))
    ref, ref_state = model(ids)
    logits, state, start = [], None, 0
    for end in [*torch.tensor(splits).cumsum(0).tolist(), 100]:
        piece, state = model(ids[:, start:end], state=state)
        logits.append(piece)
        start = end
    assert_close("logits", ref, torch.cat(logits, 1), ratio=1e-10)
    for a, b in zip(ref_state, state, strict=True):
        for name, x, y in zip("Cnm", a, b, strict=True):
            assert_close(name, x, y, ratio=1e-10)


@torch.no_grad()
def test_segmented_inference_and_last_logits():
    """max_inference_chunksize splits long inputs without changing the result; logits_to_keep slices it."""
    model = model64()
    ids = torch.randint(0, 61, (2, 150))
    ref, ref_state = model(ids)
    model.runtime = model.runtime.replace(max_inference_chunksize=40)
    for keep in (0, 1, 7, 120, 500):
        logits, state = model(ids, logits_to_keep=keep)
        assert_close(f"logits (keep={keep})", ref[:, -keep:] if keep else ref, logits, ratio=1e-10)
        assert_close("C", ref_state[-1].C, state[-1].C, ratio=1e-10)


@pytest.mark.parametrize("backend", ["naive_recurrent", "naive_parallel"])
@torch.no_grad()
def test_backends_agree(backend):
    ids = torch.randint(0, 61, (2, 70))
    model = model64()
    ref, _ = model(ids)
    model.runtime = model.runtime.replace(mlstm_backend=backend)
    assert_close("logits", ref, model(ids)[0], ratio=1e-10)


# The bfloat16 model against float64 on the same (bf16) weights, end to end: every matmul and norm of every block
# rounds its output to bfloat16, so the errors of the blocks add up: one bfloat16 bound per block and one for the
# head. Measured (7 seeds): logits 1.0-1.4e-2, states 1.1-1.6e-2; float32 compute of the same weights: 1e-6.
BF16_MODEL_RATIO = TOLERANCES[torch.bfloat16] * (CONFIG["num_blocks"] + 1)


def test_bfloat16_model_keeps_a_float32_state():
    """A bfloat16 model keeps its state (every block's C, n, m) in float32 and returns float32 logits; its logits
    and states, also when continuing from its state, equal those of the same (bf16-rounded) weights in float64
    within BF16_MODEL_RATIO."""
    model = xe.xLSTMLarge(xe.xLSTMLargeConfig(**CONFIG)).to(torch.bfloat16)  # the default runtime
    ref_model = copy.deepcopy(model).double()  # the bf16 weights exactly, in float64
    ref_model.runtime = ref_model.runtime.replace(state_dtype=torch.float64)
    ids = torch.randint(0, 61, (2, 40))
    with torch.no_grad():
        logits, state = model(ids[:, :33])
        ref, ref_state = ref_model(ids[:, :33])
        next_logits, next_state = model(ids[:, 33:], state=state)
        ref_next, ref_next_state = ref_model(ids[:, 33:], state=ref_state)
        # the continuation depends on the state (far beyond the bound), so a wrong state fails below
        assert error_ratio(ref_next, ref_model(ids[:, 33:])[0]) > 0.5
    for tag, out, expected, st, expected_st in (("", logits, ref, state, ref_state),
                                                (" continued", next_logits, ref_next, next_state, ref_next_state)):
        assert out.dtype == torch.float32
        assert_close(f"logits{tag}", expected, out, ratio=BF16_MODEL_RATIO)
        assert len(st) == len(expected_st) == CONFIG["num_blocks"]
        for block, (a, b) in enumerate(zip(expected_st, st, strict=True)):
            for name, x, y in zip("Cnm", a, b, strict=True):
                assert y.dtype == torch.float32, f"state {name}[{block}] is {y.dtype}"
                # float32 values, not bf16 ones in a float32 tensor (their error would hide in the bound below)
                assert not torch.equal(y, y.to(torch.bfloat16).float()), f"state {name}[{block}] has bf16 values"
                assert_close(f"{name}[{block}]{tag}", x, y, ratio=BF16_MODEL_RATIO)


def test_training_with_a_carried_state():
    """Gradients reach every parameter, also when a detached state from a previous step is passed in."""
    model = xe.xLSTMLarge(xe.xLSTMLargeConfig(**CONFIG))
    ids = torch.randint(0, 61, (2, 40))
    state = None
    for _ in range(2):
        model.zero_grad()
        logits, state = model(ids, state=state)
        torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
        state = tuple(s.detach() for s in state)
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.backbone.blocks[0].mlstm_layer.qkv_opreact.weight.grad.abs().sum() > 0


def test_allocated_state_equals_no_state():
    model = xe.xLSTMLarge(xe.xLSTMLargeConfig(**CONFIG))
    ids = torch.randint(0, 61, (3, 9))
    with torch.no_grad():
        assert torch.equal(model(ids)[0], model(ids, state=model.allocate_state(3))[0])


def test_official_size_fields():
    config = xe.xLSTMLargeConfig(**xe.PRESETS["7b"])
    assert (config.qk_dim, config.v_dim, config.ffn_dim) == (2048, 4096, 10944)
    # the official rounding floors (x + 63) // 64 for float x: 768 * 2.667 = 2048.26 -> 2048
    assert xe.xLSTMLargeConfig(768, 4, 12, 50304, ffn_proj_factor=2.667).ffn_dim == 2048
    assert xe.xLSTMLargeConfig(768, 4, 12, 50304, ffn_proj_factor=2.0).ffn_dim == 1536
    assert xe.xLSTMLargeConfig.from_dict({**xe.PRESETS["7b"], "mode": "inference", "chunkwise_kernel": "x"}) == config


# --- bad input ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return xe.xLSTMLarge(xe.xLSTMLargeConfig(**CONFIG))


@pytest.mark.parametrize(("ids", "error", "message"), [
    (torch.tensor([[1, 2, 61]]), ValueError, r"token ids must be in \[0, 61\).*got values in \[1, 61\]"),
    (torch.tensor([[-1, 2]]), ValueError, r"token ids must be in \[0, 61\)"),
    (torch.tensor([1, 2, 3]), ValueError, r"input_ids must have shape \[B, S\]"),
    (torch.zeros(2, 0, dtype=torch.long), ValueError, "S >= 1"),
    (torch.tensor([[1.0, 2.0]]), TypeError, "integer tensor"),
])
def test_bad_token_ids(model, ids, error, message):
    with pytest.raises(error, match=message):
        model(ids)


def test_bad_state(model):
    ids = torch.randint(0, 61, (2, 5))
    _, state = model(ids)
    with pytest.raises(ValueError, match=r"state\[0\]\.C must have shape \(3, 3, 8, 16\)"):
        model(torch.randint(0, 61, (3, 5)), state=state)
    with pytest.raises(ValueError, match=r"one mLSTMState per block \(2\), got 1"):
        model(ids, state=state[:1])
    bad = (state[0], xe.mLSTMState(state[1].C, state[1].n[..., :-1], state[1].m))
    with pytest.raises(ValueError, match=r"state\[1\]\.n must have shape \(2, 3, 8\)"):
        model(ids, state=bad)
    with pytest.raises(ValueError, match="logits_to_keep"):
        model(ids, logits_to_keep=-1)


@pytest.mark.parametrize(("changes", "message"), [
    (dict(num_heads=5), r"qk_dim = .* = 24 must be a positive multiple of num_heads = 5"),
    (dict(weight_mode="packed"), "weight_mode must be one of"),
    (dict(embedding_dim=0), "embedding_dim must be a positive int"),
    (dict(gate_soft_cap=-1.0), "gate_soft_cap must be > 0 or None"),
])
def test_bad_config(changes, message):
    with pytest.raises(ValueError, match=message):
        xe.xLSTMLargeConfig(**{**CONFIG, **changes})


def test_bad_config_dict_and_runtime():
    with pytest.raises(ValueError, match=r"unknown xLSTMLargeConfig key\(s\) \['num_head'\]"):
        xe.xLSTMLargeConfig.from_dict({**CONFIG, "num_head": 3})
    with pytest.raises(ValueError, match="unknown mlstm_backend 'cuda'"):
        xe.RuntimeOptions(mlstm_backend="cuda")
    with pytest.raises(ValueError, match="unknown state_dtype 'fp8'"):
        xe.RuntimeOptions(state_dtype="fp8")
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        xe.RuntimeOptions(chunk_size=0)
