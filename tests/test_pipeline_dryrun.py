"""The Snakemake DAG: `snakemake -n` job lists against vcr.plan and against the counts derived
from vcr/design.yaml (tests/design_counts.py).

Each dry run writes nothing outside a temporary work/results folder (config work_root /
results_root), so the repository's own work/ state never changes the job list. Slow tests (every
scale and target, the paper DAG) run in CI: `pytest -m slow tests/test_pipeline_dryrun.py`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from design_counts import expected_jobs

from vcr import plan as P

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = shutil.which("snakemake")
pytestmark = pytest.mark.skipif(SNAKEMAKE is None, reason="snakemake is not installed")


def _configfile(tmp_path: Path) -> Path:
    cfg = {"work_root": str(tmp_path / "work"), "results_root": str(tmp_path / "results")}
    path = tmp_path / "isolated.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def snakemake(*args, tmp_path: Path, check=True) -> subprocess.CompletedProcess:
    """Run snakemake from the repository root; targets must come first in ``args``."""
    cmd = [SNAKEMAKE, *args, "--nolock", "--configfile", str(_configfile(tmp_path))]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc


def job_stats(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run -> {rule: count} (without the total)."""
    lines = output.splitlines()
    start = lines.index("Job stats:")
    stats = {}
    for line in lines[start + 3 :]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        stats[parts[0]] = int(parts[1])
    return stats


def dry_run(target: str, tmp_path: Path, scale: str) -> dict[str, int]:
    proc = snakemake(
        target, "-n", "--quiet", "rules", "--config", f"scale={scale}", tmp_path=tmp_path
    )
    return job_stats(proc.stdout + proc.stderr)


def plan_for(tmp_path: Path, scale: str) -> P.Plan:
    cfg = P.deep_update(
        P.load_config(ROOT / "config.yaml"), yaml.safe_load(_configfile(tmp_path).read_text())
    )
    return P.build_plan(cfg, scale)


def test_job_stats_parser():
    text = "x\nJob stats:\njob      count\n-----  -----\nprobe 3\npretrain 2\ntotal 5\n"
    assert job_stats(text) == {"probe": 3, "pretrain": 2}


def test_table3_runs_only_what_table3_needs(tmp_path):
    stats = dry_run("table3", tmp_path, "mini")
    expected = {**plan_for(tmp_path, "mini").table_jobs("table3"), "table3": 1}
    assert stats == expected
    assert "probe" not in stats and "two_moons" not in stats


def test_study_runs_its_cells_and_report_and_nothing_else(tmp_path):
    stats = dry_run("study", tmp_path, "mini")
    study = plan_for(tmp_path, "mini").study
    # one study_cell job per setting (its seeds' runs and probes), no pretrain or probe job
    assert len(study.cells) * len(study.settings["seeds"]) == len(study.pretrain)
    expected = {"prepare_data": len(study.datasets), "study_cell": len(study.cells)}
    assert stats == {**expected, "study_spec": 1, "study_report": 1, "study": 1}


@pytest.mark.slow
def test_study_at_another_scale_says_where_it_runs(tmp_path):
    proc = snakemake("study", "-n", "--config", "scale=cifar", tmp_path=tmp_path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "study.scale" in out and "Job stats" not in out


def test_a_bad_config_fails_before_any_job_naming_the_key(tmp_path):
    proc = snakemake("-n", "--config", "scale=huge", tmp_path=tmp_path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "huge" in out and "scale" in out
    assert "Job stats" not in out


@pytest.mark.slow
@pytest.mark.parametrize("scale", P.SCALES)
def test_every_target_lists_the_planned_jobs(tmp_path, scale):
    plan = plan_for(tmp_path, scale)
    expected = expected_jobs(scale)
    for target in P.TARGETS:
        stats = dry_run(target, tmp_path, scale)
        assert stats == {**plan.table_jobs(target), target: 1}, target
        assert plan.table_jobs(target) == expected[target], target
    stats = dry_run("all", tmp_path, scale)
    assert sum(stats.values()) == plan.total_jobs() == expected["all"]


def _materialise(plan: P.Plan, mtime: float) -> None:
    """Create every output of the plan as an empty file with one mtime (all up to date)."""
    files = [*{m for e in plan.evals.values() for m in e.manifests}]
    files += [plan.manifest(d) for d in sorted(plan.datasets)]
    for key in plan.pretrain:
        files += [f"{plan.run_dir(key)}/backbone.pt", f"{plan.run_dir(key)}/final.json"]
    files += list(plan.evals)
    files += [plan.spec_path(t) for t in P.TABLES]
    files += list(plan.two_moons.values())
    files += plan.all_targets()
    for f in files:
        Path(f).parent.mkdir(parents=True, exist_ok=True)
        Path(f).touch()
        os.utime(f, (mtime, mtime))


@pytest.mark.slow
def test_touching_the_renderer_reruns_only_the_rendering_jobs(tmp_path):
    plan = plan_for(tmp_path, "mini")
    render = ROOT / "vcr" / "tables" / "render.py"
    if not render.exists():
        pytest.skip("vcr/tables/render.py not there yet")
    code = (*P.RENDER_CODE, *P.FIGURE_CODE, *P.CLAIMS_CODE, *P.REPORT_CODE)
    newest_code = max(os.stat(ROOT / p).st_mtime for p in code)
    _materialise(plan, newest_code + 100)
    args = ("all", "-n", "--quiet", "rules", "--rerun-triggers", "mtime")
    proc = snakemake(*args, tmp_path=tmp_path)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    st = os.stat(render)
    try:
        os.utime(render, (st.st_atime, newest_code + 200))  # "touch" the renderer
        stats = job_stats(snakemake(*args, tmp_path=tmp_path).stdout)
    finally:
        os.utime(render, (st.st_atime, st.st_mtime))
    # the ledger selects cells with the same renderer code, and the report's pictures use it too
    # (vcr.plan.REPORT_CODE)
    assert stats == {
        "render_table": len(P.TABLES),
        "report_figures": len(P.TABLES),
        "claims_ledger": 1,
        "all": 1,
    }


@pytest.mark.slow
def test_paper_dry_run_through_the_slurm_profile_lists_resources(tmp_path):
    proc = snakemake("-n", "--profile", "slurm", tmp_path=tmp_path)
    out = proc.stdout + proc.stderr
    stats = job_stats(out)
    plan = plan_for(tmp_path, "paper")
    assert sum(stats.values()) == plan.total_jobs()
    # a multi-node ImageNet pretraining (GPUs per node as gres, one launcher task per node) and
    # a single-GPU probe, with their resources
    assert "nodes=2" in out and "mpi=srun" in out and "gres=gpu:8" in out and "tasks=2" in out
    assert "cpus_per_gpu=8" in out and "runtime=2880" in out


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-m", "slow or not slow", "-q"]))
