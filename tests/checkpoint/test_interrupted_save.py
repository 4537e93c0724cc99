"""A save that fails or is killed at any point leaves a folder that loads the old model exactly, the new model
exactly, or raises a CheckpointError calling it inconsistent; never a mix. Stale temporaries do not outlive
the next save, and `convert` leaves no folder of its own behind when it fails."""

import os
import re
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import xlstm_engine as xe
import xlstm_engine.checkpoint.safetensors_io as io
from xlstm_engine.cli import main

SMALL = dict(embedding_dim=32, num_heads=2, num_blocks=1, vocab_size=20)  # 4 shards at 20 kB, 2 at 40 kB


class Killed(BaseException):
    """The process died: this file operation and every later one never happen (no cleanup either)."""


def small(seed: int, **overrides) -> xe.xLSTMLarge:
    torch.manual_seed(seed)
    return xe.xLSTMLarge(xe.xLSTMLargeConfig(**{**SMALL, **overrides}))


def temporaries(folder: Path) -> list[str]:
    """The `.{name}.tmp-{pid}` files that atomic writes leave while they run."""
    return sorted(p.name for p in folder.iterdir() if re.fullmatch(r"\..+\.tmp-\d+", p.name))


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()  # reaped: no process has this pid now
    return process.pid


def loads_as(folder: Path, old: xe.xLSTMLarge | None, new: xe.xLSTMLarge) -> str:
    """'old' or 'new' if the folder loads exactly that model ('old' for no checkpoint at all when old is None),
    'inconsistent' for the named error; else fail."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # model.safetensors beside an index: the loader says which it takes
            loaded = xe.xLSTMLarge.from_pretrained(folder)
    except xe.CheckpointError as e:
        if old is None and "no config.json" in str(e) and not any(folder.glob("model*")):
            return "old"
        assert "inconsistent" in str(e) and "interrupted" in str(e) and "Save the model into this folder again" \
            in str(e), str(e)
        return "inconsistent"
    for name, model in (("old", old), ("new", new)):
        if model is not None and loaded.config == model.config and all(
                torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(),
                                                   strict=True)):
            return name
    raise AssertionError(f"{folder} loads a mix of the old and the new model")


def inject(monkeypatch, at: int | None, kill: bool = False) -> list[str]:
    """Make file operation number `at` of a save (a file write, rename or removal) fail with OSError (kill=False:
    the save may clean up) or kill the process there (kill=True: a write leaves its partial file, and nothing
    later happens). Returns the log of the operations attempted. fsync becomes a no-op: it matters only for a
    power loss, and it would make this test slow."""
    log: list[str] = []

    def wrap(kind, real):
        def op(*args, **kwargs):
            number = len(log)
            log.append(kind)
            if at is not None and (number == at or (kill and number > at)):
                if kind == "write" and number == at:
                    Path(args[0]).write_bytes(b"partial")
                raise Killed() if kill else OSError(28, "No space left on device (injected)")
            return real(*args, **kwargs)

        return op

    monkeypatch.setattr(io, "write_safetensors", wrap("write", io.write_safetensors))
    monkeypatch.setattr(Path, "write_text", wrap("write", Path.write_text))  # config.json and the index
    monkeypatch.setattr(os, "replace", wrap("rename", os.replace))
    monkeypatch.setattr(Path, "unlink", wrap("unlink", Path.unlink))
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    return log


# (old model, old max_shard_size, new model, new max_shard_size); the new config differs too (norm_eps)
TRANSITIONS = {
    "nothing->single": (None, None, {}, "5GB"),
    "nothing->sharded": (None, None, {}, 20_000),
    "single->sharded": ({}, "5GB", {}, 20_000),
    "sharded->single": ({}, 20_000, {}, "5GB"),
    "sharded->sharded, 4 -> 2 shards": ({}, 20_000, {}, 40_000),
    "single->single, fused -> single weights": ({"weight_mode": "fused"}, "5GB", {}, "5GB"),
    "sharded->sharded, same names": ({}, 20_000, {}, 20_000),
}


@pytest.mark.parametrize("transition", list(TRANSITIONS))
def test_failure_or_kill_at_every_file_operation(tmp_path, monkeypatch, transition):
    old_overrides, old_shards, new_overrides, new_shards = TRANSITIONS[transition]
    old = None if old_overrides is None else small(0, **old_overrides)
    new = small(1, norm_eps=1e-5, **new_overrides)
    template, complete = tmp_path / "template", tmp_path / "complete"
    template.mkdir()
    if old is not None:
        old.save_pretrained(template, max_shard_size=old_shards)
    shutil.copytree(template, complete)
    with monkeypatch.context() as m:
        log = inject(m, at=None)
        new.save_pretrained(complete, max_shard_size=new_shards)
    assert loads_as(complete, old, new) == "new" and log.count("rename") >= 2, log
    files = sorted(p.name for p in complete.iterdir())

    outcomes = []
    for at in range(len(log)):
        for kill in (False, True):
            folder = tmp_path / f"{at}-{kill}"
            shutil.copytree(template, folder)
            with monkeypatch.context() as m:
                inject(m, at, kill)
                with pytest.raises(Killed if kill else OSError):
                    new.save_pretrained(folder, max_shard_size=new_shards)
            outcomes.append(loads_as(folder, old, new))
            if not kill:
                assert temporaries(folder) == [], f"failed {log[at]} #{at} left temporaries"
                continue
            pid = dead_pid()  # the killed process is gone: the next save removes what it left
            for name in temporaries(folder):
                (folder / name).rename(folder / name.replace(f"tmp-{os.getpid()}", f"tmp-{pid}"))
            with monkeypatch.context() as m:
                m.setattr(os, "fsync", lambda fd: None)
                new.save_pretrained(folder, max_shard_size=new_shards)
            assert sorted(p.name for p in folder.iterdir()) == files, f"after a kill at {log[at]} #{at}"
    # writing the temporaries (every operation before the first rename) cannot disturb the old checkpoint
    first_rename = log.index("rename")
    assert outcomes[: 2 * first_rename] == ["old"] * (2 * first_rename), (log, outcomes)
    assert set(outcomes) <= {"old", "new", "inconsistent"}


def test_inconsistent_folder_names_its_files(tmp_path):
    """A shard of another save in place: the error says which files come from which save."""
    old, new = small(0), small(1)
    old.save_pretrained(tmp_path / "a", max_shard_size=20_000)
    new.save_pretrained(tmp_path / "b", max_shard_size=20_000)
    shutil.copy(tmp_path / "b" / "model-00002-of-00004.safetensors", tmp_path / "a")
    with pytest.raises(xe.CheckpointError, match=r"inconsistent checkpoint.*model-00002-of-00004\.safetensors from "
                                                 r"save [0-9a-f]{16}.*Save the model into this folder again"):
        xe.xLSTMLarge.from_pretrained(tmp_path / "a")
    new.save_pretrained(tmp_path / "b")  # single over sharded: config.json and model.safetensors of another save
    shutil.copy(tmp_path / "a" / "config.json", tmp_path / "b")
    with pytest.raises(xe.CheckpointError, match=r"inconsistent checkpoint"):
        xe.xLSTMLarge.from_pretrained(tmp_path / "b")


def test_folder_resaved_by_transformers_loads(tmp_path):
    """transformers keeps our save id in config.json but writes weight files without one: no check then."""
    transformers = pytest.importorskip("transformers")
    small(0).save_pretrained(tmp_path)
    hf = transformers.xLSTMForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        hf.lm_head.weight.mul_(2)
    hf.save_pretrained(tmp_path)
    loaded = xe.xLSTMLarge.from_pretrained(tmp_path)
    assert torch.equal(loaded.lm_head.weight, hf.lm_head.weight)


# Saves the new model twice: under a file size limit (a write fails with EFBIG), then, once the parent has
# looked at the folder, with a SIGKILL in the middle of the third weight file.
TWO_SAVES = """
import os, resource, signal, sys, torch
import xlstm_engine as xe
import xlstm_engine.checkpoint.safetensors_io as io
folder, limit = sys.argv[1], int(sys.argv[2])
torch.manual_seed(1)
model = xe.xLSTMLarge(xe.xLSTMLargeConfig(**SMALL, norm_eps=1e-5))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, a write fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
try:
    model.save_pretrained(folder, max_shard_size=1)  # one tensor per file; the FFN's are the largest
except OSError as e:
    print("save failed:", e, flush=True)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
sys.stdin.readline()
real, calls = io.write_safetensors, []
def write(path, tensors, metadata):
    calls.append(path)
    if len(calls) == 3:
        open(path, "wb").write(b"partial")
        os.kill(os.getpid(), signal.SIGKILL)
    real(path, tensors, metadata)
io.write_safetensors = write
model.save_pretrained(folder, max_shard_size=1)
""".replace("**SMALL", "**" + repr(SMALL))


@pytest.mark.skipif(os.name != "posix", reason="RLIMIT_FSIZE and SIGKILL")
def test_file_size_limit_and_kill_in_a_real_process(tmp_path):
    old, new = small(0), small(1, norm_eps=1e-5)
    old.save_pretrained(tmp_path, max_shard_size=1)
    sizes = sorted(p.stat().st_size for p in tmp_path.glob("model-*.safetensors"))
    limit = sizes[-1] - 1000  # the FFN matrices' files fail after smaller files were written
    assert limit > sizes[len(sizes) // 2]
    process = subprocess.Popen([sys.executable, "-c", TWO_SAVES, str(tmp_path), str(limit)], text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = process.stdout.readline()
        if "File too large" not in line:
            process.kill()
            pytest.fail(f"the save did not fail as set up: {line}{process.communicate()[1]}")
        assert loads_as(tmp_path, old, new) == "old"
        assert temporaries(tmp_path) == []
        _, err = process.communicate("go on\n", timeout=120)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL, err
    assert loads_as(tmp_path, old, new) == "old"
    assert temporaries(tmp_path), "the killed process left no temporary file: the test lost its point"
    alive = tmp_path / f".model.safetensors.tmp-{os.getppid()}"  # a live process's temporary stays
    alive.write_bytes(b"being written")
    new.save_pretrained(tmp_path, max_shard_size=1)
    assert temporaries(tmp_path) == [alive.name]
    assert loads_as(tmp_path, old, new) == "new"


def test_atomic_write_removes_dead_temporaries_of_its_file(tmp_path):
    """The trainer's checkpoint.pt: a temporary of a killed run is removed by the next write of that file."""
    stale, other = tmp_path / f".checkpoint.pt.tmp-{dead_pid()}", tmp_path / f".metrics.jsonl.tmp-{dead_pid()}"
    stale.write_bytes(b"partial")
    other.write_bytes(b"partial")
    io.atomic_write(tmp_path / "checkpoint.pt", lambda tmp: tmp.write_bytes(b"new"))
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"new"
    assert not stale.exists() and other.exists()


# --- xlstm-engine convert ---------------------------------------------------------------------------------


def failing_write(path, tensors, metadata):
    Path(path).write_bytes(b"partial")
    raise OSError(28, "No space left on device (injected)")


def test_convert_removes_the_folders_it_created_on_failure(tmp_path, monkeypatch):
    small(0).save_pretrained(tmp_path / "src")
    monkeypatch.setattr(io, "write_safetensors", failing_write)
    with pytest.raises(OSError, match="No space left"):
        main(["convert", str(tmp_path / "src"), str(tmp_path / "new" / "dst")])
    assert not (tmp_path / "new").exists()
    with pytest.raises(xe.CheckpointError, match="no such directory"):
        main(["convert", str(tmp_path / "nothing"), str(tmp_path / "dst")])
    assert not (tmp_path / "dst").exists()


def test_convert_keeps_an_existing_folder_on_failure(tmp_path, monkeypatch):
    old = small(0)
    old.save_pretrained(tmp_path / "dst")
    (tmp_path / "dst" / "README.md").write_text("mine")
    small(1).save_pretrained(tmp_path / "src", max_shard_size=20_000)
    monkeypatch.setattr(io, "write_safetensors", failing_write)
    with pytest.raises(OSError, match="No space left"):
        main(["convert", str(tmp_path / "src"), str(tmp_path / "dst")])
    assert (tmp_path / "dst" / "README.md").read_text() == "mine"
    assert loads_as(tmp_path / "dst", old, small(1)) == "old"
