"""Bad inputs to the models and configs: each one is a ValueError or TypeError that names the value and what was
expected, never a raw torch error, a ZeroDivisionError later on, or a silent acceptance."""

import pytest
import torch

import xlstm_engine as xe

V = 50


@pytest.fixture(scope="module")
def large():
    return xe.xLSTMLarge(xe.xLSTMLargeConfig(embedding_dim=16, num_heads=2, num_blocks=2, vocab_size=V))


@pytest.fixture(scope="module")
def lm():
    """Block 0 is an mLSTM block, block 1 an sLSTM block."""
    return xe.xLSTMLMModel(xe.xLSTMLMModelConfig.from_dict(dict(
        mlstm_block=dict(mlstm=dict(num_heads=2)), slstm_block=dict(slstm=dict(num_heads=2)), slstm_at=[1],
        num_blocks=2, embedding_dim=16, vocab_size=V)))


def token_entries(large, lm):
    """Every model entry that takes token ids, as f(ids)."""
    _, large_state = large(torch.zeros(3, 2, dtype=torch.long))
    _, lm_state = lm.forward_with_state(torch.zeros(3, 2, dtype=torch.long))
    return {
        "xLSTMLarge": lambda ids: large(ids),
        "xLSTMLarge with state": lambda ids: large(ids, state=large_state),
        "xLSTMLMModel": lambda ids: lm(ids),
        "xLSTMLMModel.forward_with_state": lambda ids: lm.forward_with_state(ids, lm_state),
        "xLSTMLMModel.step": lambda ids: lm.step(ids[:, :1], lm_state),
    }


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int16])
def test_token_ids_must_be_int64_or_int32(large, lm, dtype):
    ids = torch.randint(0, 2, (3, 4)).to(dtype)
    for entry in token_entries(large, lm).values():
        with pytest.raises(TypeError, match=rf"must be an integer tensor of token ids .*got dtype {dtype}"):
            entry(ids)
        entry(ids.to(torch.int32))  # what nn.Embedding takes besides int64 still works


@torch.no_grad()
def test_empty_batch(large, lm):
    ids = torch.zeros(0, 1, dtype=torch.long)
    for entry in token_entries(large, lm).values():
        with pytest.raises(ValueError, match=r"shape \[B, S\] with B >= 1 and S >= 1, got \(0, 1\)"):
            entry(ids)
    stack = lm.xlstm_block_stack
    for entry in (stack, stack.forward_with_state, stack.step):
        with pytest.raises(ValueError, match=r"x must be a float tensor \[B, S, 16\] with B >= 1.*got \(0, 1, 16\)"):
            entry(torch.zeros(0, 1, 16))


@torch.no_grad()
def test_large_state_must_be_mlstm_states(large):
    ids = torch.randint(0, V, (2, 3))
    _, state = large(ids)
    for plain in (tuple(tuple(s) for s in state), [list(s) for s in state]):
        with pytest.raises(TypeError, match=rf"state\[0\] must be an mLSTMState \(C, n, m\), got a "
                                            rf"{type(plain[0]).__name__}"):
            large(ids, state=plain)
    integer = tuple(xe.mLSTMState(*(t.long() for t in s)) for s in state)
    with pytest.raises(TypeError, match=r"state\[0\]\.C must be a floating-point tensor, got dtype torch\.int64"):
        large(ids, state=integer)
    with pytest.raises(ValueError, match=r"state\[0\]\.C is on meta; expected cpu"):
        large(ids, state=tuple(s.to("meta") for s in state))
    large(ids, state=list(state))  # a list of mLSTMStates is still a state


@torch.no_grad()
def test_stack_state_must_be_layer_states(lm):
    ids = torch.randint(0, V, (2, 3))
    _, state = lm.forward_with_state(ids)
    entries = (lambda s: lm.forward_with_state(ids, s), lambda s: lm.step(ids[:, :1], s),
               lambda s: lm.xlstm_block_stack.step(torch.randn(2, 1, 16), s))
    plain_layer = tuple(tuple(s) for s in state)
    plain_cell = (state[0], state[1]._replace(cell=tuple(state[1].cell)))
    integer_cell = (state[0]._replace(cell=xe.mLSTMState(*(t.long() for t in state[0].cell))), state[1])
    integer_conv = (state[0], state[1]._replace(conv=state[1].conv.long()))
    for entry in entries:
        with pytest.raises(TypeError, match=r"state\[0\] must be an mLSTMLayerState \(conv, cell\), got a tuple"):
            entry(plain_layer)
        with pytest.raises(TypeError, match=r"state\[1\]\.cell must be an sLSTMState \(h, c, n, m\), got a tuple"):
            entry(plain_cell)
        with pytest.raises(TypeError, match=r"state\[0\]\.cell\.C must be a floating-point tensor, got dtype "
                                            r"torch\.int64"):
            entry(integer_cell)
        with pytest.raises(TypeError, match=r"state\[1\]\.conv must be a floating-point tensor, got dtype "
                                            r"torch\.int64"):
            entry(integer_conv)


def test_step_inputs_that_are_not_tensors(large, lm):
    with pytest.raises(TypeError, match=r"idx must be an integer tensor of token ids .*got list"):
        lm.step([[1]])
    with pytest.raises(TypeError, match=r"x must be a float tensor \[B, S, 16\], got list"):
        lm.xlstm_block_stack.step([[[0.0] * 16]])
    with pytest.raises(ValueError, match="logits_to_keep must be an int >= 0, got True"):
        large(torch.zeros(1, 2, dtype=torch.long), logits_to_keep=True)


# --- configs -----------------------------------------------------------------------------------------------

LARGE = dict(embedding_dim=16, num_heads=2, num_blocks=2, vocab_size=V)


@pytest.mark.parametrize(("changes", "message"), [
    (dict(use_bias="false"), r"xLSTMLargeConfig\.use_bias: got 'false', expected bool"),
    (dict(add_out_norm="no"), r"xLSTMLargeConfig\.add_out_norm: got 'no', expected bool"),
    (dict(norm_reduction_force_float32=0), r"xLSTMLargeConfig\.norm_reduction_force_float32: got 0, expected bool"),
    (dict(norm_eps="1e-6"), r"xLSTMLargeConfig\.norm_eps: got '1e-6', expected float"),
    (dict(eos_token_id="2"), r"xLSTMLargeConfig\.eos_token_id: got '2', expected int or tuple\[int, \.\.\.\] or None"),
    (dict(ffn_proj_factor=float("inf")), r"ffn_proj_factor must be a finite number > 0, got inf"),
    (dict(gate_soft_cap=float("inf")), r"gate_soft_cap must be > 0 or None, got inf"),
    (dict(embedding_dim=4, ffn_proj_factor=0.2),
     r"ffn_dim = round_up_to_multiple\(embedding_dim \* ffn_proj_factor, ffn_round_up_to_multiple_of\) = "
     r"round_up_to_multiple\(4 \* 0\.2, 64\) = 0; it must be >= 1"),
])
def test_large_config_rejects(changes, message):
    with pytest.raises(ValueError, match=message):
        xe.xLSTMLargeConfig(**{**LARGE, **changes})
    with pytest.raises(ValueError, match=message):
        xe.xLSTMLargeConfig.from_dict({**LARGE, **changes})


def test_large_config_keeps_valid_values():
    config = xe.xLSTMLargeConfig(**LARGE, eos_token_id=[2, 3], qk_dim_factor=1, gate_soft_cap=None, use_bias=True)
    assert config.eos_token_id == (2, 3) and config.qk_dim_factor == 1 and config.ffn_dim == 64
    with pytest.raises(ValueError, match=r"eos_token_id: got \(2, '3'\)"):  # the elements are checked too
        xe.xLSTMLargeConfig(**LARGE, eos_token_id=[2, "3"])


def stack(**changes):
    """A stack config dict (an mLSTM and an sLSTM block) with `changes`."""
    return {**dict(mlstm_block=dict(mlstm=dict(num_heads=2)), slstm_block=dict(slstm=dict(num_heads=2)),
                   slstm_at=[1], num_blocks=2, embedding_dim=16), **changes}


@pytest.mark.parametrize(("build", "message"), [
    (lambda: xe.xLSTMBlockStackConfig(mlstm_block=xe.mLSTMBlockConfig(), bias="false"),
     r"xLSTMBlockStackConfig\.bias: got 'false', expected bool"),
    (lambda: xe.xLSTMBlockStackConfig(mlstm_block=xe.mLSTMBlockConfig(), add_post_blocks_norm="false"),
     r"xLSTMBlockStackConfig\.add_post_blocks_norm: got 'false', expected bool"),
    (lambda: xe.xLSTMLMModelConfig(mlstm_block=xe.mLSTMBlockConfig(), vocab_size=V, tie_weights="false"),
     r"xLSTMLMModelConfig\.tie_weights: got 'false', expected bool"),
    (lambda: xe.mLSTMLayerConfig(bias="false"), r"mLSTMLayerConfig\.bias: got 'false', expected bool"),
    (lambda: xe.sLSTMLayerConfig(group_norm_weight="false"),
     r"sLSTMLayerConfig\.group_norm_weight: got 'false', expected bool"),
    (lambda: xe.FeedForwardConfig(bias="false"), r"FeedForwardConfig\.bias: got 'false', expected bool"),
    (lambda: xe.xLSTMBlockStackConfig(mlstm_block=dict(mlstm={})),
     r"xLSTMBlockStackConfig\.mlstm_block: got \{'mlstm': \{\}\}, expected mLSTMBlockConfig or None"),
    (lambda: xe.xLSTMBlockStackConfig.from_dict(stack(slstm_at=[True])),
     r"slstm_at: got \[True\], expected list\[int\] or \('all',\)"),
    (lambda: xe.xLSTMBlockStackConfig.from_dict(stack(dropout=1.5)), r"dropout must be in \[0, 1\], got 1\.5"),
    (lambda: xe.FeedForwardConfig(dropout=-0.1), r"FeedForwardConfig\.dropout must be in \[0, 1\], got -0\.1"),
])
def test_neurips_config_rejects(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(("changes", "message"), [
    (dict(slstm_block=dict(slstm=dict(num_heads=2), feedforward=dict(round_proj_up_dim_up=False))),
     r"FeedForwardConfig: the up-projection dim, proj_factor=1\.3 \* embedding_dim=16 rounded down to a multiple "
     r"of round_proj_up_to_multiple_of=64, is 0; it must be >= 1"),
    (dict(slstm_block=dict(slstm=dict(num_heads=2), feedforward=dict(proj_factor=0.0))),
     r"FeedForwardConfig: the up-projection dim, proj_factor=0\.0 .* is 0; it must be >= 1"),
    (dict(slstm_block=dict(slstm=dict(num_heads=2), feedforward=dict(round_proj_up_to_multiple_of=0))),
     r"FeedForwardConfig\.round_proj_up_to_multiple_of must be >= 1, got 0"),
    (dict(mlstm_block=dict(mlstm=dict(num_heads=2, round_proj_up_to_multiple_of=0))),
     r"mLSTMLayerConfig\.round_proj_up_to_multiple_of must be >= 1, got 0"),
])
def test_neurips_up_projection_of_zero_width(changes, message):
    with pytest.raises(ValueError, match=message):
        xe.xLSTMBlockStackConfig.from_dict(stack(**changes))


def test_from_yaml_reads_a_file_whatever_its_suffix(tmp_path):
    """A path to an existing file is read as a file (it used to be parsed as YAML text unless it ended in a
    lowercase .yaml/.yml); a path that does not exist is named as missing."""
    text = "num_blocks: 2\nembedding_dim: 32\nmlstm_block:\n  mlstm:\n    num_heads: 2\n"
    for name in ("STACK.YAML", "stack.txt", "stack"):
        (tmp_path / name).write_text(text)
        assert xe.xLSTMBlockStackConfig.from_yaml(str(tmp_path / name)).num_blocks == 2
    with pytest.raises(ValueError, match="no such config file"):
        xe.xLSTMBlockStackConfig.from_yaml(str(tmp_path / "missing.yml"))
    assert xe.xLSTMBlockStackConfig.from_yaml(text).embedding_dim == 32
