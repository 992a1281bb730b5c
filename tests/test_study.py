"""The eq. 2 / Algorithm 1 study: its plan (vcr.plan.study) and its analysis (vcr.study) on
constructed records."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
from design_counts import expected_jobs
from scipy import stats

from vcr import io
from vcr import plan as P
from vcr import study as S
from vcr.errors import ConfigError
from vcr.plan.study import PRETRAIN_METRIC
from vcr.records import RunSpec, make_record

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config():
    return P.validate_config(P.load_config(ROOT / "config.yaml"))


@pytest.fixture(scope="module")
def mini(config):
    return P.build_plan(config, "mini")


# ------------------------------------------------------------------------------- the plan
def test_study_plans_the_full_grid_under_both_conventions(config, mini):
    st, design = mini.study.settings, mini.design
    assert st["alpha"] == list(design.alphas) and st["beta"] == list(design.betas)
    n_grid = len(design.alphas) * len(design.betas)
    archs, seeds = config["study"]["archs"], config["study"]["seeds"]
    assert len(mini.study.pretrain) == len(archs) * (2 * n_grid + 1) * len(seeds) == 246
    assert len(mini.study.evals) == len(mini.study.pretrain)  # one probe job per run
    specs = [job.spec for job in mini.study.pretrain.values()]
    for arch in archs:
        for cov in ("eq2", "alg1"):
            grid = {
                (s.alpha, s.beta) for s in specs if s.arch == arch and s.cov_scale == cov and s.vcr
            }
            assert len(grid) == n_grid
        assert sum(1 for s in specs if s.arch == arch and not s.vcr) == len(seeds)
    # every VCR run folder names its convention; baselines are shared by both conventions
    for key, job in mini.study.pretrain.items():
        assert (f".{job.spec.cov_scale}/" in key) == job.spec.vcr


def test_study_runs_never_meet_the_tables_runs_and_stay_out_of_all(mini):
    assert not set(mini.study.pretrain) & set(mini.pretrain)
    assert not set(mini.study.evals) & set(mini.evals)
    assert {job.spec.recipe for job in mini.study.pretrain.values()} == {"mini_study"}
    # the tables' counts do not include the study (tests/test_plan.py holds them to the design)
    assert mini.total_jobs() == expected_jobs("mini")["all"]
    assert not any("/study/" in p or "mini_study" in p for p in mini.all_targets())


def test_study_jobs_are_found_by_the_pretrain_and_probe_rules(mini):
    key = next(iter(mini.study.pretrain))
    job = mini.pretrain_job(key)
    assert job.manifest.endswith("/data/mini_objects/manifest.json")
    assert "epochs=4" in job.overrides or "epochs=30" in job.overrides
    record = mini.study.records[0]
    ev = mini.probe_job(key, "lbfgs", "mini_color+mini_count+mini_size")
    assert ev.outputs == (record,)
    assert [d for d, _ in ev.datasets] == ["mini_color", "mini_count", "mini_size"]
    # their resources are the pretrain rule's (a per-run lookup would raise KeyError here)
    assert mini.rule_resources("pretrain")["mem_mb"] == 2000


def test_a_cell_is_the_seeds_of_one_setting_with_the_rules_arguments(config, mini):
    study = mini.study
    assert len(study.cells) == 2 * (2 * 20 + 1) == 82
    assert study.cell_members() == [f"seed{s}" for s in config["study"]["seeds"]]
    cell, keys = next((c, k) for c, k in study.cells.items() if "blocks.alg1" in c)
    job = study.cell_job(cell, mini)
    assert [r["out"] for r in job["runs"]] == [mini.run_dir(k) for k in keys]
    for key, r in zip(keys, job["runs"], strict=True):
        pre, ev = (
            mini.pretrain_job(key),
            mini.probe_job(key, "lbfgs", "mini_color+mini_count+mini_size"),
        )
        # what the pretrain and probe rules would pass their CLIs (rules/common.smk)
        assert r["spec"] == pre.spec.to_dict() and r["manifest"] == pre.manifest
        assert r["overrides"] == list(pre.overrides) and r["device"] == "cpu"
        p = r["probe"]
        assert (p["out"],) == ev.outputs and p["settings"] == ev.settings
        assert p["manifests"] == list(ev.manifests)
        assert p["feature_cache"] == f"{mini.work}/features/{key}"
    assert study.cell_manifests(cell) == [pre.manifest, *ev.manifests]


def test_per_arch_lengths_come_from_the_config(config, mini):
    by_arch = {}
    for job in mini.study.pretrain.values():
        by_arch.setdefault(job.spec.arch, set()).add(job.overrides)
    for arch, overrides in by_arch.items():
        assert len(overrides) == 1
        want = config["study"]["recipe_overrides"][arch]["epochs"]
        assert f"epochs={want}" in next(iter(overrides))


def test_the_study_runs_at_its_own_scale_only(config):
    for scale in ("cifar", "paper"):
        plan = P.build_plan(config, scale)
        assert plan.study is None
        with pytest.raises(ConfigError, match="not in the"):
            plan.pretrain_job("supervised/mini_convnext/x/mini_study/none/a0_b0_lr0/seed0")


def test_a_study_that_would_share_a_tables_run_folder_is_refused(config):
    # Table 2's mini VCR run: mini_convnext on mini_objects/super, atto_superclass_200ep, eq2
    cfg = copy.deepcopy(config)
    cfg["study"] = {
        **cfg["study"], "recipe": "atto_superclass_200ep", "archs": ["mini_convnext"],
        "alpha": [0.64], "beta": [0.04], "recipe_overrides": {},
    }  # fmt: skip
    with pytest.raises(ConfigError, match="also a table's run"):
        P.build_plan(cfg, "mini")


def test_unknown_recipe_override_key_is_named(config):
    cfg = copy.deepcopy(config)
    cfg["study"] = {**cfg["study"], "recipe_overrides": {"mini_convnxt": {"epochs": 2}}}
    with pytest.raises(ConfigError, match="mini_convnxt"):
        P.build_plan(cfg, "mini")


def test_schema_rejects_a_bad_study_block(config):
    cfg = copy.deepcopy(config)
    cfg["study"] = {**cfg["study"], "cov_scales": ["eq3"]}
    with pytest.raises(ConfigError, match="study.cov_scales"):
        P.validate_config(cfg)


# ------------------------------------------------------------------------------- analysis
ALPHAS, BETAS, SEEDS = [1.28, 0.16], [0.16, 0.04, 0.01], [0, 1, 2]
PROBES = ["mini_color", "mini_size"]


def _value(cov, a, b, seed, metric):
    """Constructed accuracies: eq2 depends on alpha only, alg1 on alpha and beta; seed noise."""
    rng = random.Random(hash((cov, a, b, seed, metric)) % 2**32)
    base = {"pretrain": 0.9, "mini_color": 0.6, "mini_size": 0.5}[metric] + 0.01 * seed
    if cov == "none":
        return base
    effect = 0.02 * a if cov == "eq2" else 0.2 * b + 0.02 * a
    return base + effect + (0.0 if cov == "eq2" else 0.002 * rng.random())


def _write_run(root: Path, spec: RunSpec, probe_record: str, *, val_of=_value, test_of=_value):
    run_dir = root / spec.relpath()
    cov = spec.cov_scale if spec.vcr else "none"
    io.write_json(run_dir / "run.json", {"params": spec.to_dict()})
    v = dict(val=val_of(cov, spec.alpha, spec.beta, spec.seed, PRETRAIN_METRIC))
    t = test_of(cov, spec.alpha, spec.beta, spec.seed, PRETRAIN_METRIC)
    io.write_json(run_dir / "final.json", {"val_top1": v["val"], "test_top1": t, "metric": "top1"})
    if spec.vcr:
        (run_dir / "log.jsonl").write_text('{"epoch": 0, "vcr/l_var": 0.5, "vcr/l_cov": 0.25}\n')
    records = [
        make_record(
            spec,
            eval_dataset=p,
            protocol="lbfgs",
            metric="top1",
            val=val_of(cov, spec.alpha, spec.beta, spec.seed, p),
            test=test_of(cov, spec.alpha, spec.beta, spec.seed, p),
        )  # fmt: skip
        for p in PROBES
    ]
    io.write_json(run_dir / probe_record, records)
    return {
        "run": spec.to_dict(),
        "final": str(run_dir / "final.json"),
        "record": str(run_dir / probe_record),
    }


def _spec(tmp_path, **kw) -> dict:
    settings = {
        "archs": ["mini_convnext"], "pretrain": "mini_objects/super", "probes": PROBES,
        "protocol": "lbfgs", "cov_scales": ["eq2", "alg1"], "seeds": SEEDS, "recipe": "mini_study",
        "recipe_overrides": {}, "alpha": ALPHAS, "beta": BETAS, "placement": "blocks", "delta": 0.0,
    }  # fmt: skip
    base = dict(
        scale="mini", method="supervised", arch="mini_convnext", dataset="mini_objects",
        target="super", recipe="mini_study",
    )  # fmt: skip
    specs = [RunSpec(**base, seed=s) for s in SEEDS] + [
        RunSpec(**base, placement="blocks", alpha=a, beta=b, seed=s, cov_scale=c)
        for c in ("eq2", "alg1") for a in ALPHAS for b in BETAS for s in SEEDS
    ]  # fmt: skip
    runs = [_write_run(tmp_path / "runs", s, "eval/lbfgs-x.json", **kw) for s in specs]
    return {"settings": settings, "runs": runs}


def test_report_writes_every_planned_output(tmp_path, mini):
    spec = _spec(tmp_path)
    out = tmp_path / "results"
    S.write_report(spec, out)
    # the plan's list of outputs (rules/study.smk) is exactly what the report writes
    planned = [Path(p).name for files in mini.study.outputs().values() for p in files]
    planned = [p for p in planned if "mini_count" not in p]  # this spec probes two datasets
    assert sorted(p.name for p in out.iterdir()) == sorted(planned)
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _tables(spec):
    data = S.StudyData(S.load_runs(spec), spec["settings"])
    return {
        "best": S.best_table(data), "effects": S.effects_table(data),
        "conventions": S.conventions_table(data), "settings": S.settings_table(data),
    }  # fmt: skip


def test_best_setting_is_chosen_on_val_only(tmp_path):
    # test values that would pick another setting must not move the choice
    def test_of(cov, a, b, seed, metric):
        return 1.0 - _value(cov, a, b, seed, metric)

    best = {(r["metric"], r["cov_scale"]): r for r in _tables(_spec(tmp_path))["best"]}
    flipped = _tables(_spec(tmp_path / "f", test_of=test_of))["best"]
    for r in flipped:
        b = best[(r["metric"], r["cov_scale"])]
        assert (r["alpha"], r["beta"]) == (b["alpha"], b["beta"])
    # the val-best: eq2 grows with alpha only (ties over beta go to the first, smallest beta);
    # alg1 with alpha and beta
    assert (best[("mini_color", "eq2")]["alpha"], best[("mini_color", "eq2")]["beta"]) == (
        1.28,
        0.01,
    )
    assert (best[("mini_color", "alg1")]["alpha"], best[("mini_color", "alg1")]["beta"]) == (
        1.28,
        0.16,
    )
    r = best[("mini_color", "alg1")]
    assert r["delta_points"] == pytest.approx(100 * (0.2 * 0.16 + 0.02 * 1.28), abs=0.2)


def test_effects_see_which_factor_acts(tmp_path):
    tables = _tables(_spec(tmp_path))
    eff = {(r["metric"], r["cov_scale"]): r for r in tables["effects"]}
    # eq2: the constructed values do not depend on beta at all within (alpha, seed) blocks
    assert eff[("mini_size", "eq2")]["p_beta"] == 1.0
    assert eff[("mini_size", "alg1")]["p_beta"] < 0.05
    assert eff[("mini_size", "alg1")]["range_points"] > eff[("mini_size", "eq2")]["range_points"]
    conv = {r["metric"]: r for r in tables["conventions"]}
    assert conv["mini_size"]["mean_alg1_minus_eq2_points"] > 0
    assert conv["mini_size"]["n_pairs"] == len(ALPHAS) * len(BETAS) * len(SEEDS)
    settings = [r for r in tables["settings"] if r["cov_scale"] == "eq2"]
    assert all(r["l_var"] == 0.5 and r["l_cov"] == 0.25 for r in settings)
    assert all(r["grad_ratio_median"] is None for r in settings)  # not logged by these runs


def test_paired_p_is_scipys_paired_t_test():
    a, b = [0.5, 0.61, 0.7], [0.48, 0.55, 0.69]
    assert S.paired_p(a, b) == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert S.paired_p([0.5, 0.6], [0.5, 0.6]) == 1.0  # identical: no difference at all
    assert S.paired_p([0.5], [0.4]) is None  # one pair says nothing


def test_missing_runs_are_named(tmp_path):
    spec = _spec(tmp_path)
    Path(spec["runs"][4]["record"]).unlink()
    with pytest.raises(FileNotFoundError, match="snakemake study"):
        S.load_runs(spec)


def test_a_slice_of_the_study_reuses_the_full_studys_run_folders(config, mini):
    cfg = P.load_config(ROOT / "config.yaml")
    cfg = P.deep_update(cfg, P.load_config(ROOT / "results/study/convnext_corners.yaml"))
    part = P.build_plan(P.validate_config(cfg), "mini").study
    assert part.results == "results/study/convnext_corners"
    assert len(part.pretrain) == (2 * 2 * 2 + 1) * 3
    for key, job in part.pretrain.items():
        assert mini.study.pretrain[key] == job  # same folder, same recipe overrides
