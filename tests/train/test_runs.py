"""A run's folder and the errors around it (issue 11): no silent overwrite, resuming a complete run, no fake
evaluation, config paths, data too short for one row, stale checkpoint temporaries. Tiny models, 2 steps."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_train import TINY

from xlstm_engine.cli import main
from xlstm_engine.train import TrainingError, load_config, train
from xlstm_engine.train.data import TextData
from xlstm_engine.train.experiment import parity_comparison


@pytest.fixture
def no_plots(monkeypatch):
    """Skip drawing the PNGs (a second per run; what is tested here is the run's folder)."""
    monkeypatch.setattr("xlstm_engine.train.loop.MetricsLog.plot", lambda self, path: None)
    monkeypatch.setattr("xlstm_engine.train.experiment._plot", lambda results, root: None)


def tiny(out_dir, *overrides):
    return load_config(TINY, [f"training.out_dir={out_dir}", "training.num_steps=2", *overrides])


def records(out_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


def checkpoint_step(out_dir) -> int:
    import torch

    return torch.load(Path(out_dir) / "checkpoint.pt", weights_only=False)["step"]


def test_new_run_refuses_a_folder_that_holds_a_run(tmp_path):
    train(tiny(tmp_path, "training.num_steps=3"))
    with pytest.raises(TrainingError, match=rf"{tmp_path} already holds a run \(checkpoint.pt, metrics.jsonl\).*"
                                            r"--resume.*--overwrite"):
        train(tiny(tmp_path))
    assert checkpoint_step(tmp_path) == 3 and records(tmp_path)[-1]["step"] == 3  # untouched

    def crash(step, metrics):
        raise KeyboardInterrupt

    # overwrite removes the old run's files before the first step: a crash leaves none of them behind
    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path), overwrite=True, on_step=crash)
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "metrics.png").exists()
    assert [r["step"] for r in records(tmp_path)] == [1]
    with pytest.raises(ValueError, match="resume and overwrite contradict each other"):
        train(tiny(tmp_path), resume=True, overwrite=True)


def test_cli_overwrite_and_resume(tmp_path, capsys, no_plots):
    config = tmp_path / "run.yaml"
    config.write_text(TINY)
    out = tmp_path / "out"
    args = ["train", str(config), f"training.out_dir={out}", "training.num_steps=2"]
    main(args)
    with pytest.raises(TrainingError, match="--overwrite"):
        main(args)
    main([*args, "training.num_steps=3", "--overwrite"])
    assert checkpoint_step(out) == 3 and [r["step"] for r in records(out) if r["split"] == "train"] == [1, 2, 3]
    with pytest.raises(SystemExit):  # argparse: not allowed together
        main([*args, "--resume", "--overwrite"])
    # resuming a complete run reports it and its last metrics, trains nothing, and keeps the log as it was
    before = (out / "metrics.jsonl").read_text()
    capsys.readouterr()
    main([*args, "training.num_steps=3", "--resume"])
    printed = capsys.readouterr().out
    assert "the run is complete at step 3" in printed
    assert "train: loss" in printed and "validation: loss" in printed and "(step 3)" in printed
    assert (out / "metrics.jsonl").read_text() == before


def test_resume_of_a_complete_run_returns_its_last_metrics(tmp_path):
    results = train(tiny(tmp_path))
    assert train(tiny(tmp_path), resume=True) == results
    # num_steps lowered below the checkpoint's step: complete too, and the metrics of step 2 are the last ones
    assert train(tiny(tmp_path, "training.num_steps=1", "training.lr_decay_until_steps=2"), resume=True) == results


def test_val_batches_zero_means_no_evaluation(tmp_path, capsys, no_plots):
    config = tmp_path / "run.yaml"
    config.write_text(TINY)
    main(["train", str(config), f"training.out_dir={tmp_path}", "training.num_steps=2", "training.val_batches=0"])
    printed = capsys.readouterr().out
    assert "validation" not in printed and "no evaluation (training.val_batches=0)" in printed
    assert {r["split"] for r in records(tmp_path)} == {"train"}
    with pytest.raises(ValueError, match=r"training.val_batches must be .* got -1"):
        tiny(tmp_path, "training.val_batches=-1")


def test_config_paths_whatever_their_suffix(tmp_path, monkeypatch):
    for name in ("RUN.YAML", "config.txt", "noext"):
        (tmp_path / name).write_text(TINY)
        assert load_config(str(tmp_path / name)).training.num_steps == 6
    monkeypatch.chdir(tmp_path)
    assert load_config("RUN.YAML").training.num_steps == 6  # a relative name, without a separator
    for missing in ("missing.YML", "missing.yaml", str(tmp_path / "sub" / "run"), "nothing"):
        with pytest.raises(ValueError, match=f"no such config file: '{missing}'"):
            load_config(missing)
    assert load_config("training: {num_steps: 3}").training.num_steps == 3  # YAML text on one line still works
    assert load_config(TINY).training.num_steps == 6


def test_a_bad_value_names_its_own_key(tmp_path):
    """num_steps feeds `lr_decay_until_steps: ${.num_steps}`: the error must blame num_steps."""
    with pytest.raises(ValueError, match=r"training\.num_steps: got 'abc', expected int"):
        load_config(TINY, ["training.num_steps=abc"])
    (tmp_path / "run.yaml").write_text(TINY.replace("num_steps: 6", "num_steps: abc"))
    with pytest.raises(ValueError, match=r"training\.num_steps: got 'abc', expected int"):
        load_config(tmp_path / "run.yaml")


def test_text_files_shorter_than_a_row_fail_before_the_first_step(tmp_path):
    (tmp_path / "train.txt").write_text("some text to train on. " * 20)
    (tmp_path / "val.txt").write_text("short")  # 5 bytes + the end-of-document token
    kwargs = dict(train_files=str(tmp_path / "train.txt"), val_files=str(tmp_path / "val.txt"), context_length=16)
    with pytest.raises(ValueError, match=rf"dataset.kwargs.val_files: {tmp_path / 'val.txt'} hold 6 tokens, fewer "
                                         r"than the 17 \(context_length \+ 1\)"):
        TextData(kwargs)
    with pytest.raises(ValueError, match=rf"dataset.kwargs.train_files: {tmp_path / 'val.txt'} hold 6 tokens"):
        TextData({**kwargs, "train_files": kwargs["val_files"]})
    (tmp_path / "val.txt").write_text("x" * 16)  # exactly one row: 16 inputs and the end token as the last target
    assert len(list(TextData(kwargs).eval_batches("validation", 4))) == 1


@pytest.mark.skipif(os.name != "posix", reason="process liveness via os.kill(pid, 0)")
def test_stale_checkpoint_temporaries_are_removed(tmp_path):
    """Also: a folder with an empty metrics log (a run killed before its first line) or other files holds no run."""
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()  # reaped: its pid names no process
    # the parent process (pytest's shell) is alive; this process's own pid would be atomic_write's own temporary
    stale, live = tmp_path / f".checkpoint.pt.tmp-{dead.pid}", tmp_path / f".checkpoint.pt.tmp-{os.getppid()}"
    for path in (stale, live):
        path.write_bytes(b"partial")
    (tmp_path / "metrics.jsonl").write_text("")
    (tmp_path / "notes.txt").write_text("mine")
    train(tiny(tmp_path))
    assert not stale.exists()
    assert live.read_bytes() == b"partial"  # a live process's file may be a checkpoint being written
    assert checkpoint_step(tmp_path) == 2 and (tmp_path / "notes.txt").read_text() == "mine"


def test_parity_demo_starts_over_each_time_and_resumes(tmp_path, capsys, no_plots):
    """The README's main command (no config) runs again into its own folder; --resume only reports."""
    overrides = ["training.num_steps=1", "training.batch_size=8", "training.progress_bar=false",
                 "dataset.kwargs.count.trained_lengths=8", "dataset.kwargs.count.longer=8",
                 "dataset.kwargs.subpar.longer.max_sequence_length=24"]
    parity_comparison(overrides, out_dir=str(tmp_path))
    second = parity_comparison(overrides, out_dir=str(tmp_path))
    assert "the demo replaces its earlier runs" in capsys.readouterr().out
    assert checkpoint_step(tmp_path / "xLSTM11") == 1
    assert parity_comparison(overrides, out_dir=str(tmp_path), resume=True) == second
    assert capsys.readouterr().out.count("the run is complete at step 1") == 2
