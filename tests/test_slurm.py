"""The slurm/ profile and the local-SLURM CI scripts.

Fast tests check the profile's settings against what a working SLURM needs (facts in
../shared/SLURM_LOCAL.md). The real test (`-m slow`, root + apt + no running slurmctld of
someone else) brings up a one-node SLURM, runs a mini target through `snakemake --profile
slurm` and checks the sbatch job ids: it is `.ci/pipeline_checks.sh slurm`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from vcr import plan as P
from vcr.plan import resources as R

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "slurm" / "config.yaml"


@pytest.fixture(scope="module")
def profile():
    return yaml.safe_load(PROFILE.read_text())


def _min_job_age() -> int:
    text = (ROOT / ".ci" / "slurm_up.sh").read_text()
    return int(re.search(r"^MinJobAge=(\d+)$", text, re.M).group(1))


def test_profile_uses_the_slurm_executor_and_selects_the_paper_scale(profile):
    assert profile["executor"] == "slurm"
    assert "scale=paper" in profile["config"]
    assert profile["jobs"] >= 1
    # retries pair with the trainer's resume from checkpoint.pt
    assert profile["retries"] >= 1


def test_profile_polls_with_squeue_within_min_job_age(profile):
    # without slurmdbd, sacct fails and Snakemake waits forever; squeue needs the job to be
    # still known: 3 x init seconds must stay <= MinJobAge or the plugin falls back to sacct
    assert profile["slurm-status-command"] == "squeue"
    assert 3 * profile["slurm-init-seconds-before-status-checks"] <= _min_job_age()


def test_profile_default_resources_are_cheap_and_valid(profile):
    res = profile["default-resources"]
    assert "slurm_partition" in res
    for bad in ("gpus", "gres"):  # gpus: breaks the job step; GPUs are per rule
        assert bad not in res
    plan = P.build_plan(P.load_config(ROOT / "config.yaml"), "paper")
    for rule in ("pretrain", "probe", "collapse", "two_moons", "prepare_data"):
        rr = plan.rule_resources(rule)
        # a constant disk_mb on every rule: the built-in default stats every input of every job
        assert isinstance(rr["disk_mb"], int), rule
        for key in ("mem_mb", "runtime"):
            assert key in rr, (rule, key)
    # the trainer checkpoints and exits on SIGURG: every job that trains asks for it
    for key, job in plan.pretrain.items():
        res = plan.pretrain_resources(key)
        assert ("--signal=URG@" in res["slurm_extra"]) == (not job.init_weights), key


def test_config_resources_use_plugin_names(profile):
    cfg = P.load_config(ROOT / "config.yaml")
    for scale in P.SCALES:
        for name, block in (cfg["scales"][scale].get("resources") or {}).items():
            assert "gpus" not in block, f"scales.{scale}.resources.{name}: use gpu, not gpus"
            assert set(block) <= set(R.RESOURCE_KEYS)


def test_multi_node_jobs_carry_mpi_and_tasks():
    plan = P.build_plan(P.load_config(ROOT / "config.yaml"), "paper")
    multi = [k for k in plan.pretrain if plan.pretrain_resources(k)["nodes"] > 1]
    assert multi
    for key in multi[:5]:
        eff = R.effective(plan.pretrain_resources(key))
        # mpi + tasks = one srun task per node; tasks_per_gpu=0 keeps the plugin from adding
        # --ntasks-per-gpu; gpu (total) not gpus
        assert eff["mpi"] == "srun" and eff["tasks"] == eff["nodes"] == 2
        assert eff["tasks_per_gpu"] == 0 and "gpus" not in eff and eff["gres"] == "gpu:8"


# A node of the cluster the paper scale is sized for: 8 GPUs, 512 GB (of which ~500 GB usable
# by jobs), up to 128 cores.
NODE = {"gpus": 8, "mem_mb": 500_000, "cpus": 128}


def _sbatch_flag(line: str, flag: str):
    m = re.search(rf"{re.escape(flag)}[= ](\S+)", line)
    return m.group(1) if m else None


def test_the_sbatch_lines_the_plugin_emits_for_each_kind_of_job():
    """Built by the plugin's own functions (vcr.plan.sbatch) from the rules' resources at paper
    scale: per node, each multi-node job fits a 2 x 8 GPU, 512 GB layout."""
    from vcr.plan.sbatch import job_kinds, sbatch_line

    plan = P.build_plan(P.load_config(ROOT / "config.yaml"), "paper")
    lines = {label: sbatch_line(rule, res) for label, rule, res in job_kinds(plan)}
    multi = [v for k, v in lines.items() if "2 nodes x 8 GPUs" in k]
    assert multi, lines
    for line in multi:
        assert " --nodes=2 " in line and " --ntasks=2 " in line  # one launcher per node
        gres = _sbatch_flag(line, "--gres")
        assert gres == "gpu:8" and "--gpus" not in line  # per node, never the job total
        assert int(_sbatch_flag(line, "--mem")) <= NODE["mem_mb"]  # --mem is per node
        assert int(_sbatch_flag(line, "--cpus-per-gpu")) * 8 <= NODE["cpus"]
        assert "--ntasks-per-gpu" not in line and "--signal=URG@600" in line
    (single8,) = [v for k, v in lines.items() if k.startswith("pretrain (pretrain, 8 GPU(s), e.g.")]
    # --gpus is the job's total: one node, or SLURM may spread it
    assert " --gpus=8" in single8 and " --nodes=1 " in single8 and "--gres" not in single8
    assert int(_sbatch_flag(single8, "--mem")) <= NODE["mem_mb"]
    for label in ("probe sgd", "probe lbfgs", "probe adamw", "probe finetune", "collapse"):
        line = lines[label]
        assert " --gpus=1" in line and "--cpus-per-gpu=8" in line, (label, line)
        assert "--signal" not in line  # no trainer to checkpoint
    imported = lines["pretrain (import_weights, 0 GPU(s), e.g. tv_resnet50_v2)"]
    for label in ("prepare_data", "two_moons", "render_table", "classifier_metric"):
        line = lines[label]
        assert "--gpus" not in line and "--gres" not in line and "--ntasks=1" in line, label
    assert "--gpus" not in imported and "--signal" not in imported


def test_ci_scripts_are_executable_shell():
    for name in ("slurm_up.sh", "slurm_down.sh", "pipeline_checks.sh"):
        path = ROOT / ".ci" / name
        assert os.access(path, os.X_OK), name
        if shutil.which("bash"):
            subprocess.run(["bash", "-n", str(path)], check=True)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("apt-get"), reason="needs root + apt")
def test_real_slurm_runs_a_mini_target_through_sbatch():
    proc = subprocess.run(
        [str(ROOT / ".ci" / "pipeline_checks.sh"), "slurm"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    ids = re.search(r"sbatch job ids: ([0-9 ]+)", out).group(1).split()
    assert len(ids) == 8
