"""The training loop: configs, exact resume, NaN handling, text data, errors. Tiny models, a few steps."""

import json
from pathlib import Path

import pytest
import torch

from xlstm_engine.train import TrainingError, load_config, train
from xlstm_engine.train.config import resolve_references
from xlstm_engine.train.data import TextData
from xlstm_engine.train.models import build_model

OFFICIAL = Path(__file__).parents[2] / "experiments"

TINY = """
training:
  batch_size: 8
  lr: 0.01
  lr_warmup_steps: 2
  lr_decay_until_steps: ${.num_steps}
  num_steps: 6
  val_every_step: 3
  log_every: 1
  progress_bar: false
  grad_accum_steps: 2
  grad_clip: 1.0
model:
  num_blocks: 2
  embedding_dim: 16
  mlstm_block:
    mlstm:
      num_heads: 2
  slstm_block:
    slstm:
      num_heads: 2
  slstm_at: [1]
  vocab_size: ${dataset.kwargs.vocab_size}
dataset:
  name: form_language
  kwargs:
    synth_lang_type: parity
    vocab_size: 3
    min_sequence_length: 3
    max_sequence_length: 12
    count: {validation: 16}
    subpar: {validation: {min_sequence_length: 12, max_sequence_length: 20}}
"""


def tiny(tmp_path, *overrides):
    return load_config(TINY, [f"training.out_dir={tmp_path}", *overrides])


def losses(out_dir) -> list[tuple[int, str, float]]:
    return [(r["step"], r["split"], r["loss"]) for r in map(json.loads, (Path(out_dir) / "metrics.jsonl").open())]


def test_references_and_overrides():
    data = {"a": {"n": 3, "m": "${.n}", "s": "x${.n}y"}, "b": {"c": "${a.n}", "d": "${..a.m}"}}
    assert resolve_references(data) == {"a": {"n": 3, "m": 3, "s": "x3y"}, "b": {"c": 3, "d": 3}}
    with pytest.raises(ValueError, match=r"a\.missing does not exist"):
        resolve_references({"a": {"x": "${.missing}"}})
    with pytest.raises(ValueError, match="reference cycle"):
        resolve_references({"a": "${b}", "b": "${a}"})
    config = load_config(TINY, ["training.num_steps=9", "model.embedding_dim=32"])
    assert config.training.lr_decay_until_steps == 9 and config.model["embedding_dim"] == 32
    # 1e-3 is a float (YAML 1.2), in the file and in an override; PyYAML alone reads the string '1e-3'
    config = load_config(TINY.replace("lr: 0.01", "lr: 1e-3"), ["training.weight_decay=5E-2"])
    assert config.training.lr == 1e-3 and config.training.weight_decay == 5e-2


def test_text_example_config_loads():
    config = load_config(OFFICIAL / "text_large.yaml")
    assert config.architecture == "large" and config.training.lr == 1e-3


@pytest.mark.parametrize("name", ["parity_xlstm01", "parity_xlstm10", "parity_xlstm11"])
def test_official_yamls_load_unchanged(name):
    config = load_config(OFFICIAL / f"{name}.yaml")
    assert config.training.lr_decay_until_steps == 20000 and config.model["context_length"] == 256
    model = build_model(config, 3)
    counts = {"parity_xlstm01": 116_672, "parity_xlstm10": 56_132, "parity_xlstm11": 86_402}
    assert sum(p.numel() for p in model.parameters()) == counts[name]


def test_official_yaml_trains(tmp_path):
    """An official config runs unchanged (here for 2 steps, on the CPU although it says cuda)."""
    config = load_config(OFFICIAL / "parity_xlstm11.yaml", [
        "training.num_steps=2", "training.batch_size=4", f"training.out_dir={tmp_path}",
        "training.progress_bar=false", "dataset.kwargs.count.validation=4"])
    with pytest.warns(UserWarning, match="no GPU"):
        results = train(config)
    assert results["validation"]["targets"] == 4 and (tmp_path / "checkpoint.pt").exists()


def test_exact_resume(tmp_path):
    """Stopping after step 3 and resuming gives the losses of a run that never stopped."""
    full = tmp_path / "full"
    train(tiny(full, "training.checkpoint_every=3"))

    interrupted = tmp_path / "interrupted"

    def stop(step, metrics):
        if step == 4:  # a step after the checkpoint is lost, as in a real crash
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny(interrupted, "training.checkpoint_every=3"), on_step=stop)
    train(tiny(interrupted, "training.checkpoint_every=3"), resume=True)
    assert losses(full) == losses(interrupted)
    assert (interrupted / "metrics.png").exists()


def test_resume_with_another_config_fails(tmp_path):
    train(tiny(tmp_path))
    with pytest.raises(TrainingError, match=r"different config: model.embedding_dim: checkpoint 16, now 32"):
        train(tiny(tmp_path, "model.embedding_dim=32"), resume=True)
    train(tiny(tmp_path, "training.num_steps=7", "training.lr_decay_until_steps=6"), resume=True)  # extend a run
    assert losses(tmp_path)[-1][0] == 7
    with pytest.raises(TrainingError, match="does not exist"):
        train(tiny(tmp_path / "new"), resume=True)


def test_nan_loss_stops_and_keeps_the_last_checkpoint(tmp_path):
    config = tiny(tmp_path, "training.checkpoint_every=2")

    def poison(step, metrics):
        if step == 2:
            with torch.no_grad():
                for p in model_params:
                    p.fill_(float("nan"))

    model_params = []
    import xlstm_engine.train.loop as loop

    original = loop.build_model

    def capture(*args):
        model = original(*args)
        model_params.extend(model.parameters())
        return model

    loop.build_model = capture
    try:
        with pytest.raises(TrainingError, match=r"step 3: the loss is nan; stopping"):
            train(config, on_step=poison)
    finally:
        loop.build_model = original
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert saved["step"] == 2 and all(torch.isfinite(t).all() for t in saved["model"].values())


@pytest.mark.parametrize(("overrides", "error", "message"), [
    (["training.nmu_steps=3"], ValueError, r"RunConfig.training: unknown key\(s\) \['nmu_steps'\]"),
    (["model.num_block=3"], ValueError, r"unknown key\(s\) \['num_block'\]"),
    (["dataset.kwargs.synth_lang=parity"], ValueError, r"unknown key\(s\) \['synth_lang'\]"),
    (["model.vocab_size=2"], ValueError, r"the data's vocabulary \(3 tokens\) exceeds the model's vocab_size \(2\)"),
    (["training.grad_accum_steps=3"], ValueError, "must be a multiple of grad_accum_steps=3"),
])
def test_bad_configs(tmp_path, overrides, error, message):
    with pytest.raises(error, match=message):
        train(tiny(tmp_path, *overrides))


def test_text_data(tmp_path):
    """Documents are packed with resets at their starts; no target crosses a document."""
    (tmp_path / "a.txt").write_text("hello world\n\nsecond doc")
    (tmp_path / "b.txt").write_text("third")
    data = TextData(dict(train_files=str(tmp_path / "*.txt"), val_files=[str(tmp_path / "a.txt")],
                         context_length=8, document_separator="\n\n"))
    assert data.vocab_size == 257
    stream = data.train
    assert stream.starts.sum() == 3 and (stream.tokens == 256).sum() == 3
    batch = data.train_batch(0, 4)
    assert batch.inputs.shape == (4, 8) and batch.resets.dtype == torch.bool
    # a target is -1 exactly where the next input starts a document
    assert torch.equal(batch.targets[:, :-1] == -1, batch.resets[:, 1:])
    with pytest.raises(ValueError, match="no file matches"):
        TextData(dict(train_files=str(tmp_path / "missing*.txt")))


def test_text_training_with_tokenizer_vocabulary_check(tmp_path):
    (tmp_path / "t.txt").write_text("some text to train on. " * 20)
    config = load_config({
        "training": dict(batch_size=4, num_steps=2, lr_warmup_steps=1, progress_bar=False, out_dir=str(tmp_path)),
        "model": dict(num_blocks=1, embedding_dim=16, vocab_size=200, slstm_at=[],
                      mlstm_block=dict(mlstm=dict(num_heads=2))),
        "dataset": dict(name="text", kwargs=dict(train_files=str(tmp_path / "t.txt"), context_length=16)),
    })
    with pytest.raises(ValueError, match=r"the data's vocabulary \(257 tokens\) exceeds the model's vocab_size"):
        train(config)
    config.model["vocab_size"] = 257
    assert train(config)["train"]["step"] == 2


def test_tokenizers_folder(tmp_path):
    """A `tokenizers` folder: its ids, its end-of-document token, and its vocabulary against the model's."""
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[UNK]": 0, "</s>": 1, "hello": 2, "world": 3, "again": 4}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    (tmp_path / "tok").mkdir()
    tokenizer.save(str(tmp_path / "tok" / "tokenizer.json"))
    (tmp_path / "t.txt").write_text("hello world|again hello|world world again")
    kwargs = dict(train_files=str(tmp_path / "t.txt"), tokenizer=str(tmp_path / "tok"), context_length=4,
                  document_separator="|")
    data = TextData(kwargs)
    assert data.vocab_size == 5
    assert data.train.tokens.tolist() == [2, 3, 1, 4, 2, 1, 3, 3, 4, 1]
    assert data.train.starts.nonzero().flatten().tolist() == [0, 3, 6]
    config = load_config({
        "training": dict(batch_size=2, num_steps=1, lr_warmup_steps=1, progress_bar=False, out_dir=str(tmp_path)),
        "model": dict(num_blocks=1, embedding_dim=16, vocab_size=4, slstm_at=[],
                      mlstm_block=dict(mlstm=dict(num_heads=2))),
        "dataset": dict(name="text", kwargs=kwargs),
    })
    with pytest.raises(ValueError, match=r"the data's vocabulary \(5 tokens\) exceeds the model's vocab_size"):
        train(config)
    with pytest.raises(ValueError, match="neither 'bytes' nor a tokenizers folder"):
        TextData({**kwargs, "tokenizer": str(tmp_path / "missing")})


def test_large_architecture_trains(tmp_path):
    config = load_config({
        "architecture": "large",
        "training": dict(batch_size=4, num_steps=2, lr_warmup_steps=1, progress_bar=False, out_dir=str(tmp_path)),
        "model": dict(embedding_dim=32, num_heads=2, num_blocks=2, vocab_size=16),
        "dataset": dict(name="mqar", kwargs=dict(vocab_size=16, seq_len=24, num_kv_pairs=4,
                                                  count={"validation": 8})),
    })
    results = train(config)
    assert results["validation"]["targets"] == 8 * 4
