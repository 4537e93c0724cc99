"""A PNG of the training curves, from the metrics JSONL."""

import json
import warnings
from pathlib import Path


def plot_metrics(metrics: Path, png: Path, title: str | None = None) -> bool:
    """Loss and accuracy against step, for the train split and every evaluation split. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("install matplotlib for the plot of the curves (pip install 'xlstm-engine[train]')",
                      stacklevel=2)
        return False
    series: dict[str, list[dict]] = {}
    for line in Path(metrics).read_text().splitlines():
        record = json.loads(line)
        series.setdefault(record["split"], []).append(record)
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for split, records in series.items():
        steps = [r["step"] for r in records]
        style = dict(label=split, marker="o" if split != "train" else None, markersize=3)
        loss_ax.plot(steps, [r["loss"] for r in records], **style)
        acc_ax.plot(steps, [r["acc"] for r in records], **style)
    loss_ax.set(xlabel="step", ylabel="loss", yscale="log", title="loss")
    acc_ax.set(xlabel="step", ylabel="accuracy", ylim=(0, 1.02), title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return True
