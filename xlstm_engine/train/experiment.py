"""The default experiment: the xLSTM paper's parity result in a few minutes on a laptop CPU.

Parity (is the number of 2s even?) needs state tracking, which the sLSTM's memory mixing provides and the
mLSTM's does not. Both models train on sequences of 3-20 tokens and are tested on 3-20 and on 21-256:
xLSTM[1:1] (an sLSTM and an mLSTM block) generalizes to the longer sequences, xLSTM[1:0] (two mLSTM blocks)
stays near chance (0.5). About 45 s per model on 2 CPU cores.

The paper's setting (lengths 3-40, tested on 40-256, 20k steps, the sLSTM as the second block) is the official
configs' (experiments/parity_xlstm*.yaml), run on a GPU: see docs/experiments.md. On this budget the sLSTM goes
first, which learns the task within a few hundred steps on every seed we tried.
"""

import json
from pathlib import Path

from .config import load_config
from .loop import train

DEFAULT_CONFIG = """
training:
  batch_size: 64
  lr: 0.01
  seed: 42
  val_every_step: 100
  lr_warmup_steps: 100
  lr_decay_until_steps: ${.num_steps}
  lr_decay_factor: 0.01
  weight_decay: 0.1
  grad_clip: 1.0
  num_steps: 500
  log_every: 10
  out_dir: runs/parity
model:
  num_blocks: 2
  embedding_dim: 64
  mlstm_block:
    mlstm:
      num_heads: 1
  slstm_block:
    slstm:
      num_heads: 1
  slstm_at: [0]
  vocab_size: ${dataset.kwargs.vocab_size}
dataset:
  name: form_language
  kwargs:
    synth_lang_type: parity
    vocab_size: 3
    seed: 1
    min_sequence_length: 3
    max_sequence_length: 20
    count:
      trained_lengths: 512
      longer: 512
    subpar:
      longer:
        min_sequence_length: 21
        max_sequence_length: 256
"""

MODELS = {"xLSTM[1:1]": [0], "xLSTM[1:0]": []}


def parity_comparison(overrides: list[str] = (), out_dir: str | None = None, resume: bool = False) -> dict[str, dict]:
    """Train both models on the default config (with `overrides`) and print their accuracies side by side.

    The demo owns its folders (<out_dir>/xLSTM11 and xLSTM10, runs/parity by default): each call trains both
    models from scratch and replaces the runs there (overwrite), so the README's command works every time.
    resume: continue them instead (a complete run only reports its last metrics).
    """
    root = Path(out_dir or load_config(DEFAULT_CONFIG, list(overrides)).training.out_dir)
    results = {}
    for name, slstm_at in MODELS.items():
        tag = name.replace("[", "").replace("]", "").replace(":", "")
        config = load_config(DEFAULT_CONFIG, [*overrides, f"model.slstm_at={slstm_at}",
                                              f"training.out_dir={root / tag}"])
        where = f"from {root / tag}" if resume else f"from scratch in {root / tag} (the demo replaces its earlier runs)"
        print(f"{'resuming' if resume else 'training'} {name} {where}: "
              f"{'sLSTM + mLSTM' if slstm_at else 'mLSTM only'} blocks, parity on lengths 3-20")
        results[name] = train(config, resume=resume, overwrite=not resume)
    print(table(results))
    (root / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    _plot(results, root)
    print(f"curves and metrics: {root}/<model>/metrics.png, metrics.jsonl; summary: {root}/comparison.png")
    return results


def table(results: dict[str, dict]) -> str:
    lines = ["", "parity accuracy (chance 0.50)      lengths 3-20 (trained)   lengths 21-256 (longer)"]
    for name, metrics in results.items():
        # a split can be missing (training.val_batches=0: no evaluation): a dash, never a made-up number
        acc = [f"{metrics[split]['acc']:.3f}" if split in metrics else "-" for split in ("trained_lengths", "longer")]
        lines.append(f"  {name:<32} {acc[0]:>14} {acc[1]:>24}")
    return "\n".join(lines) + "\n"


def _plot(results: dict[str, dict], root: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name in results:
        tag = name.replace("[", "").replace("]", "").replace(":", "")
        records = [json.loads(line) for line in (root / tag / "metrics.jsonl").read_text().splitlines()]
        for split, style in (("trained_lengths", "--"), ("longer", "-")):
            points = [(r["step"], r["acc"]) for r in records if r["split"] == split]
            if not points:
                continue
            ax.plot(*zip(*points, strict=True), style, marker="o", markersize=3, label=f"{name}, {split}")
    ax.axhline(0.5, color="gray", lw=0.8)
    ax.set(xlabel="step", ylabel="accuracy", ylim=(0.3, 1.02), title="parity: trained on lengths 3-20")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(root / "comparison.png", dpi=110)
    plt.close(fig)
