"""Figures from a finished work folder: ``python -m vcr.plan --budget --derive-figures`` turns
its benchmark files into measured figures in the format of ``vcr/plan/throughput.yaml`` (the
cost model is vcr/plan/budget.py). Nothing here imports torch."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vcr.errors import ConfigError
from vcr.plan.budget import Figures, _images, _sets, job_costs, measured_costs


def start_cpu_s(repeats: int = 3) -> float:
    """CPU seconds of starting a job process: Python importing torch and the trainer (median of
    ``repeats`` subprocesses, their user + system time)."""
    import resource

    times = []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", "import vcr.train, vcr.probes"], check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append(
            (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        )  # fmt: skip
    return statistics.median(times)


def derive_figures(plan, figures: Figures | None = None, start_s: float | None = None) -> dict:
    """Measured figures of ``plan``'s finished jobs (benchmark cpu_time, one core per job) in
    the format of ``throughput.yaml``: rates = work / (CPU seconds - start_s), per recipe,
    protocol and rule. Meant for CPU scales (mini), where a job is one core."""
    from vcr.recipes import get_recipe

    fig = figures or Figures(plan.scale)
    jobs = job_costs(plan, fig)
    measured = measured_costs(jobs)
    if not measured:
        raise ConfigError(
            f"no benchmark files under {plan.work}/benchmarks: run the pipeline first"
        )
    start = start_cpu_s() if start_s is None else float(start_s)
    when = time.strftime("%Y-%m-%d")
    src = (
        f"derived {when} by `python -m vcr.plan --budget --derive-figures` from "
        f"{len(measured)} benchmark files of {plan.work} (cpu_time, extrapolated to the end)"
    )
    groups: dict[str, dict[str, list[tuple[float, float]]]] = {}

    def add(group, key, work, cpu):
        groups.setdefault(group, {}).setdefault(key, []).append((work, cpu))

    for jid, m in measured.items():
        job, cpu = jobs[jid], m["cpu_s"]
        if job.rule == "pretrain" and job.note != "import":
            key = jid.split("/benchmarks/pretrain/")[1][: -len(".tsv")]
            pre = plan.pretrain[key]
            recipe = get_recipe(pre.spec.recipe, **_sets(pre.overrides))
            images = recipe.epochs * _images(fig, pre.spec.dataset, "train")
            add("train_images_per_s", pre.spec.recipe, images, cpu - start - job.hosted_s)
        elif job.rule == "probe" and plan.sc.get("probe_in_pretrain"):
            add("job_s", "probe_staged", 1, cpu)  # its work was measured in pretrain's CPU
        elif job.rule == "probe":
            protocol = Path(jid).stem.split("-", 1)[0]
            n = int(job.note.split()[0])
            add("probe_s", protocol, n, cpu - start)
        elif job.rule == "collapse":
            add("single", "collapse_s", 1, cpu - start)
        elif job.rule == "two_moons":
            seeds, _, rest = job.note.partition(" seeds x ")
            add("single", "two_moons_epochs_per_s", int(seeds) * int(rest.split()[0]), cpu - start)
        else:
            key = "prepare_data" if job.rule == "prepare_data" else job.rule
            add("job_s", key, 1, cpu)
    out: dict[str, Any] = {
        "start_s": _fig(
            start, f"CPU s (user + sys) of `python -c 'import vcr.train, vcr.probes'`, {when}"
        )
    }
    for group, entries in groups.items():
        for key, pairs in sorted(entries.items()):
            work = sum(w for w, _ in pairs)
            cpu = sum(c for _, c in pairs)
            n = len(pairs)
            if group == "train_images_per_s":
                value, what = work / cpu, f"{work:,} images / {cpu:.1f} CPU s over {n} runs"
            elif group in ("probe_s", "job_s"):
                value, what = cpu / work, f"{cpu:.1f} CPU s / {work} over {n} jobs"
            elif key == "two_moons_epochs_per_s":
                value, what = work / cpu, f"{work:,} epochs / {cpu:.1f} CPU s over {n} jobs"
            else:
                value, what = cpu / work, f"{cpu:.1f} CPU s over {n} jobs"
            entry = _fig(value, f"{what}; {src}")
            if group == "single":
                out[key] = entry
            else:
                out.setdefault(group, {})[key] = entry
    return out


def _fig(value: float, source: str) -> dict:
    return {"value": float(f"{value:.4g}"), "basis": "measured", "source": source}
