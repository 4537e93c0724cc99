"""Two CPU processes (torchrun, gloo) train with the same global batch and give the losses of one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_train import TINY

MODEL_AND_TRAINING = TINY[:TINY.index("dataset:")].replace("${dataset.kwargs.vocab_size}", "257")
TEXT = MODEL_AND_TRAINING + """dataset:
  name: text
  kwargs:
    train_files: {files}
    val_files: {files}
    context_length: 24
    document_separator: "|"
"""


def run(tmp_path: Path, name: str, nproc: int, *overrides: str, text: str = TINY) -> list[dict]:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    out = tmp_path / name
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "xlstm_engine.cli", "train", str(config), f"training.out_dir={out}", *overrides]
    if nproc == 1:
        command = [sys.executable, "-m", "xlstm_engine.cli", "train", str(config), f"training.out_dir={out}",
                   *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-12000:]  # the failing rank's own message comes before the summary
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
@pytest.mark.parametrize("data", ["parity", "text"])
def test_two_processes_match_one(tmp_path, mode, data):
    """On packed text the processes hold different numbers of targets: the loss must still be the global mean."""
    overrides = [f"training.distributed={mode}", "training.activation_checkpointing=true"]
    text = TINY
    if data == "text":
        corpus = tmp_path / "corpus.txt"
        corpus.write_text("|".join(f"document number {k} with some words " * (k % 4 + 1) for k in range(40)))
        text = TEXT.replace("{files}", str(corpus))
    single = run(tmp_path, "single", 1, text=text)
    double = run(tmp_path, mode, 2, *overrides, text=text)
    assert [(r["step"], r["split"], r["targets"]) for r in single] == \
           [(r["step"], r["split"], r["targets"]) for r in double]
    for a, b in zip(single, double, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), (a, b)
        assert b["acc"] == pytest.approx(a["acc"], abs=1e-9)
