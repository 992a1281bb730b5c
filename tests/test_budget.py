"""vcr.plan.budget: cost per job from the plan and vcr/plan/throughput.yaml, the schedule at a
cluster size, and the comparison with Snakemake's benchmark files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from vcr import plan as P
from vcr.names import LEDGERS, TARGETS
from vcr.plan import budget as B
from vcr.plan.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config():
    return P.load_config(ROOT / "config.yaml")


@pytest.fixture(scope="module")
def paper(config, tmp_path_factory):
    plan = P.build_plan(
        {**config, "work_root": str(tmp_path_factory.mktemp("w")), "results_root": "unused"},
        "paper",
    )
    return plan, B.make_budget(plan)


def test_every_job_of_the_plan_has_an_estimate_at_every_scale(config, tmp_path, paper):
    for scale in P.SCALES:
        if scale == "paper":
            plan, b = paper
        else:
            roots = {"work_root": str(tmp_path), "results_root": str(tmp_path / "r")}
            plan = P.build_plan({**config, **roots}, scale)
            b = B.make_budget(plan)
        assert not b.unknown, (scale, b.unknown[:3], b.figures.missing)
        # the plan's own counts: every job of `all` but the `all` rule
        assert b.total.jobs == plan.total_jobs() - 1, scale
        for row in b.rows:
            assert row.jobs == sum(plan.table_jobs(row.target).values()), (scale, row.target)


def test_every_figure_says_where_it_comes_from():
    data = yaml.safe_load(B.FIGURES_FILE.read_text())
    for scale in data["scales"]:
        fig = B.Figures(scale)
        for group, entries in fig.figures.items():
            items = {group: entries} if "value" in entries else entries
            for name, entry in items.items():
                assert entry["basis"] in B.BASES, (scale, name)
                assert entry.get("source"), (scale, name)
                assert float(entry["value"]) >= 0, (scale, name)
    for name, sizes in data["datasets"].items():
        assert sizes["basis"] in B.BASES, name
        assert min(sizes[s] for s in ("train", "val", "test")) > 0, name


def test_the_paper_anchor_convnext_t_takes_48_hours_on_16_gpus(paper):
    plan, b = paper
    keys = [
        k
        for k, j in plan.pretrain.items()
        if j.spec.recipe == "tv_convnext_tiny" and not j.init_weights
    ]
    job = b.jobs[f"{plan.work}/benchmarks/pretrain/{keys[0]}.tsv"]
    assert job.gpus == 16
    start = B.Figures("paper").get("start_s")
    assert (job.seconds - start) / 3600 == pytest.approx(48.0, rel=0.01)
    assert job.gpu_s / 3600 == pytest.approx(48 * 16 + 16 * start / 3600, rel=0.01)


def test_paper_totals_and_the_papers_own_figure(paper):
    _, b = paper
    assert [r.target for r in b.rows] == list(TARGETS)
    tables = [r for r in b.rows if r.target not in LEDGERS]  # the ledger needs every table's runs
    shared = sum(r.gpu_h for r in tables)
    assert b.total.gpu_h < shared  # Table 5 reuses Table 1's runs: counted once in the total
    assert b.total.gpu_h > max(r.gpu_h for r in tables)
    (ledger,) = [r for r in b.rows if r.target in LEDGERS]
    assert ledger.gpu_h == pytest.approx(b.total.gpu_h)
    assert b.figures.paper_total["value"] == 92160
    text = B.format_budget(b)
    assert "92,160 GPU-hours" in text and "published" in text and "assumed" in text
    # wall clock on 64 GPUs is at least GPU-hours / 64, and no more than running one at a time
    assert b.total.wall_h >= b.total.gpu_h / 64
    assert b.total.wall_h <= sum(j.seconds for j in b.jobs.values()) / 3600


def test_datasets_sizes_agree_with_the_loaders_constants():
    from vcr.data import imagenet, inat

    sizes = B.Figures("paper").datasets
    n_train, n_val, _ = imagenet.N_TRAIN, imagenet.N_VAL, imagenet.N_CLASSES
    assert sizes["imagenet"]["train"] + sizes["imagenet"]["val"] == n_train  # 10/class held out
    assert sizes["imagenet"]["test"] == n_val
    assert sizes["inat18"]["train"] + sizes["inat18"]["val"] == inat.N_TRAIN
    assert sizes["inat18"]["test"] == inat.N_VAL


def test_finetune_epochs_default_matches_the_probe():
    from vcr.probes.finetune import FinetuneConfig

    assert FinetuneConfig().epochs == B.FINETUNE_EPOCHS


def _job(jid, secs, gpus=0, cpus=1, deps=()):
    return B.JobCost(jid, "x", secs, gpus, cpus, tuple(deps))


def test_simulate_schedules_a_dag_on_the_cluster():
    jobs = {
        "a": _job("a", 10, gpus=2),
        "b": _job("b", 10, gpus=2),
        "c": _job("c", 5, gpus=1, deps=["a"]),
        "d": _job("d", 1, cpus=1),
    }
    assert B.simulate(jobs, jobs, gpus=4, cpus=1) == 15  # a, b together; then c
    assert B.simulate(jobs, jobs, gpus=2, cpus=1) == 25  # a (critical path first), b, c
    assert math.isinf(B.simulate(jobs, jobs, gpus=1, cpus=1))  # a needs 2 GPUs
    assert B.simulate(jobs, {"d"}, gpus=0, cpus=1) == 1


def test_measured_costs_come_from_benchmark_files(tmp_path, config):
    plan = P.build_plan(
        {**config, "work_root": str(tmp_path / "work"), "results_root": str(tmp_path / "r")}, "mini"
    )
    b = B.make_budget(plan, ["table3"])
    assert b.total.measured_jobs == 0
    table3 = B.target_jobs(plan, b.jobs, "table3")
    job = next(b.jobs[j] for j in sorted(table3) if b.jobs[j].rule == "pretrain")
    Path(job.id).parent.mkdir(parents=True)
    Path(job.id).write_text("s\th:m:s\tmax_rss\tcpu_time\n12.5\t0:00:12\t100\t10.0\n")
    b = B.make_budget(plan, ["table3"])
    row = b.rows[0]
    assert row.measured_jobs == 1 and row.measured_cpu_h == pytest.approx(10.0 / 3600)
    assert row.estimate_of_measured_h == pytest.approx(job.cpu_s / 3600)
    text = B.format_budget(b)
    assert "measured CPU-h" in text and "estimate / measured" in text


def test_cli_prints_the_budget(capsys):
    assert main(["--budget", "--scale", "cifar", "--targets", "table3", "figure2"]) == 0
    out = capsys.readouterr().out
    assert "Budget at scale cifar" in out and "| table3" in out and "| total" in out
    assert "train_images_per_s.resnet32_lt" in out and "wall-h (1 GPUs, 8 cores)" in out
