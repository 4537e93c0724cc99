import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

import xlstm_engine as xe
from xlstm_engine.cli import main


def test_demo(capsys):
    main(["demo", "--prompt-len", "40", "--new-tokens", "5"])
    out = capsys.readouterr().out
    assert "bit-identical" in out and "demo OK" in out


def test_demo_prefill_only(capsys):
    main(["demo", "--prompt-len", "3", "--new-tokens", "0"])
    out = capsys.readouterr().out
    assert "no decode steps (--new-tokens 0)" in out and "demo OK" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--new-tokens", "-1"], "argument --new-tokens: must be >= 0, got -1"),
    (["--prompt-len", "0"], "argument --prompt-len: must be >= 1, got 0"),
    (["--prompt-len", "-5"], "argument --prompt-len: must be >= 1, got -5"),
])
def test_demo_rejects_bad_sizes(capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("weight_mode", ["fused", "single"])
def test_convert(tmp_path, weight_mode):
    source = xe.xLSTMLarge(xe.xLSTMLargeConfig(**xe.PRESETS["tiny"], weight_mode="single" if weight_mode == "fused"
                                               else "fused"))
    source.save_pretrained(tmp_path / "src")
    main(["convert", str(tmp_path / "src"), str(tmp_path / "dst"), "--weight-mode", weight_mode,
          "--dtype", "bfloat16"])
    with safe_open(tmp_path / "dst" / "model.safetensors", "pt") as f:
        assert any(("qkv_opreact" in key) == (weight_mode == "fused") for key in f.keys())
    converted = xe.xLSTMLarge.from_pretrained(tmp_path / "dst")
    assert converted.config.weight_mode == weight_mode
    for a, b in zip(source.parameters(), converted.parameters(), strict=True):
        assert b.dtype == torch.bfloat16 and torch.equal(a.to(torch.bfloat16), b)


def test_command_reports_a_bad_input_in_one_line(tmp_path):
    """The installed command prints a named error and exits with 1, without a traceback."""
    done = subprocess.run([sys.executable, "-m", "xlstm_engine.cli", "convert", str(tmp_path / "missing"),
                           str(tmp_path / "dst")], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().startswith("xlstm-engine: error:") and "no such directory" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "dst").exists()
