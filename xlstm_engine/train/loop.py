"""The training loop: one readable function, `train(config)`, for one process or several (torchrun).

Each step draws the global batch of that step (deterministic: any step's batch can be regenerated), splits it
over processes and accumulation steps, and normalizes the loss by the global number of targets, so that the
losses and updates do not depend on how the batch is split. Checkpoints hold the model, the optimizer, the step
and the RNG state, so a resumed run continues exactly as if it had never stopped.

A run's folder (`training.out_dir`) holds checkpoint.pt, metrics.jsonl and metrics.png. A new run refuses a
folder that already holds a run, unless told to overwrite it; `resume` continues it.
"""

import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint.safetensors_io import atomic_write, remove_dead_temporaries
from ..config import FLOAT_DTYPES
from .config import RunConfig, describe
from .data import Batch, build_data
from .distributed import Distributed
from .models import build_model, forward_logits, param_groups
from .plot import plot_metrics

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
PLOT = "metrics.png"
# fields that may change between a checkpoint and its resumption
RESUMABLE = {"num_steps", "log_every", "checkpoint_every", "out_dir", "val_every_step", "val_batches", "device",
             "progress_bar"}


class TrainingError(RuntimeError):
    """The run cannot go on (a NaN loss, a checkpoint of another config); the message says what to do."""


def lr_factor(step: int, config) -> float:
    """Linear warm-up from 0 (the first update has lr 0, as in the official runs), cosine decay to
    lr * lr_decay_factor at lr_decay_until_steps, then constant."""
    warmup, until, floor = config.lr_warmup_steps, config.lr_decay_until_steps, config.lr_decay_factor
    if step < warmup:
        return step / warmup
    if step >= until:
        return floor
    progress = (step - warmup) / max(until - warmup, 1)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def train(config: RunConfig, *, resume: bool = False, overwrite: bool = False,
          on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Train as `config` says. Returns the last train metrics ("train") and the last evaluation's metrics per
    split (none when training.val_batches is 0).

    resume: continue from `out_dir/checkpoint.pt` (its config must match, except the fields in RESUMABLE). A run
        whose checkpoint is already at training.num_steps is complete: this prints so and returns its last
        recorded metrics, without training.
    overwrite: a new run into an `out_dir` that holds a run (a checkpoint.pt, or a metrics.jsonl with at least
        one line) is a TrainingError unless overwrite is set; then that run's checkpoint, metrics and plot are
        removed before the first step.
    on_step: called after every optimizer step with (step, train metrics); may raise to stop the run.
    """
    tc = config.training
    out = Path(tc.out_dir)
    if resume and overwrite:
        raise ValueError(f"resume and overwrite contradict each other: resume continues the run in {out}, "
                         "overwrite replaces it; choose one")
    dist = Distributed.from_environment(tc.device)
    if not resume:
        _start_fresh(out, overwrite, dist)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        # a SIGKILL inside a checkpoint write leaves `.checkpoint.pt.tmp-PID` behind; a live process's is kept
        remove_dead_temporaries(out, lambda name: name == CHECKPOINT)
    torch.manual_seed(tc.seed)
    data = build_data(config.dataset)
    model = build_model(config, data.vocab_size).to(dist.device, FLOAT_DTYPES[tc.weight_precision])
    wrapped = dist.wrap(model, tc)
    optimizer = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.lr, betas=tuple(tc.betas),
                                  fused=None)
    start = 0
    if resume:
        start = _load_checkpoint(out / CHECKPOINT, config, wrapped, optimizer, dist)
        if start >= tc.num_steps:
            return _complete_run(out, start, tc.num_steps, dist)
    logger = MetricsLog(out / METRICS, truncate_after=start, enabled=dist.is_main)
    progress = _progress(tc, start, enabled=dist.is_main)
    autocast = torch.autocast("cuda", dtype=FLOAT_DTYPES[tc.amp_precision]) \
        if dist.device.type == "cuda" and tc.enable_mixed_precision else nullcontext()
    train_metrics, eval_metrics = {}, {}
    for step in range(start, tc.num_steps):
        for group in optimizer.param_groups:
            group["lr"] = tc.lr * lr_factor(step, tc)
        batch = data.train_batch(step, tc.batch_size, dist.rank, dist.world_size).to(dist.device)
        totals = _train_step(wrapped, batch, tc.grad_accum_steps, dist, autocast)
        if not math.isfinite(totals["loss"]):
            raise TrainingError(f"step {step + 1}: the loss is {totals['loss']}; stopping. The last good checkpoint "
                                f"(if any) is {out / CHECKPOINT}; lower training.lr or set training.grad_clip.")
        grad_norm = dist.clip_grad_norm(model, tc.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        train_metrics = dict(step=step + 1, split="train", **totals, lr=optimizer.param_groups[0]["lr"],
                             grad_norm=grad_norm)
        progress.update(train_metrics)
        if (step + 1) % tc.log_every == 0 or step + 1 == tc.num_steps:
            logger.write(train_metrics)
        if (step + 1) % tc.val_every_step == 0 or step + 1 == tc.num_steps:
            eval_metrics = evaluate(wrapped, config, data, dist, autocast, step + 1)
            for metrics in eval_metrics.values():
                logger.write(metrics)
            progress.note(eval_metrics)
        last = step + 1 == tc.num_steps
        if last or (tc.checkpoint_every and (step + 1) % tc.checkpoint_every == 0):
            _save_checkpoint(out / CHECKPOINT, config, wrapped, optimizer, step + 1, dist)
        if on_step is not None:
            on_step(step + 1, train_metrics)
    progress.close()
    if dist.is_main:
        logger.plot(out / PLOT)
    dist.close()
    return {"train": train_metrics, **eval_metrics}


def _loss_sums(model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sum of the cross-entropy, number of correct predictions, number of targets) over the batch's targets."""
    logits = forward_logits(model, batch.inputs, batch.resets)
    mask = batch.targets != -1
    loss = F.cross_entropy(logits.flatten(0, 1).float(), batch.targets.flatten(), ignore_index=-1, reduction="sum")
    correct = ((logits.argmax(-1) == batch.targets) & mask).sum()
    return loss, correct, mask.sum()


def _train_step(model, batch: Batch, accum: int, dist, autocast) -> dict:
    """Forward and backward over `accum` micro-batches; gradients are those of the mean loss over the global
    batch's targets."""
    targets = dist.all_sum(torch.tensor(float((batch.targets != -1).sum()), device=dist.device))
    sums = torch.zeros(2, device=dist.device)
    for index, micro in enumerate(batch.split(accum)):
        sync = index == accum - 1
        with dist.no_sync(model, enabled=not sync), autocast:
            loss, correct, _ = _loss_sums(model, micro)
        # the gradient reduction averages over processes: scale so that the result is the global mean
        (loss * dist.world_size / targets.clamp(min=1)).backward()
        sums += torch.stack([loss.detach().float(), correct.float()])
    sums = dist.all_sum(sums)
    count = targets.item()
    return dict(loss=sums[0].item() / max(count, 1), acc=sums[1].item() / max(count, 1), targets=int(count))


@torch.no_grad()
def evaluate(model, config, data, dist, autocast, step: int) -> dict[str, dict]:
    """Loss and accuracy on every evaluation split; none when training.val_batches is 0 (evaluation is off)."""
    was_training = model.training
    model.eval()
    results = {}
    for split in data.eval_splits if config.training.val_batches != 0 else []:
        sums = torch.zeros(3, device=dist.device)
        for batch in data.eval_batches(split, config.training.batch_size, dist.rank, dist.world_size,
                                       limit=config.training.val_batches):
            with autocast:
                loss, correct, count = _loss_sums(model, batch.to(dist.device))
            sums += torch.stack([loss.float(), correct.float(), count.float()])
        loss, correct, count = dist.all_sum(sums).tolist()
        results[split] = dict(step=step, split=split, loss=loss / max(count, 1), acc=correct / max(count, 1),
                              targets=int(count))
    model.train(was_training)
    return results


def _start_fresh(out: Path, overwrite: bool, dist) -> None:
    """A new run into `out`: refuse a folder that holds a run (a checkpoint, or metrics with at least one line),
    unless overwrite, which removes that run's files."""
    held = [path.name for path in (out / CHECKPOINT, out / METRICS) if path.is_file() and path.stat().st_size > 0]
    if held and not overwrite:
        raise TrainingError(f"{out} already holds a run ({', '.join(held)}): continue it with --resume "
                            "(train(resume=True)), replace it with --overwrite (train(overwrite=True)), or choose "
                            "another training.out_dir")
    dist.barrier()  # every process has looked before the main one removes or writes anything
    if overwrite and dist.is_main:
        for name in (CHECKPOINT, METRICS, PLOT):
            (out / name).unlink(missing_ok=True)


def _complete_run(out: Path, step: int, num_steps: int, dist) -> dict:
    """The result of resuming a run whose checkpoint is at or past num_steps: its last recorded metrics."""
    last = {}
    if (out / METRICS).exists():
        for line in (out / METRICS).read_text().splitlines():
            record = json.loads(line)
            if record["step"] <= step:
                last[record["split"]] = {k: v for k, v in record.items() if k != "time"}
    if dist.is_main:
        print(f"{out}: the run is complete at step {step} (training.num_steps={num_steps}), nothing to train; "
              "raise training.num_steps to continue it")
    dist.close()
    return dict(sorted(last.items(), key=lambda item: item[0] != "train"))  # "train" first, as train() returns


def _save_checkpoint(path: Path, config, model, optimizer, step: int, dist) -> None:
    model_state, optimizer_state = dist.full_state_dicts(model, optimizer)
    if not dist.is_main:
        return
    payload = dict(step=step, config=describe(config), model=model_state, optimizer=optimizer_state,
                   rng=torch.get_rng_state(),
                   cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _load_checkpoint(path: Path, config, model, optimizer, dist) -> int:
    if not path.exists():
        raise TrainingError(f"cannot resume: {path} does not exist (run without --resume to start)")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    differences = _config_differences(payload["config"], describe(config))
    if differences:
        raise TrainingError(f"cannot resume from {path}: it was written with a different config: "
                            + "; ".join(differences))
    dist.load_full_state_dicts(model, optimizer, payload["model"], payload["optimizer"])
    torch.set_rng_state(payload["rng"])
    if payload.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    return payload["step"]


def _config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(current)):
        path = f"{prefix}{key}"
        a, b = saved.get(key, "<missing>"), current.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_differences(a, b, path + ".")
        elif a != b and not (prefix == "training." and key in RESUMABLE):
            out.append(f"{path}: checkpoint {a!r}, now {b!r}")
    return out


class MetricsLog:
    """Metrics as JSON lines; on resume, lines written after the checkpoint's step are dropped."""

    def __init__(self, path: Path, truncate_after: int, enabled: bool):
        self.path, self.enabled = path, enabled
        if enabled:
            kept = []
            if truncate_after and path.exists():
                kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= truncate_after]
            path.write_text("".join(line + "\n" for line in kept))

    def write(self, metrics: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps({**metrics, "time": round(time.time(), 3)}) + "\n")

    def plot(self, path: Path) -> None:
        plot_metrics(self.path, path)


class _Progress:
    def __init__(self, total: int, start: int, enabled: bool):
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                warnings.warn("install tqdm for a progress bar (pip install 'xlstm-engine[train]')", stacklevel=3)
            else:
                # to a log file rather than a terminal: a line every 10 s, not ten a second
                self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True,
                                mininterval=0.1 if sys.stderr.isatty() else 10)
        self.evals = ""

    def update(self, metrics: dict) -> None:
        if self.bar is not None:
            # refresh=False: redraw at tqdm's own pace, not once per step (a log file would get a line per step)
            self.bar.set_postfix_str(f"loss {metrics['loss']:.4f} acc {metrics['acc']:.3f}{self.evals}", refresh=False)
            self.bar.update(1)

    def note(self, evals: dict) -> None:
        self.evals = "".join(f" | {split} acc {m['acc']:.3f}" for split, m in evals.items())

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _progress(tc, start: int, enabled: bool) -> _Progress:
    return _Progress(tc.num_steps, start, enabled and tc.progress_bar)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
