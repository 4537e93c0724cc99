"""from_pretrained / save_pretrained of the transformers classes: folders to and from transformers' own xLSTM classes,
sharded and fused weights, tokenizer files, the Auto classes."""

import json

import pytest
import torch
import transformers
from hf_helpers import make_model, prompts, tiny_config, twin
from safetensors import safe_open
from test_hf_generate import bpe_tokenizer

import xlstm_engine as xe
from xlstm_engine.hf import register, xLSTMForCausalLM, xLSTMModel
from xlstm_engine.testing import assert_close


@torch.no_grad()
def logits_of(model, ids):
    return model(ids, use_cache=False).logits


@torch.no_grad()
def test_ours_saved_loads_in_transformers(model, tmp_path):
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "xlstm" and config["architectures"] == ["xLSTMForCausalLM"]
    assert config["hidden_size"] == 128 and config["weight_mode"] == "single"
    assert (tmp_path / "generation_config.json").is_file()
    theirs = transformers.xLSTMForCausalLM.from_pretrained(tmp_path)
    assert type(theirs) is transformers.xLSTMForCausalLM
    ids = prompts(2, 21)
    assert_close("transformers from our folder", logits_of(model, ids), logits_of(theirs, ids), ratio=1e-5)
    again = xLSTMForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(logits_of(model, ids), logits_of(again, ids))


@torch.no_grad()
def test_transformers_saved_loads_in_ours_with_tokenizer(model, tmp_path):
    theirs = twin(model)
    theirs.save_pretrained(tmp_path, max_shard_size="100KB")  # sharded: an index and several files
    assert (tmp_path / "model.safetensors.index.json").is_file()
    bpe_tokenizer().save_pretrained(tmp_path)
    ours = xLSTMForCausalLM.from_pretrained(tmp_path)
    assert type(ours) is xLSTMForCausalLM and not ours.training
    ids = prompts(2, 21)
    assert_close("ours from transformers' folder", logits_of(theirs, ids), logits_of(ours, ids), ratio=1e-5)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer.decode(tokenizer("the cat sat").input_ids) == "the cat sat"
    # and back: our save of it loads in transformers again, as one file this time
    out = tmp_path / "again"
    ours.save_pretrained(out)
    assert (out / "model.safetensors").is_file() and not (out / "model.safetensors.index.json").exists()
    reloaded = transformers.xLSTMForCausalLM.from_pretrained(out)
    assert_close("round trip", logits_of(theirs, ids), logits_of(reloaded, ids), ratio=1e-5)


@torch.no_grad()
def test_fused_layout_and_shards_round_trip(tmp_path):
    model = make_model(seed=3, weight_mode="fused", use_bias=True)
    model.save_pretrained(tmp_path, max_shard_size="200KB")
    names = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    assert "backbone.blocks.0.mlstm_layer.qkv_opreact.weight" in names
    assert "backbone.blocks.0.mlstm_layer.q.weight" not in names
    loaded = xLSTMForCausalLM.from_pretrained(tmp_path)
    ids = prompts(2, 9)
    assert torch.equal(logits_of(model, ids), logits_of(loaded, ids))
    core = xe.xLSTMLarge.from_pretrained(tmp_path)  # the core reads the same folder
    assert_close("core", logits_of(model, ids), core(ids)[0], ratio=1e-6)


@torch.no_grad()
def test_from_pretrained_options(model, tmp_path):
    model.save_pretrained(tmp_path)
    loaded = xLSTMForCausalLM.from_pretrained(tmp_path, dtype="bfloat16", use_cache=False, chunk_size=8)
    assert loaded.dtype == torch.bfloat16 and loaded.config.use_cache is False
    assert loaded.runtime.chunk_size == 8
    out = loaded(prompts(1, 5))
    assert out.cache is None and out.logits.dtype == torch.float32
    runtime = xe.RuntimeOptions(chunk_size=4, state_dtype=torch.float64)
    loaded = xLSTMForCausalLM.from_pretrained(tmp_path, runtime=runtime, device_map="cpu")
    assert loaded.runtime is runtime and loaded(prompts(1, 5)).cache.state[0].C.dtype == torch.float64
    with pytest.raises(TypeError, match="no_such_option"):
        xLSTMForCausalLM.from_pretrained(tmp_path, no_such_option=1)
    with pytest.raises(ValueError, match="another architecture"):
        xLSTMForCausalLM.from_pretrained(tmp_path, num_heads=4)
    with pytest.raises(ValueError, match="one device"):
        xLSTMForCausalLM.from_pretrained(tmp_path, device_map="auto")
    with pytest.raises(OSError, match="not a local folder"):
        xLSTMForCausalLM.from_pretrained(tmp_path / "missing", local_files_only=True)


@torch.no_grad()
def test_generation_config_round_trips(tmp_path):
    model = make_model()
    model.generation_config.max_new_tokens = 5
    model.save_pretrained(tmp_path)
    loaded = xLSTMForCausalLM.from_pretrained(tmp_path)
    assert loaded.generation_config.max_new_tokens == 5
    assert loaded.generate(prompts(1, 3), do_sample=False).shape == (1, 8)


@pytest.mark.parametrize("use_bias", [False, True])
@torch.no_grad()
def test_base_model_folders(tmp_path, use_bias):
    """xLSTMModel reads a causal-LM folder (dropping the head), writes the base layout (no `backbone.`, no head),
    which transformers' own xLSTMModel reads (and writes), and reads it back."""
    model = make_model(seed=1, use_bias=use_bias)
    model.save_pretrained(tmp_path / "lm")
    base = xLSTMModel.from_pretrained(tmp_path / "lm")
    ids = prompts(2, 13)
    ref = model.backbone(ids, use_cache=False).last_hidden_state
    assert torch.equal(base(ids).last_hidden_state, ref) and not hasattr(base, "lm_head")
    base.save_pretrained(tmp_path / "base")
    with safe_open(str(tmp_path / "base" / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert "embeddings.weight" in names and not any(name.startswith(("backbone.", "lm_head")) for name in names)
    theirs = transformers.xLSTMModel.from_pretrained(tmp_path / "base")
    assert_close("transformers' base model", theirs(ids).last_hidden_state, ref, ratio=1e-5)
    theirs.save_pretrained(tmp_path / "their-base")  # without out_norm.bias even with use_bias
    assert_close("from transformers' base folder", theirs(ids).last_hidden_state,
                 xLSTMModel.from_pretrained(tmp_path / "their-base")(ids).last_hidden_state, ratio=1e-5)
    assert torch.equal(xLSTMModel.from_pretrained(tmp_path / "base")(ids).last_hidden_state, ref)
    with pytest.warns(UserWarning, match="newly initialized"):
        lm = xLSTMForCausalLM.from_pretrained(tmp_path / "base")
    assert torch.equal(lm.backbone(ids).last_hidden_state, ref)


@pytest.fixture
def registered():
    """register() for one test, then transformers' own classes again."""
    mappings = [transformers.AutoModel._model_mapping, transformers.AutoModelForCausalLM._model_mapping]
    saved = [dict(mapping._extra_content) for mapping in mappings]
    register()
    yield
    for mapping, extra in zip(mappings, saved, strict=True):
        mapping._extra_content.clear()
        mapping._extra_content.update(extra)


@torch.no_grad()
def test_auto_classes_build_ours_after_register(model, tmp_path, registered):
    model.save_pretrained(tmp_path)
    bpe_tokenizer().save_pretrained(tmp_path)
    lm = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    base = transformers.AutoModel.from_pretrained(tmp_path)
    assert type(lm) is xLSTMForCausalLM and type(base) is xLSTMModel
    ids = prompts(2, 7)
    assert torch.equal(logits_of(lm, ids), logits_of(model, ids))
    assert torch.equal(base(ids).last_hidden_state, model.backbone(ids).last_hidden_state)
    assert type(transformers.AutoModelForCausalLM.from_config(tiny_config())) is xLSTMForCausalLM
    pipe = transformers.pipeline("text-generation", model=str(tmp_path))  # model and tokenizer from the folder
    assert type(pipe.model) is xLSTMForCausalLM
    assert pipe("the cat", max_new_tokens=3, do_sample=False)[0]["generated_text"].startswith("the cat")


def test_auto_classes_are_transformers_own_without_register(tmp_path):
    config = tiny_config()
    assert type(transformers.AutoModelForCausalLM.from_config(config)) is transformers.xLSTMForCausalLM
