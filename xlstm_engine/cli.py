"""Command line: `xlstm-engine train | generate | demo | convert`."""

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from .config import FLOAT_DTYPES, xLSTMLargeConfig
from .generation import prefill, stream
from .generation.streaming import encode
from .model import xLSTMLarge


def _at_least(low: int | float):
    """An argparse type: an int >= low (for an int `low`), or a finite float >= low (for a float `low`); otherwise
    a usage error that names the bound."""
    kind = type(low)
    expected = "an int" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected} >= {low}, got {text!r}") from None
        if kind is int and value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        if kind is float and not low <= value < float("inf"):
            raise argparse.ArgumentTypeError(f"must be a finite number >= {low}, got {text}")
        return value

    return parse


def demo(args: argparse.Namespace) -> None:
    """Save and load a small random model, prefill a prompt, continue token by token from the state, and check
    that the logits equal one parallel forward over the whole sequence."""
    torch.manual_seed(args.seed)
    config = xLSTMLargeConfig(embedding_dim=256, num_heads=4, num_blocks=4, vocab_size=1024)
    model = xLSTMLarge(config).eval()
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, max_shard_size="2MB")
        loaded = xLSTMLarge.from_pretrained(folder)
    same = all(torch.equal(a, b) for a, b in zip(model.parameters(), loaded.parameters(), strict=True))
    n_params = sum(p.numel() for p in loaded.parameters())
    print(f"model: {n_params / 1e6:.1f}M parameters, saved in shards and loaded back: "
          f"{'bit-identical' if same else 'DIFFERENT'}")

    prompt = torch.randint(0, config.vocab_size, (2, args.prompt_len))
    with torch.no_grad():
        start = time.perf_counter()
        logits, state = loaded(prompt)
        prefill_s = time.perf_counter() - start
        if args.new_tokens == 0:  # prefill only: no steps to time and nothing to compare with a parallel forward
            print(f"prefill {args.prompt_len} tokens x 2: {prefill_s * 1e3:.1f} ms; no decode steps (--new-tokens 0)")
            if not same:
                sys.exit("demo FAILED: the loaded weights differ from the saved ones")
            print("demo OK")
            return
        tokens, step_logits = [], [logits]
        start = time.perf_counter()
        for _ in range(args.new_tokens):
            tokens.append(step_logits[-1][:, -1:].argmax(-1))
            next_logits, state = loaded(tokens[-1], state=state)
            step_logits.append(next_logits)
        decode_s = time.perf_counter() - start
        sequence = torch.cat([prompt, *tokens], dim=1)
        parallel, _ = loaded(sequence[:, :-1])
    stateful = torch.cat(step_logits[:-1], dim=1)
    rel = ((stateful - parallel).norm() / parallel.norm()).item()
    print(f"prefill {args.prompt_len} tokens x 2: {prefill_s * 1e3:.1f} ms; "
          f"{args.new_tokens} decode steps: {decode_s / args.new_tokens * 1e3:.2f} ms/step")
    print(f"greedy continuation: {sequence[0, args.prompt_len:].tolist()}")
    print(f"prefill + {args.new_tokens} stateful steps vs one parallel forward over {sequence.shape[1] - 1} tokens: "
          f"relative error {rel:.2e}, max |diff| {(stateful - parallel).abs().max().item():.2e}")
    if not same or rel > 1e-5:
        sys.exit("demo FAILED: the stateful and parallel logits disagree")
    print("demo OK")


def convert(args: argparse.Namespace) -> None:
    """Read a checkpoint (HF or NX-AI layout) and write it in the HF layout, in the chosen weight layout/dtype.

    On failure, the folders this command created are removed; an existing DST keeps the old checkpoint or gets
    the new one whole (save_pretrained)."""
    dst = Path(args.dst).absolute()
    created = next((p for p in [*reversed(dst.parents), dst] if not p.exists()), None)  # the topmost new folder
    try:
        model = xLSTMLarge.from_pretrained(args.src, dtype=FLOAT_DTYPES.get(args.dtype))
        if args.weight_mode:
            model.config = dataclasses.replace(model.config, weight_mode=args.weight_mode)
        model.save_pretrained(args.dst, max_shard_size=args.max_shard_size)
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    print(f"wrote {args.dst} ({model.config.weight_mode} layout, {model.lm_head.weight.dtype})")


def generate(args: argparse.Namespace) -> None:
    """Continue a prompt with a model folder (xLSTM Large and its tokenizer.json), streaming the text.

    Temperature 0 (the default) decodes greedily. With --chat, each line of stdin is a turn: the state is kept
    between turns, so a turn feeds the model only its own tokens, never the history again.
    """
    if not args.chat and args.prompt is None and args.file is None:
        raise ValueError("give --prompt TEXT or --file F (or --chat to read turns from stdin)")
    folder = Path(args.model)
    if not folder.is_dir():
        raise ValueError(f"--model {folder}: no such directory")
    tokenizer = _load_tokenizer(folder)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = _load_model(folder, FLOAT_DTYPES.get(args.dtype), device)
    sampling = args.temperature > 0
    options = dict(max_new_tokens=args.max_new_tokens, do_sample=sampling, temperature=args.temperature,
                   top_p=args.top_p if sampling else None, top_k=args.top_k if sampling else None)
    if sampling and args.seed is not None:
        options["generator"] = torch.Generator(device=device).manual_seed(args.seed)
    text = args.prompt
    if args.file is not None:
        path = Path(args.file)
        if not path.is_file():
            raise ValueError(f"--file {path}: no such file")
        text = path.read_text()
    total, start = 0, time.perf_counter()
    if not args.chat:
        total = _stream_turn(model, text, tokenizer, None, options)[0]
    else:
        state = None if text is None else prefill(model, _token_ids(tokenizer, text, device))
        for line in sys.stdin:
            if not line.strip():
                continue
            turn_start = time.perf_counter()
            count, state = _stream_turn(model, line, tokenizer, state, options, return_state=True)
            total += count
            _report(count, time.perf_counter() - turn_start)
    _report(total, time.perf_counter() - start, "total: ")


def _stream_turn(model, text: str, tokenizer, state, options: dict, return_state: bool = False):
    """Stream the continuation of `text` to stdout; returns (new tokens, the state after them or None)."""
    device = next(model.parameters()).device
    count, after = 0, None
    for event in stream(model, _token_ids(tokenizer, text, device), tokenizer=tokenizer, state=state,
                        return_state=return_state, **options):
        sys.stdout.write(event.text)
        sys.stdout.flush()
        count += len(event.token_ids)
        after = event.state
    sys.stdout.write("\n")
    sys.stdout.flush()
    return count, after


def _token_ids(tokenizer, text: str, device) -> torch.Tensor:
    ids = encode(tokenizer, text)
    if not ids:
        raise ValueError(f"the prompt {text[:40]!r} encodes to no tokens")
    return torch.tensor([ids], device=device)


def _report(tokens: int, seconds: float, what: str = "") -> None:
    print(f"[{what}{tokens} tokens in {seconds:.2f} s: {tokens / max(seconds, 1e-9):.1f} tokens/s]",
          file=sys.stderr, flush=True)


def _load_tokenizer(folder: Path):
    """The folder's tokenizer.json, read with `tokenizers` alone (the `generate` extra), not transformers."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise ValueError(f"{path}: no tokenizer.json; xlstm-engine generate reads the model folder's tokenizer")
    try:
        from tokenizers import Tokenizer  # optional: the `generate` extra
    except ImportError:
        sys.exit("xlstm-engine: error: generate needs the tokenizers package: pip install 'xlstm-engine[generate]'")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises its own Exception type for a bad file
        raise ValueError(f"{path}: cannot read the tokenizer ({e})") from e


def _load_model(folder: Path, dtype, device):
    """An xLSTM Large folder (Hugging Face or NX-AI layout). The NeurIPS LM has no folder format in checkpoint/,
    so a NeurIPS config is named as such rather than failing on its keys."""
    config = folder / "config.yaml"
    if config.is_file() and any(key in config.read_text() for key in ("mlstm_block", "slstm_block", "slstm_at")):
        raise ValueError(f"{config}: a NeurIPS xLSTMLMModel config; generate loads xLSTM Large folders "
                         "(config.json + safetensors, or the NX-AI layout). Load the NeurIPS model in Python and "
                         "call xlstm_engine.generate or xlstm_engine.stream")
    return xLSTMLarge.from_pretrained(folder, dtype=dtype, device=device)


def train(args: argparse.Namespace) -> None:
    """Train from a YAML config with key.path=value overrides; with no config, the parity experiment.

    A new run into a training.out_dir that holds a run is an error: --resume continues it, --overwrite replaces
    it. The parity experiment (no config) owns runs/parity and always starts over, unless --resume.
    """
    # imported on use: training is an optional extra (PyYAML, tqdm, matplotlib, tokenizers), which `demo` and
    # `convert` do without, as they do without torch.distributed
    from .train import load_config
    from .train import train as run
    from .train.experiment import parity_comparison

    configs = [a for a in args.args if "=" not in a]
    overrides = [a for a in args.args if "=" in a]
    if len(configs) > 1:
        sys.exit(f"give at most one config file, got {configs}")
    if not configs:
        parity_comparison(overrides, resume=args.resume)
        return
    config = load_config(configs[0], overrides)
    results = run(config, resume=args.resume, overwrite=args.overwrite)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return
    for split, metrics in results.items():
        print(f"{split}: loss {metrics['loss']:.4f} acc {metrics['acc']:.4f} (step {metrics['step']})")
    if config.training.val_batches == 0:
        print("no evaluation (training.val_batches=0)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="xlstm-engine", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("train", help=train.__doc__.split("\n")[0])
    p.add_argument("args", nargs="*", metavar="[CONFIG.yaml] [key.path=value ...]")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue from training.out_dir/checkpoint.pt")
    mode.add_argument("--overwrite", action="store_true",
                      help="replace the run already in training.out_dir (its checkpoint, metrics and plot)")
    p.set_defaults(run=train)
    p = commands.add_parser("generate", help=generate.__doc__.split("\n")[0], description=generate.__doc__)
    p.add_argument("--model", required=True, metavar="DIR", help="folder with config.json, weights, tokenizer.json")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--prompt", metavar="TEXT")
    source.add_argument("--file", metavar="F", help="read the prompt from this file")
    p.add_argument("--max-new-tokens", type=_at_least(0), default=100)
    p.add_argument("--temperature", type=_at_least(0.0), default=0.0, help="0 (default): greedy")
    p.add_argument("--top-p", type=float, help="with --temperature > 0: nucleus sampling, in (0, 1]")
    p.add_argument("--top-k", type=_at_least(0), help="with --temperature > 0: keep the k most likely tokens")
    p.add_argument("--seed", type=int, help="with --temperature > 0: reproducible sampling")
    p.add_argument("--device", help="default: cuda if available, else cpu")
    p.add_argument("--dtype", choices=list(FLOAT_DTYPES), help="default: the stored dtype")
    p.add_argument("--chat", action="store_true",
                   help="read turns from stdin, one per line, keeping the state between turns (--prompt/--file, "
                        "if given, is the context before the first turn)")
    p.set_defaults(run=generate)
    p = commands.add_parser("demo", help=demo.__doc__.split("\n")[0])
    p.add_argument("--prompt-len", type=_at_least(1), default=300)
    p.add_argument("--new-tokens", type=_at_least(0), default=20, help="0: prefill only")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=demo)
    p = commands.add_parser("convert", help=convert.__doc__.split("\n")[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--weight-mode", choices=["single", "fused"])
    p.add_argument("--dtype", choices=list(FLOAT_DTYPES))
    p.add_argument("--max-shard-size", default="5GB")
    p.set_defaults(run=convert)
    args = parser.parse_args(argv)
    args.run(args)


def command() -> None:
    """The `xlstm-engine` command: `main`, with a bad input (a named ValueError or TypeError, or an error of this
    library such as a CheckpointError or TrainingError) reported in one line and exit status 1, not a traceback."""
    try:
        main()
    except Exception as e:
        if not isinstance(e, ValueError | TypeError) and not type(e).__module__.startswith("xlstm_engine."):
            raise
        sys.exit(f"xlstm-engine: error: {e}")


if __name__ == "__main__":
    command()
