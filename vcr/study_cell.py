"""One cell of the eq. 2 / Algorithm 1 study in one process: the seeds of one (arch, convention,
alpha, beta) setting, each trained and then probed, exactly as the ``pretrain`` and ``probe``
rules' CLIs would do it one process each (``workflow_scripts/study_cell.py``, rule
``study_cell``; the cell's description comes from :meth:`vcr.plan.study.StudyPlan.cell_job`).

Why: at the mini scale a process costs ~3 CPU s before its first step (importing torch, and
torch._dynamo, which every torch optimizer imports on its first call), as much as a mini
ConvNeXt run's whole training, and the study has 246 runs, each probed. A cell of 3 seeds pays
it once instead of six times; nothing else changes: the same ``vcr.train.run`` and
``vcr.probes.evaluate_run`` calls with the same arguments write the same run folders and probe
records (tests/test_study_cell.py compares them bit for bit with the one-process-per-job path).
The run a failure or a stop signal interrupts resumes from its ``checkpoint.pt`` when the job is
rerun; the cell's runs finished before it are trained again, because Snakemake removes a failed
job's outputs and a finished run keeps no checkpoint (at most two runs: ~1.5 min of mini ViT).
"""

from __future__ import annotations

import time

from vcr.cli import parse_sets


def run_cell(cell: dict, *, threads: int | None = None, log=print) -> None:
    """Train, then probe, every run of ``cell`` in order (raises ``vcr.preemption.Preempted``
    from the run a stop signal interrupts; the runs before it are complete)."""
    from vcr.probes import evaluate_call
    from vcr.records import RunSpec, write_records
    from vcr.train import run

    runs = cell["runs"]
    for i, r in enumerate(runs, 1):
        t0 = time.perf_counter()
        log(f"study cell {cell['cell']}: run {i}/{len(runs)} {r['out']}", flush=True)
        run(
            RunSpec.from_dict(r["spec"]),
            r["out"],
            manifest=r["manifest"],
            overrides=parse_sets(r["overrides"]),
            init_weights=None,
            device=r["device"],
            threads=threads,
        )
        write_records(r["probe"]["out"], evaluate_call(r["out"], r["probe"], threads=threads))
        log(
            f"study cell {cell['cell']}: run {i} done in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
