"""save_pretrained / from_pretrained: round trips, layouts, dtype, and clear errors for bad folders."""

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import xlstm_engine as xe
from xlstm_engine.checkpoint import to_fused_layout, to_single_layout
from xlstm_engine.testing import assert_close

CONFIG = dict(embedding_dim=64, num_heads=2, num_blocks=2, vocab_size=50)


def tiny(weight_mode="single", **overrides):
    return xe.xLSTMLarge(xe.xLSTMLargeConfig(**{**CONFIG, "weight_mode": weight_mode, **overrides}))


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("weight_mode", ["single", "fused"])
@pytest.mark.parametrize("max_shard_size", ["5GB", 20_000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_round_trip_is_bit_exact(tmp_path, weight_mode, max_shard_size, dtype):
    model = tiny(weight_mode, use_bias=True).to(dtype)
    model.save_pretrained(tmp_path, max_shard_size=max_shard_size)
    files = sorted(p.name for p in tmp_path.iterdir())
    if max_shard_size == "5GB":
        assert files == ["config.json", "model.safetensors"]
    else:
        shards = [name for name in files if name.startswith("model-")]
        assert "model.safetensors.index.json" in files and len(shards) > 1
        assert shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    loaded = xe.xLSTMLarge.from_pretrained(tmp_path)
    assert loaded.config == model.config
    assert_same_weights(model, loaded)


def test_written_files_read_back_with_the_safetensors_library(tmp_path):
    tensors = {"a": torch.randn(3, 5), "b": torch.randn(7).to(torch.bfloat16), "c": torch.arange(6).view(2, 3),
               "empty": torch.zeros(0, 4), "view": torch.randn(4, 6)[:, 1:3]}
    xe.checkpoint.safetensors_io.write_safetensors(tmp_path / "x.safetensors", tensors, {"format": "pt"})
    back = load_file(tmp_path / "x.safetensors")
    assert back.keys() == tensors.keys()
    assert all(back[k].dtype == t.dtype and torch.equal(back[k], t) for k, t in tensors.items())


def test_files_use_the_layout_of_the_config(tmp_path):
    for weight_mode, present, absent in [("single", "mlstm_layer.q.weight", "qkv_opreact"),
                                         ("fused", "mlstm_layer.qkv_opreact.weight", "mlstm_layer.q.")]:
        tiny(weight_mode).save_pretrained(tmp_path / weight_mode)
        keys = load_file(tmp_path / weight_mode / "model.safetensors").keys()
        assert f"backbone.blocks.1.{present}" in keys
        assert not any(absent in key for key in keys)
        assert json.loads((tmp_path / weight_mode / "config.json").read_text())["weight_mode"] == weight_mode


def test_resave_removes_stale_shards(tmp_path):
    model = tiny()
    model.save_pretrained(tmp_path, max_shard_size=20_000)
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert_same_weights(model, xe.xLSTMLarge.from_pretrained(tmp_path))


def test_failed_save_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    model = tiny()
    model.save_pretrained(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()

    def broken(path, tensors, metadata):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("xlstm_engine.checkpoint.safetensors_io.write_safetensors", broken)
    with pytest.raises(OSError, match="disk full"):
        tiny().save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_dtype_and_device_arguments(tmp_path):
    model = tiny()
    model.save_pretrained(tmp_path)
    loaded = xe.xLSTMLarge.from_pretrained(tmp_path, dtype=torch.bfloat16, device="cpu")
    for (name, p), q in zip(model.named_parameters(), loaded.parameters(), strict=True):
        assert q.dtype == torch.bfloat16 and torch.equal(p.to(torch.bfloat16), q), name
    assert not loaded.training


def test_runtime_options_come_from_config_and_arguments(tmp_path):
    tiny().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(chunk_size=32, inference_state_dtype="bfloat16", chunkwise_kernel="chunkwise--triton_xl_chunk")
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = xe.xLSTMLarge.from_pretrained(tmp_path)
    assert (loaded.runtime.chunk_size, loaded.runtime.state_dtype, loaded.runtime.mlstm_backend) == (
        32, torch.bfloat16, "auto")
    assert xe.xLSTMLarge.from_pretrained(tmp_path, chunk_size=16).runtime.chunk_size == 16
    with pytest.raises(ValueError, match="unknown runtime option"):
        xe.xLSTMLarge.from_pretrained(tmp_path, chunk_sise=16)


def test_nxai_embedding_name(tmp_path):
    model = tiny()
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["embedding.weight"] = tensors.pop("backbone.embeddings.weight")
    save_file(tensors, tmp_path / "model.safetensors")
    assert_same_weights(model, xe.xLSTMLarge.from_pretrained(tmp_path))


def test_nxai_folder_layout(tmp_path):
    """config.yaml with xLSTMLargeConfig fields, weights in model_0.safetensors, model_1.safetensors."""
    yaml = pytest.importorskip("yaml")
    model = tiny()
    tensors = to_single_layout(dict(model.state_dict()), model.config)
    tensors["embedding.weight"] = tensors.pop("backbone.embeddings.weight")
    keys = list(tensors)
    save_file({k: tensors[k].clone() for k in keys[:10]}, tmp_path / "model_0.safetensors")
    save_file({k: tensors[k].clone() for k in keys[10:]}, tmp_path / "model_1.safetensors")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**CONFIG, "mode": "inference", "chunk_size": 32}))
    loaded = xe.xLSTMLarge.from_pretrained(tmp_path)
    assert loaded.runtime.chunk_size == 32
    assert_same_weights(model, loaded)


def test_layout_conversion_matches_blocks_exactly():
    """12 blocks: 'backbone.blocks.1.' must not pick up blocks 10 and 11 (the NX-AI converter's bug)."""
    model = tiny(num_blocks=12, use_bias=True)
    fused = dict(model.state_dict())
    single = to_single_layout(fused, model.config)
    assert "backbone.blocks.11.mlstm_layer.ogate_preact.bias" in single
    assert not any("qkv_opreact" in key or "proj_up_gate_z" in key for key in single)
    back = to_fused_layout(single, model.config)
    assert back.keys() == fused.keys()
    assert all(torch.equal(back[key], fused[key]) for key in fused)
    del single["backbone.blocks.10.mlstm_layer.k.weight"]
    with pytest.raises(KeyError, match=r"backbone\.blocks\.10\.mlstm_layer\.k\.weight"):
        to_fused_layout(single, model.config)


def test_original_7b_config_with_legacy_keys(tmp_path):
    """The Dec 2024 NX-AI/xLSTM-7b config.json (spec §1.4) reads as the 7B architecture."""
    original = {
        "architectures": ["xLSTMForCausalLM"], "model_type": "xlstm", "embedding_dim": 4096, "num_blocks": 32,
        "num_heads": 8, "vocab_size": 50304, "qk_dim_factor": 0.5, "v_dim_factor": 1.0, "ffn_proj_factor": 2.667,
        "ffn_round_up_to_multiple_of": 64, "gate_soft_cap": 15.0, "output_logit_soft_cap": 30.0,
        "norm_eps": 1e-6, "norm_reduction_force_float32": True, "use_bias": False, "add_out_norm": True,
        "tie_word_embeddings": False, "torch_dtype": "float32", "return_last_states": True, "use_cache": True,
        "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "add_embedding_dropout": False,
        "add_forward_backend_padding": False, "add_post_blocks_norm": True, "add_post_norm": False,
        "add_qk_norm": False, "cell_norm_eps": 1e-6, "force_bos_token_insert": True, "head_dim": 512,
        "igate_bias_init_range": -10.0, "mlstm_round_up_to_multiple_of": 64,
        "forward_backend_name": "chunkwise--triton_limit_chunk", "step_backend_name": "triton_fused",
    }
    (tmp_path / "config.json").write_text(json.dumps(original))
    config, _ = xe.checkpoint.hf_config.read_config_json(tmp_path / "config.json")
    assert config == xe.xLSTMLargeConfig(**xe.PRESETS["7b"])
    assert (config.qk_head_dim, config.v_head_dim, config.ffn_dim) == (256, 512, 10944)
    with torch.device("meta"):
        model = xe.xLSTMLarge(config)
    assert sum(p.numel() for p in model.parameters()) == 6_865_424_896


# --- bad folders -------------------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    tiny().save_pretrained(tmp_path)
    return tmp_path


def edit_weights(folder, edit):
    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors")


def edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_missing_key(saved):
    edit_weights(saved, lambda t: t.pop("backbone.blocks.1.mlstm_layer.k.weight"))
    with pytest.raises(xe.CheckpointError, match=r"missing key\(s\) backbone\.blocks\.1\.mlstm_layer\.k\.weight"):
        xe.xLSTMLarge.from_pretrained(saved)


def test_unexpected_key(saved):
    edit_weights(saved, lambda t: t.update({"backbone.blocks.2.norm_ffn.weight": torch.ones(64)}))
    with pytest.raises(xe.CheckpointError, match=r"model\.safetensors: unexpected key 'backbone\.blocks\.2"):
        xe.xLSTMLarge.from_pretrained(saved)


def test_wrong_shape(saved):
    edit_weights(saved, lambda t: t.update({"lm_head.weight": torch.zeros(49, 64)}))
    with pytest.raises(xe.CheckpointError, match=r"'lm_head\.weight' has shape \(49, 64\), expected \(50, 64\)"):
        xe.xLSTMLarge.from_pretrained(saved)


def test_both_layouts_at_once(saved):
    edit_weights(saved, lambda t: t.update({"backbone.blocks.0.ffn.proj_up_gate_z.weight": torch.zeros(384, 64)}))
    with pytest.raises(xe.CheckpointError, match="stored twice"):
        xe.xLSTMLarge.from_pretrained(saved)


def test_other_model_type(saved):
    edit_config(saved, model_type="mamba")
    with pytest.raises(xe.CheckpointError, match=r"config\.json: model_type is 'mamba', expected 'xlstm'"):
        xe.xLSTMLarge.from_pretrained(saved)


def test_conflicting_sizes(saved):
    edit_config(saved, hidden_size=4096)
    with pytest.raises(xe.CheckpointError, match="hidden_size=4096 and embedding_dim=64 disagree"):
        xe.xLSTMLarge.from_pretrained(saved)


def test_invalid_architecture_in_config(saved):
    edit_config(saved, num_heads=3)
    with pytest.raises(xe.CheckpointError, match=r"config\.json: qk_dim .* multiple of num_heads = 3"):
        xe.xLSTMLarge.from_pretrained(saved)


def test_unknown_config_key_warns(saved):
    edit_config(saved, use_rope=True)
    with pytest.warns(UserWarning, match=r"ignoring unknown config key\(s\) \['use_rope'\]"):
        xe.xLSTMLarge.from_pretrained(saved)


def test_truncated_safetensors(saved):
    data = (saved / "model.safetensors").read_bytes()
    (saved / "model.safetensors").write_bytes(data[: len(data) - 1000])
    with pytest.raises(xe.CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        xe.xLSTMLarge.from_pretrained(saved)


def test_corrupted_safetensors(saved):
    (saved / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + bytes(64))
    with pytest.raises(xe.CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        xe.xLSTMLarge.from_pretrained(saved)


def test_no_weights(saved):
    (saved / "model.safetensors").unlink()
    with pytest.raises(xe.CheckpointError, match="no weights found"):
        xe.xLSTMLarge.from_pretrained(saved)


def test_missing_shard(tmp_path):
    tiny().save_pretrained(tmp_path, max_shard_size=20_000)
    shard = sorted(tmp_path.glob("model-00002-of-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(xe.CheckpointError, match=f"names the shard {shard.name}"):
        xe.xLSTMLarge.from_pretrained(tmp_path)


def test_no_config_and_no_folder(saved, tmp_path):
    with pytest.raises(xe.CheckpointError, match="no such directory"):
        xe.xLSTMLarge.from_pretrained(tmp_path / "nope")
    (saved / "config.json").unlink()
    with pytest.raises(xe.CheckpointError, match=r"no config\.json"):
        xe.xLSTMLarge.from_pretrained(saved)


def test_readable_by_transformers(tmp_path):
    """What we write, transformers reads, with the same logits."""
    transformers = pytest.importorskip("transformers")
    model = xe.xLSTMLarge(xe.xLSTMLargeConfig(embedding_dim=128, num_heads=2, num_blocks=2, vocab_size=50))
    model.save_pretrained(tmp_path)
    hf = transformers.xLSTMForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 50, (2, 20))
    with torch.no_grad():
        assert_close("logits", hf(ids, use_cache=False).logits, model(ids)[0], ratio=1e-5)
    shutil.rmtree(tmp_path)


# --- tied heads, ambiguous folders, config value types (issue 11) ------------------------------------------


def tied(**overrides):
    model = tiny(**overrides)
    model.lm_head.weight = model.backbone.embeddings.weight
    return model


@pytest.mark.parametrize("max_shard_size", ["5GB", 20_000])
def test_tied_head_round_trip(tmp_path, max_shard_size):
    model = tied()
    model.save_pretrained(tmp_path, max_shard_size=max_shard_size)
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] is True
    loaded = xe.xLSTMLarge.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert loaded.lm_head.weight is loaded.backbone.embeddings.weight
    assert len(list(loaded.parameters())) == len(list(model.parameters()))
    assert_same_weights(model.to(torch.bfloat16), loaded)
    ids = torch.randint(0, 50, (1, 9))
    with torch.no_grad():
        assert torch.equal(model(ids)[0], loaded(ids)[0])


def test_tied_head_readable_by_transformers(tmp_path):
    """transformers does not tie xLSTM (no _tied_weights_keys): it needs lm_head.weight, which we store too."""
    transformers = pytest.importorskip("transformers")
    model = tied()
    model.save_pretrained(tmp_path)
    hf = transformers.xLSTMForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(hf.lm_head.weight, model.lm_head.weight)
    assert torch.equal(hf.backbone.embeddings.weight, model.backbone.embeddings.weight)


def test_tie_flag_without_a_stored_head_ties(saved):
    edit_weights(saved, lambda t: t.pop("lm_head.weight"))
    edit_config(saved, tie_word_embeddings=True)
    loaded = xe.xLSTMLarge.from_pretrained(saved)
    assert loaded.lm_head.weight is loaded.backbone.embeddings.weight


def test_tie_flag_with_two_different_matrices_keeps_both(saved):
    """A folder transformers wrote with tie_word_embeddings=true holds two different matrices, and uses both."""
    edit_config(saved, tie_word_embeddings=True)
    stored = load_file(saved / "model.safetensors")
    with pytest.warns(UserWarning, match=r"tie_word_embeddings=true, but lm_head\.weight and .* differ"):
        loaded = xe.xLSTMLarge.from_pretrained(saved)
    assert loaded.lm_head.weight is not loaded.backbone.embeddings.weight
    assert torch.equal(loaded.lm_head.weight, stored["lm_head.weight"])


def test_single_file_wins_over_an_index(tmp_path):
    """model.safetensors beside model.safetensors.index.json (a stale one): load model.safetensors, as
    transformers 5.x does, and say so."""
    sharded, single = tiny(), tiny()
    sharded.save_pretrained(tmp_path, max_shard_size=20_000)
    for shard in tmp_path.glob("model-*.safetensors"):  # as a writer without save ids (transformers) leaves them
        save_file(load_file(shard), shard)
    save_file(to_single_layout(dict(single.state_dict()), single.config), tmp_path / "model.safetensors")
    with pytest.warns(UserWarning, match=r"both model\.safetensors and model\.safetensors\.index\.json; loading "
                                         r"model\.safetensors"):
        loaded = xe.xLSTMLarge.from_pretrained(tmp_path)
    assert_same_weights(single, loaded)
    transformers = pytest.importorskip("transformers")
    hf = transformers.xLSTMForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(hf.lm_head.weight, single.lm_head.weight)


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("norm_eps", "abc", "a finite number"),
    ("norm_eps", [1e-6], "a finite number"),
    ("norm_eps", float("nan"), "a finite number"),
    ("eps", True, "a finite number"),
    ("gate_soft_cap", "15", "a finite number or null"),
    ("use_bias", "false", "true or false"),
    ("add_out_norm", "false", "true or false"),
    ("tie_word_embeddings", "false", "true or false"),
    ("norm_reduction_force_float32", 0, "true or false"),
    ("num_heads", 2.0, "an int"),
    ("hidden_size", "64", "an int or null"),
    ("chunk_size", "64", "an int"),
    ("chunk_size", 64.5, "an int"),
    ("max_inference_chunksize", None, "an int"),
    ("inference_state_dtype", 32, "a string"),
    ("eos_token_id", "2", "an int, a list of ints or null"),
    ("add_qk_norm", "false", "true or false"),
])
def test_config_value_types(saved, key, value, expected):
    edit_config(saved, **{key: value})
    with pytest.raises(xe.CheckpointError, match=rf"config\.json: {key} is .*, expected {expected}$"):
        xe.xLSTMLarge.from_pretrained(saved)


def test_nxai_config_value_types(tmp_path):
    yaml = pytest.importorskip("yaml")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**CONFIG, "norm_eps": "1e-6"}))
    with pytest.raises(xe.CheckpointError, match=r"config\.yaml: norm_eps is '1e-6' \(str\), expected a finite"):
        xe.xLSTMLarge.from_pretrained(tmp_path)


def test_save_id_key_is_known(saved):
    """The key save_pretrained writes into config.json is read without an unknown-key warning."""
    edit_config(saved, xlstm_engine_save="0123456789abcdef")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xe.checkpoint.hf_config.read_config_json(saved / "config.json")
