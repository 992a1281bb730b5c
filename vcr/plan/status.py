"""Where a run stands (``python -m vcr.plan --status``), read from the work folder only: it works
on a login node, with no SLURM call unless ``--slurm`` asks for ``squeue``'s states too.

A job of the plan (``vcr.plan.budget.job_costs``: its outputs, log and benchmark file) is

- **done**: every output exists and Snakemake does not mark one incomplete (a job stopped
  after writing its outputs but before Snakemake saw it end counts as interrupted);
- **failed**: its log's last attempt holds an error line (a Python exception, ``error:``,
  SLURM's ``CANCELLED`` / ``DUE TO TIME LIMIT``, ``Killed``, out of memory). Pretraining logs
  are appended across attempts; an error before the last attempt's start line (``run <dir>:``)
  belongs to an earlier attempt;
- **interrupted**: started (a log, or a run folder), no error, and stopped: the trainer wrote
  "stopped by signal" (a checkpoint is there; a rerun resumes it), or nothing was written for
  ``active_minutes`` (a killed job), or, with ``--slurm``, SLURM no longer lists it;
- **running**: started, no error, written to within ``active_minutes`` (or, with ``--slurm``,
  RUNNING in ``squeue``; PENDING counts as queued);
- **not started**: none of the above.

Spent GPU-/CPU-hours are the benchmark files' (written by Snakemake when a job ends well). The
ETA is the budget's estimate of the jobs left (a running pretraining run by the epochs it has
left), scaled by measured/estimated of the jobs done so far, scheduled on the cluster size.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from vcr.names import TARGETS
from vcr.plan import budget as B

STATES = ("done", "running", "queued", "failed", "interrupted", "not started")
# A line that says a job failed. Case-sensitive on purpose (progress lines and JSON logs hold
# words like "stderr" or "errors"); the first exception line of a traceback is reported.
ERROR_LINE = re.compile(
    r"^\w[\w.]*(Error|Exception)\b|\berror:|Error:|CANCELLED|DUE TO TIME LIMIT|"
    r"\bKilled\b|[Oo]ut of memory|Segmentation fault|core dumped"
)
ATTEMPT_START = re.compile(r"^run \S+: ")  # vcr.runlog.write_run_json, once per (re)start
# stopped on request: vcr.preemption.Preempted's message, or Ctrl-C reaching the job
STOPPED = ("stopped by signal", "KeyboardInterrupt")


@dataclass
class JobStatus:
    id: str
    rule: str
    state: str
    log: str
    error: str = ""  # the first error line of the failed attempt
    epoch: str = ""  # running/interrupted pretraining: "epoch 3/90 loss 2.3 val 45.2"
    epochs_left: float = 1.0  # fraction of the job's work still to do
    last_write: float = 0.0  # newest mtime among the job's log and run files


@dataclass
class Status:
    scale: str
    jobs: dict[str, JobStatus]
    per_target: dict[str, set[str]]
    costs: dict[str, B.JobCost] = field(repr=False)
    measured: dict[str, dict] = field(repr=False)
    eta_s: float = math.nan
    eta_note: str = ""


def first_error(text: str) -> str:
    """The first line of ``text`` that says the job failed ('' if none)."""
    for line in text.splitlines():
        if ERROR_LINE.search(line):
            return line.strip()
    return ""


def last_attempt(text: str) -> str:
    """The part of an appended log that belongs to its last attempt: from its last start line
    on (an attempt that died before printing one left its error after the previous start)."""
    lines = text.splitlines()
    starts = [i for i, ln in enumerate(lines) if ATTEMPT_START.match(ln)]
    return "\n".join(lines[starts[-1] :]) if starts else text


def _mtime(*paths) -> float:
    out = 0.0
    for p in paths:
        try:
            out = max(out, Path(p).stat().st_mtime)
        except OSError:
            pass
    return out


def _run_progress(run_dir: Path) -> tuple[str, float]:
    """("epoch 3/90 loss 2.31 val 45.2", fraction of epochs left) from log.jsonl/run.json."""
    log = run_dir / "log.jsonl"
    total = None
    try:
        total = json.loads((run_dir / "run.json").read_text())["recipe"]["epochs"]
    except (OSError, KeyError, ValueError):
        pass
    try:
        lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
    except OSError:
        lines = []
    if not lines:
        return (f"epoch 0/{total}" if total else "no epoch finished"), 1.0
    last = json.loads(lines[-1])
    done = int(last["epoch"]) + 1
    text = f"epoch {done}/{total if total else '?'} loss {last.get('loss', math.nan):.4g}"
    if isinstance(last.get("val_top1"), int | float):
        text += f" val_top1 {last['val_top1']:.4g}"
    left = max(0.0, 1.0 - done / total) if total else 1.0
    return text, left


def slurm_states(user_only: bool = True) -> dict[str, str]:
    """``{comment: state}`` from ``squeue`` (the slurm executor plugin's comment is
    ``rule_<rule>_wildcards_<wildcards joined by _, / as _>``)."""
    cmd = ["squeue", "-h", "-o", "%k|%T"] + (["--me"] if user_only else [])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    states = {}
    for line in out.splitlines():
        comment, _, state = line.rpartition("|")
        if comment:
            states[comment] = state
    return states


def slurm_comment(job: B.JobCost, plan) -> str:
    """The comment the slurm plugin gives ``job`` (its wildcards, from the job id)."""
    rel = job.id.split("/benchmarks/", 1)[-1].removesuffix(".tsv")
    rule, _, rest = rel.partition("/")
    if job.rule == "probe":
        run, _, name = rest.rpartition("/")
        protocol, _, evalname = name.partition("-")
        wildcards = [run, protocol, evalname]
    elif job.rule == "classifier_metric":
        run, _, evalname = rest.rpartition("/")
        wildcards = [run, evalname]
    elif job.rule == "plot_figure2":
        wildcards = []
    else:
        wildcards = [rest]
    text = "_".join(wildcards).replace("/", "_")
    return f"rule_{job.rule}_wildcards_{text}" if text else f"rule_{job.rule}"


def snakemake_incomplete(output: str, workdir: str | Path = ".") -> bool:
    """Whether Snakemake holds an "incomplete" marker for ``output`` (a job it started and never
    saw end): the file ``.snakemake/incomplete/<urlsafe base64 of the path>``, split into
    ``@``-prefixed folders past the file-name limit, as snakemake.persistence.file (pinned
    snakemake 9) writes it."""
    from base64 import urlsafe_b64encode

    subject = Path(workdir) / ".snakemake" / "incomplete"
    if not subject.is_dir():
        return False
    max_len = os.pathconf(subject, "PC_NAME_MAX") if os.name == "posix" else 255
    b64 = urlsafe_b64encode(str(output).encode()).decode()
    parts = [b64[i : i + max_len - 1] for i in range(0, len(b64), max_len - 1)]
    parts = ["@" + part for part in parts[:-1]] + [parts[-1]]
    return subject.joinpath(*parts).exists()


def job_status(job: B.JobCost, plan, *, now: float, active_s: float, squeue=None) -> JobStatus:
    run_dir = None
    if job.rule == "pretrain":
        run_dir = Path(job.outputs[0]).parent
    log = Path(job.log)
    st = JobStatus(job.id, job.rule, "not started", str(log))
    if job.outputs and all(Path(p).exists() for p in job.outputs):
        if not any(snakemake_incomplete(p) for p in job.outputs):
            st.state, st.epochs_left = "done", 0.0
            return st
        # its outputs were written but Snakemake never saw the job end (it was stopped first):
        # Snakemake will not use them without --rerun-incomplete, so neither does the count
        st.state, st.last_write = "interrupted", _mtime(*[Path(p) for p in job.outputs])
        st.epoch = "outputs written, marked incomplete by Snakemake (--rerun-incomplete)"
        return st
    files = [log] + ([run_dir / "log.jsonl", run_dir / "checkpoint.pt"] if run_dir else [])
    st.last_write = _mtime(*files)
    started = log.is_file() or (run_dir is not None and (run_dir / "checkpoint.pt").exists())
    slurm = squeue.get(slurm_comment(job, plan)) if squeue is not None else None
    if slurm in ("PENDING", "CONFIGURING"):
        st.state = "queued"
        return st
    if not started and slurm is None:
        return st
    text = log.read_text(errors="replace") if log.is_file() else ""
    attempt = last_attempt(text)
    if run_dir is not None:
        st.epoch, st.epochs_left = _run_progress(run_dir)
    if slurm in ("RUNNING", "COMPLETING"):
        st.state = "running"
    elif first_error(attempt):
        st.state, st.error = "failed", first_error(attempt)
    elif any(marker in attempt for marker in STOPPED):
        st.state = "interrupted"
    elif squeue is None and now - st.last_write <= active_s:
        st.state = "running"
    else:
        st.state = "interrupted"
    return st


def make_status(plan, targets=TARGETS, *, active_minutes=30.0, slurm=False, gpus=None, cpus=None):
    fig = B.Figures(plan.scale)
    costs = B.job_costs(plan, fig)
    measured = B.measured_costs(costs)
    per_target = {t: B.target_jobs(plan, costs, t) for t in targets}
    every = set().union(*per_target.values()) if per_target else set()
    squeue = slurm_states() if slurm else None
    now = time.time()
    jobs = {
        j: job_status(costs[j], plan, now=now, active_s=60 * active_minutes, squeue=squeue)
        for j in sorted(every)
    }
    st = Status(plan.scale, jobs, per_target, costs, measured)
    _eta(st, fig, gpus, cpus)
    return st


def _eta(st: Status, fig: B.Figures, gpus, cpus) -> None:
    done_est = sum(st.costs[j].seconds for j in st.measured if j in st.jobs)
    done_meas = sum(m["cpu_s"] if not st.costs[j].gpus else m["s"] for j, m in st.measured.items()
                    if j in st.jobs)  # fmt: skip
    scale = done_meas / done_est if done_est > 0 and done_meas > 0 else 1.0
    left = {
        j: B.JobCost(**{**st.costs[j].__dict__, "seconds": st.costs[j].seconds * s.epochs_left
                        * scale})
        for j, s in st.jobs.items()
        if s.state != "done"
    }  # fmt: skip
    gpus = fig.cluster["gpus"] if gpus is None else int(gpus)
    cpus = fig.cluster["cpus"] if cpus is None else int(cpus)
    if not left:
        st.eta_s, st.eta_note = 0.0, "nothing left to run"
        return
    # jobs left depend only on jobs left (done ones are satisfied)
    st.eta_s = B.simulate(left, set(left), gpus=gpus, cpus=cpus)
    gpu_h = sum(j.gpu_s for j in left.values()) / 3600
    cpu_h = sum(j.cpu_s for j in left.values()) / 3600
    st.eta_note = (
        f"{len(left)} of {len(st.jobs)} jobs left, ~{gpu_h:.3g} GPU-h + {cpu_h:.3g} CPU-h by the "
        f"budget x {scale:.2f} (measured / estimated of the jobs done so far), on {gpus} GPUs "
        f"and {cpus} cores"
    )


def format_status(st: Status, *, max_list: int = 20) -> str:
    from tabulate import tabulate

    states = [s for s in STATES if s != "queued" or any(j.state == s for j in st.jobs.values())]
    rows = []
    for name, ids in [*st.per_target.items(), ("total", set(st.jobs))]:
        counts = {s: sum(st.jobs[j].state == s for j in ids) for s in states}
        m = [st.measured[j] for j in ids if j in st.measured]
        rows.append(
            [name, len(ids), *(counts[s] for s in states),
             f"{sum(x['gpu_s'] for x in m) / 3600:.3g}", f"{sum(x['cpu_s'] for x in m) / 3600:.3g}"]
        )  # fmt: skip
    out = [
        f"Status at scale {st.scale} (work folder only"
        f"{'; SLURM states from squeue' if any(j.state == 'queued' for j in st.jobs.values()) else ''}"
        "; 'total' counts a job two tables share once)",
        "",
        tabulate(
            rows,
            headers=["target", "jobs", *states, "GPU-h spent", "CPU-h spent"],
            tablefmt="github",
            disable_numparse=True,
        ),
    ]
    for state in ("running", "interrupted", "failed"):
        items = [j for j in st.jobs.values() if j.state == state]
        if not items:
            continue
        out += ["", f"{state.capitalize()} ({len(items)}):"]
        for j in items[:max_list]:
            what = _short_id(j.id)
            if state == "failed":
                out.append(f"  {what}\n    log: {j.log}\n    error: {j.error}")
            else:
                ago = f", last write {(time.time() - j.last_write) / 60:.0f} min ago"
                out.append(f"  {what}{': ' + j.epoch if j.epoch else ''}{ago}")
        if len(items) > max_list:
            out.append(f"  ... and {len(items) - max_list} more")
    eta = "done" if st.eta_s == 0 else _duration(st.eta_s)
    out += ["", f"ETA: {eta} ({st.eta_note})"]
    return "\n".join(out)


def _short_id(jid: str) -> str:
    return jid.split("/benchmarks/", 1)[-1].removesuffix(".tsv")


def _duration(s: float) -> str:
    if not math.isfinite(s):
        return "unknown (a job has no estimate or does not fit the cluster)"
    if s < 120:
        return f"~{s:.0f} s"
    if s < 7200:
        return f"~{s / 60:.0f} min"
    return f"~{s / 3600:.1f} h"
