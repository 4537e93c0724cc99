"""Summarize experiment runs: a markdown table of the validation accuracy and a PNG of the curves.

    python experiments/summarize.py runs/parity_xlstm01 runs/parity_xlstm11 ... --out docs/experiments

Each argument is a run folder (with metrics.jsonl) or a metrics .jsonl file. With --out, a thinned copy of each
run's metrics (every validation record, a train record every 100 steps) is kept there beside curves.png, so the
table and the plot can be rebuilt from the repository alone.
"""

import argparse
import itertools
import json
from pathlib import Path

GAP_S = 60.0  # a longer pause between two records is a stop and resume, not training time


def load(path: Path) -> tuple[str, list[dict]]:
    file = path / "metrics.jsonl" if path.is_dir() else path
    name = path.name if path.is_dir() else path.stem
    return name, [json.loads(line) for line in file.read_text().splitlines()]


def summary(records: list[dict], threshold: float = 0.95) -> dict:
    val = [r for r in records if r["split"] == "validation"]
    train = [r for r in records if r["split"] == "train"]
    times = sorted(r["time"] for r in records)
    below = [i for i, r in enumerate(val) if r["acc"] < threshold]
    held_from = None if below and below[-1] == len(val) - 1 else val[below[-1] + 1 if below else 0]["step"]
    return dict(steps=train[-1]["step"], train_acc=train[-1]["acc"], val_acc=val[-1]["acc"],
                best_val=max(r["acc"] for r in val), held_from=held_from,
                minutes=sum(b - a for a, b in itertools.pairwise(times) if b - a < GAP_S) / 60)


def thin(records: list[dict], every: int = 100) -> list[dict]:
    return [r for r in records if r["split"] != "train" or r["step"] % every == 0]


def plot(runs: dict[str, list[dict]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({name.split("_")[0] for name in runs})
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4), squeeze=False)
    for ax, group in zip(axes[0], groups, strict=True):
        for name, records in runs.items():
            if name.split("_")[0] == group:
                val = [r for r in records if r["split"] == "validation"]
                ax.plot([r["step"] for r in val], [r["acc"] for r in val], label=name, lw=1.2)
        ax.set(xlabel="step", ylabel="validation accuracy", ylim=(0, 1.02), title=group)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, help="folder for the thinned metrics and curves.png")
    args = parser.parse_args()
    runs = dict(load(path) for path in args.runs)
    print("| run | steps | train acc (last) | validation acc (last) | best | >= 0.95 from step on | minutes |")
    print("|---|---|---|---|---|---|---|")
    for name, records in runs.items():
        s = summary(records)
        print(f"| {name} | {s['steps']} | {s['train_acc']:.3f} | {s['val_acc']:.3f} | {s['best_val']:.3f} "
              f"| {s['held_from'] if s['held_from'] is not None else '-'} | {s['minutes']:.1f} |")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, records in runs.items():
            (args.out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in thin(records)))
        plot(runs, args.out / "curves.png")


if __name__ == "__main__":
    main()
