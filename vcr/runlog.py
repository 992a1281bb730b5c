"""What a run writes about itself: provenance (``run.json``), the per-epoch log (``log.jsonl``,
and the same entries as TensorBoard scalars beside it when ``tensorboard`` is installed) and
progress (a tqdm bar on a terminal, plain periodic lines in a log file), for the trainer and for
every other long loop (feature extraction, the L-BFGS path, MINE, the two-moons toy)."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from vcr import io

LOG = "log.jsonl"


def code_version() -> str:
    """``git describe`` of the checkout (``-dirty`` with local changes)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0:
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    import vcr

    return f"vcr {vcr.__version__} (no git)"


def package_versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "timm", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def append_log(run_dir: Path, entry: dict) -> None:
    """One line of ``log.jsonl``, flushed to disk (a killed job keeps every finished epoch)."""
    with open(Path(run_dir) / LOG, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


EVENTS = "events.log"


def log_event(run_dir: Path, text: str) -> None:
    """Print ``text`` and append it, timestamped, to ``RUN_DIR/events.log``: the starts, stop
    signals, checkpoints and resumes of every attempt (Snakemake replaces a retried job's log
    file; the run folder, like ``checkpoint.pt``, stays)."""
    print(text, flush=True)
    with open(Path(run_dir) / EVENTS, "a", encoding="utf-8") as fh:
        fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")


class EpochLog:
    """The per-epoch log of a run: each entry is one line of ``log.jsonl`` and, when
    ``tensorboard`` is installed (the optional extra ``.[tensorboard]``), the same entry as
    TensorBoard scalars in the run folder (``events.out.tfevents.*``), one curve per numeric key
    with the epoch as step: ``tensorboard --logdir work/<scale>/runs`` then shows every run,
    named by its folder. Without tensorboard only ``log.jsonl`` is written.

    ``first_epoch``: the epoch this process starts at; on a resume TensorBoard is told to drop
    the curves' points from that epoch on (``purge_step``), as ``truncate_log`` drops the lines.
    """

    def __init__(self, run_dir, *, first_epoch: int = 0, enabled: bool = True):
        self.run_dir, self.enabled = Path(run_dir), enabled
        self.writer = scalar_writer(self.run_dir, first_epoch) if enabled else None

    def append(self, entry: dict) -> None:
        if not self.enabled:
            return
        append_log(self.run_dir, entry)
        if self.writer is not None:
            step = int(entry["epoch"])
            for key, value in scalars(entry).items():
                self.writer.add_scalar(key, value, global_step=step)
            self.writer.flush()  # a killed job keeps its curves up to the last epoch

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def scalars(entry: dict) -> dict[str, float]:
    """The curves of one log entry: every numeric key except ``epoch`` (their x axis)."""
    return {
        k: float(v)
        for k, v in entry.items()
        if k != "epoch" and isinstance(v, int | float) and not isinstance(v, bool)
    }


def scalar_writer(run_dir: Path, first_epoch: int = 0):
    """A TensorBoard ``SummaryWriter`` on ``run_dir``, or None when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the optional extra is not installed: log.jsonl only
        return None
    return SummaryWriter(str(run_dir), purge_step=first_epoch or None, flush_secs=3600)


def truncate_log(run_dir: Path, before_epoch: int) -> None:
    """On resume, drop log lines of epochs the checkpoint does not cover (written after it)."""
    path = Path(run_dir) / LOG
    if not path.is_file():
        return
    keep = [
        ln
        for ln in path.read_text().splitlines()
        if ln.strip() and json.loads(ln).get("epoch", -1) < before_epoch
    ]
    io.write_text(path, "".join(ln + "\n" for ln in keep))


def read_log(run_dir) -> list[dict]:
    """The epochs of ``log.jsonl`` (empty when there is none)."""
    path = Path(run_dir) / LOG
    if not path.is_file():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def grad_ratio_summary(run_dir) -> dict:
    """How strong VCR was: the median over sites of ||g_vcr|| / ||g_task||, averaged over the
    logging steps of the first and of the last epoch (for final.json; empty without VCR)."""
    ratios = [e["vcr/grad_ratio_median"] for e in read_log(run_dir) if "vcr/grad_ratio_median" in e]
    if not ratios:
        return {}
    return {"vcr_grad_ratio_median": ratios[-1], "vcr_grad_ratio_median_first_epoch": ratios[0]}


class Progress:
    """A tqdm bar on a terminal; else a plain line at every logging step (SLURM logs). Only the
    main rank reports. Called at logging steps only (each report reads device values)."""

    def __init__(self, *, enabled: bool, total: int, initial: int, print_freq: int):
        self.enabled, self.total, self.print_freq = enabled, total, max(1, print_freq)
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="train", leave=False)

    def step(self, epoch: int, steps_done: int, logs: dict) -> None:
        """Report after a logging step; ``steps_done`` counts this epoch's steps so far."""
        loss, lr = float(logs["loss"]), float(logs["lr"])
        if self.bar is not None:
            self.bar.set_description(f"epoch {epoch}")
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}")
            self.bar.update(steps_done - self.bar.n)
        elif self.enabled:
            print(
                f"epoch {epoch} step {steps_done}/{self.total} loss {loss:.4f} lr {lr:.4g}",
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class TaskProgress:
    """Progress of a long loop that is not the trainer's (feature extraction, the L-BFGS path,
    MINE, the two-moons toy): a tqdm bar on a terminal, else a plain line every ``every``
    seconds (and at the end) for the log file, with the rate and the remaining time.

    ``update(n, **info)`` after each unit of work; ``info`` (e.g. ``val=0.81``) is shown.
    """

    def __init__(self, desc: str, total: int, *, unit: str = "it", every: float = 30.0):
        self.desc, self.total, self.unit, self.every = desc, int(total), unit, float(every)
        self.done, self.t0 = 0, time.perf_counter()
        self.last = self.t0
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=desc, unit=unit, leave=False)

    def update(self, n: int = 1, **info) -> None:
        self.done += n
        if self.bar is not None:
            if info:
                self.bar.set_postfix({k: _short(v) for k, v in info.items()})
            self.bar.update(n)
            return
        now = time.perf_counter()
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            self.print(now, info)

    def print(self, now: float, info: dict) -> None:
        elapsed = now - self.t0
        rate = self.done / elapsed if elapsed > 0 else math.inf
        left = (self.total - self.done) / rate if rate > 0 else math.inf
        extra = "".join(f" {k} {_short(v)}" for k, v in info.items())
        print(
            f"{self.desc}: {self.done}/{self.total} {self.unit} ({rate:.3g} {self.unit}/s, "
            f"{elapsed:.0f} s, ~{left:.0f} s left){extra}",
            flush=True,
        )

    def close(self, **info) -> None:
        """End the bar; in a log, a last line when work was done since the last one (e.g. an
        early stop before ``total``)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.done and (self.done < self.total or info):
            self.print(time.perf_counter(), info)


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def provenance(spec, recipe) -> dict:
    """What every run.json starts with: the run's parameters, its recipe and the code."""
    return {
        "params": spec.to_dict(),
        "recipe": recipe.to_dict(),
        "seed": spec.seed,
        "code_version": code_version(),
        "packages": package_versions(),
    }


def write_run_json(
    run_dir, spec, recipe, *, device, world_size, lr, steps_per_epoch, vcr_layers, resumed_at,
    layout=None,
) -> None:  # fmt: skip
    """``run.json`` of a training run (rewritten at every start or resume), its summary line in
    the log, and the start (and resume) events (``resumed_at``: epoch, step in it, global step)."""
    batch_per_rank = recipe.batch_size // world_size
    layout = layout or {"nodes": 1, "processes_per_node": world_size}
    job = os.environ.get("SLURM_JOB_ID")
    where = f" (SLURM job {job} on {os.environ.get('SLURM_JOB_NODELIST', '?')})" if job else ""
    log_event(run_dir, f"start{where}: world size {world_size}, layout {layout}")
    if resumed_at:
        e, s, g = resumed_at
        log_event(
            run_dir, f"resumed from checkpoint.pt at epoch {e}, step-in-epoch {s} (global step {g})"
        )
    io.write_json(
        Path(run_dir) / "run.json",
        {
            **provenance(spec, recipe),
            "device": str(device),
            "world_size": world_size,
            "layout": layout,
            "global_batch": recipe.batch_size,
            "batch_per_rank": batch_per_rank,
            "lr": lr,
            "lr_rule": (
                f"{'--lr' if spec.lr else 'recipe lr'}"
                f"{' x batch/256' if recipe.lr_scaling == 'linear' else ''}; "
                "not rescaled by world size (global batch is fixed)"
            ),
            "steps_per_epoch": steps_per_epoch,
            "vcr_layers": vcr_layers,
            "resumed_at": list(resumed_at) if resumed_at else None,
        },
    )
    at = f", resumed at epoch {resumed_at[0]} step {resumed_at[1]}" if resumed_at else ""
    print(
        f"run {run_dir}: {spec.method} {spec.arch} on {spec.dataset}, {world_size} "
        f"process(es) x batch {batch_per_rank} (global {recipe.batch_size}), peak lr "
        f"{lr:.4g}, {steps_per_epoch} steps/epoch, VCR on {len(vcr_layers)} layers{at}",
        flush=True,
    )
