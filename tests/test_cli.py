import io
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


def generate_folder(tmp_path):
    """A tiny xLSTM Large saved with save_pretrained, and a byte-level BPE tokenizer.json trained here."""
    tokenizers = pytest.importorskip("tokenizers")
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    tokenizer.train_from_iterator(
        ["the cat sat on the mat.", "the dog sat on the log.", "hello world, hello cat."],
        tokenizers.trainers.BpeTrainer(vocab_size=280, special_tokens=["<|endoftext|>", "<|pad|>"],
                                       initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
                                       show_progress=False))
    torch.manual_seed(0)
    model = xe.xLSTMLarge(xe.xLSTMLargeConfig(embedding_dim=32, num_heads=2, num_blocks=2, eos_token_id=None,
                                              vocab_size=tokenizer.get_vocab_size()))
    with torch.no_grad():  # peaked logits, so that greedy decoding does not hang on rounding
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    model.save_pretrained(tmp_path)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    return xe.xLSTMLarge.from_pretrained(tmp_path), tokenizer


def test_generate_streams_the_greedy_continuation(tmp_path, capsys):
    model, tokenizer = generate_folder(tmp_path)
    main(["generate", "--model", str(tmp_path), "--prompt", "the cat", "--max-new-tokens", "7"])
    captured = capsys.readouterr()
    expected = xe.generate(model, torch.tensor([tokenizer.encode("the cat").ids]), max_new_tokens=7)
    assert captured.out == tokenizer.decode(expected[0, -7:].tolist()) + "\n"
    assert "7 tokens in" in captured.err and "tokens/s" in captured.err
    (tmp_path / "prompt.txt").write_text("the dog")
    main(["generate", "--model", str(tmp_path), "--file", str(tmp_path / "prompt.txt"), "--max-new-tokens", "5",
          "--temperature", "0.8", "--top-p", "0.9", "--top-k", "50", "--seed", "3"])
    sampled = xe.generate(model, torch.tensor([tokenizer.encode("the dog").ids]), max_new_tokens=5,
                          do_sample=True, temperature=0.8, top_p=0.9, top_k=50, seed=3)
    assert capsys.readouterr().out == tokenizer.decode(sampled[0, -5:].tolist()) + "\n"


def test_generate_chat_feeds_only_the_new_turn(tmp_path, capsys, monkeypatch):
    model, tokenizer = generate_folder(tmp_path)
    fed = []
    forward = xe.xLSTMLarge.forward_with_state
    monkeypatch.setattr(xe.xLSTMLarge, "forward_with_state",
                        lambda self, ids, *a, **k: fed.append(ids.tolist()) or forward(self, ids, *a, **k))
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello cat\n\nthe dog sat\n"))
    main(["generate", "--model", str(tmp_path), "--chat", "--max-new-tokens", "4"])
    turns = [tokenizer.encode(t).ids for t in ("hello cat\n", "the dog sat\n")]
    # turn 1: BOS + its tokens, then one token a step (the reply's last one is fed before turn 2)
    assert fed[0] == [[0, *turns[0]]] and all(len(f[0]) == 1 for f in fed[1:5])
    assert fed[5] == [turns[1]] and all(len(f[0]) == 1 for f in fed[6:]) and len(fed) == 10
    replies = [[f[0][0] for f in fed[1:5]], [f[0][0] for f in fed[6:10]]]
    monkeypatch.undo()
    # the second reply is what one run over the whole conversation gives
    history = torch.tensor([[*turns[0], *replies[0], *turns[1]]])
    assert xe.generate(model, history, max_new_tokens=4)[0, -4:].tolist() == replies[1]
    captured = capsys.readouterr()
    assert captured.out == "".join(tokenizer.decode(r) + "\n" for r in replies)
    assert captured.err.count("tokens/s") == 3  # after each turn, and the total


def test_generate_errors(tmp_path, capsys):
    _, tokenizer = generate_folder(tmp_path)
    with pytest.raises(ValueError, match="give --prompt TEXT or --file F"):
        main(["generate", "--model", str(tmp_path)])
    with pytest.raises(ValueError, match="no such file"):
        main(["generate", "--model", str(tmp_path), "--file", str(tmp_path / "missing.txt")])
    with pytest.raises(SystemExit):
        main(["generate", "--model", str(tmp_path), "--prompt", "a", "--temperature", "-1"])
    assert "must be a finite number >= 0.0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="top_p must be a number in"):
        main(["generate", "--model", str(tmp_path), "--prompt", "a", "--temperature", "1", "--top-p", "2"])
    neurips = tmp_path / "neurips"
    neurips.mkdir()
    tokenizer.save(str(neurips / "tokenizer.json"))
    (neurips / "config.yaml").write_text("mlstm_block: {}\nslstm_block: {}\nslstm_at: [1]\n")
    with pytest.raises(ValueError, match="a NeurIPS xLSTMLMModel config"):
        main(["generate", "--model", str(neurips), "--prompt", "a"])
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match=r"no tokenizer\.json"):
        main(["generate", "--model", str(tmp_path), "--prompt", "a"])
