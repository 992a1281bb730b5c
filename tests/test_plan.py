"""vcr.plan: config -> runs, evaluations, table specs, resources (no Snakemake needed)."""

from __future__ import annotations

import copy
import csv
import re
from pathlib import Path

import pytest
from design_counts import expected_jobs

from vcr import plan as P
from vcr.errors import ConfigError
from vcr.names import PROBE_PROTOCOLS, TWO_MOONS_METHODS
from vcr.plan import resources as R
from vcr.plan.jobs import format_sets
from vcr.records import RunSpec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config():
    return P.load_config(ROOT / "config.yaml")


@pytest.fixture(scope="module")
def plans(config):
    return {s: P.build_plan(config, s) for s in P.SCALES}


def test_default_scale_is_mini(config):
    assert config["scale"] == "mini"
    assert P.build_plan(config).scale == "mini"


@pytest.mark.parametrize("scale", P.SCALES)
def test_job_counts_follow_the_design_file(plans, scale):
    """The plan's jobs per target and in all, against a count made from vcr/design.yaml and the
    scale's config alone (tests/design_counts.py)."""
    expected = expected_jobs(scale)
    for target in P.TARGETS:
        assert plans[scale].table_jobs(target) == expected[target], target
    assert plans[scale].total_jobs() == expected["all"]


def test_paper_scale_has_the_documented_job_counts(plans):
    # README "Job counts": 4,165 jobs in all, of which these per target
    assert plans["paper"].total_jobs() == 4165
    per_table = {t: sum(plans["paper"].table_jobs(t).values()) for t in P.TARGETS}
    assert per_table == {
        "table1": 588,
        "table2": 1521,
        "table3": 509,
        "table4": 517,
        "table5": 132,
        "table6": 970,
        "figure2": 7,
        "claims": 4151,
    }


def test_mini_counts_follow_the_config(config, plans):
    sc = config["scales"]["mini"]
    n_vcr, n_seeds = len(sc["sweep"]["pairs"]), len(sc["seeds"])
    mini = plans["mini"]
    # Table 1: 3 architectures x (baseline + VCR settings) x seeds, all trained at mini
    assert mini.table_jobs("table1")["pretrain"] == 3 * (1 + n_vcr) * n_seeds
    # one probe job per run (sgd mapped to lbfgs, all stand-ins grouped)
    assert mini.table_jobs("table1")["probe"] == 3 * (1 + n_vcr) * n_seeds
    n_t6 = len(mini.vcr_points("table6"))  # config sweep_overrides.table6
    assert mini.table_jobs("table6")["pretrain"] == 4 * n_t6 * n_seeds
    assert mini.table_jobs("table4")["pretrain"] == 2 * (1 + n_vcr) * n_seeds
    assert mini.table_jobs("table4")["probe"] == 2 * 2 * (1 + n_vcr) * n_seeds  # ft + lbfgs
    # the mini budget: every job of `all` counted once
    assert mini.total_jobs() == (
        len(mini.pretrain)
        + len({id(e) for e in mini.evals.values()})
        + len(mini.datasets)
        + 3 * len(P.TABLES)  # table_spec, render_table, report_figures
        + len(mini.two_moons)
        + 1  # plot_figure2
        + 1  # claims
        + 1  # all
    )
    assert mini.total_jobs() <= 250


def test_run_folders_are_keyed_by_runspec_only(plans):
    for plan in plans.values():
        for key, job in plan.pretrain.items():
            assert key == job.spec.relpath()
            assert job.spec.scale == plan.scale
            assert RunSpec.from_dict(job.spec.to_dict()) == job.spec
        # a run two tables need is one job: Table 5 measures Table 1's ConvNeXt-T runs
        t5 = set(plan.tables["table5"].runs)
        assert t5 <= set(plan.tables["table1"].runs) or not t5


def test_eval_paths_follow_the_contract(plans):
    pat = re.compile(
        r"^work/(mini|rehearsal|cifar|paper)/runs/[^/]+(/[^/]+){6}/eval/"
        r"((lbfgs|sgd|adamw|finetune|classifier)-[A-Za-z0-9_.+]+|collapse/(cdnv|ncc|mi))\.json$"
    )
    for plan in plans.values():
        for path, ev in plan.evals.items():
            assert pat.match(path), path
            assert ev.run in plan.pretrain
            for m in ev.manifests:
                assert m.startswith(f"work/{plan.scale}/data/") and m.endswith("/manifest.json")


def test_table_specs_use_the_contract_keys(plans):
    rows = {
        "table1": [
            "resnet50",
            "resnet50_vcr",
            "convnext_tiny",
            "convnext_tiny_vcr",
            "vit_b_32",
            "vit_b_32_vcr",
        ],
        "table2": ["convnext", "convnext_vcr"],
        "table3": ["resnet32", "resnet32_vcr"],
        "table4": ["simclr", "simclr_vcr", "vicreg", "vicreg_vcr"],
        "table5": ["convnext", "convnext_vcr"],
        "table6": ["vcr1", "vcr2", "vcr3", "vcr4"],
    }
    t1 = ["inat18", "places205", "food101", "cars", "aircraft", "pets", "flowers", "dtd"]
    cols = {
        "table1": t1,
        "table2": ["cifar100", "living_9", "mixed_10", "mixed_13", "geirhos_16", "big_12"],
        "table3": ["cifar10_lt", "cifar100_lt"],
        "table4": ["in1pct", *t1],
        "table5": ["cdnv", "ncc", "mi"],
        "table6": t1[2:],
    }
    for plan in plans.values():
        for t in P.TABLES:
            spec = plan.tables[t].spec
            assert spec["table"] == t and spec["scale"] == plan.scale
            # a row variant (trained baseline, eq2/alg1 rows) stands beside its paper row
            paper_rows = [r.get("paper_key", r["key"]) for r in spec["rows"]]
            assert list(dict.fromkeys(paper_rows)) == rows[t]
            assert len({r["key"] for r in spec["rows"]}) == len(spec["rows"])
            assert [c["key"] for c in spec["columns"]] == cols[t]
            for c in spec["columns"]:
                assert c["metric"]
                assert c["protocol"] in (*PROBE_PROTOCOLS, "classifier", "collapse")


def test_paper_numbers_know_every_spec_cell(plans):
    pytest.importorskip("vcr.tables.paper")
    from vcr.tables.paper import load_paper_numbers

    numbers = load_paper_numbers()
    for t in P.TABLES:
        spec = plans["paper"].tables[t].spec
        for r in spec["rows"]:
            for c in spec["columns"]:
                key = r.get("paper_key", r["key"])
                assert c["key"] in numbers[t][key], (t, r["key"], c["key"])


def test_cifar_scale_runs_only_the_cifar_experiments(plans):
    cifar = plans["cifar"]
    planned = {
        t: [c["key"] for c in cifar.tables[t].spec["columns"] if c["eval_dataset"]]
        for t in P.TABLES
    }
    assert planned == {
        "table1": [],
        "table2": ["cifar100"],
        "table3": ["cifar10_lt", "cifar100_lt"],
        "table4": [],
        "table5": [],
        "table6": [],
    }
    assert set(cifar.datasets) == {"cifar100", "cifar10_lt", "cifar100_lt"}
    assert len(cifar.two_moons) == len(TWO_MOONS_METHODS)


def test_mini_maps_every_column_but_the_imagenet_subsets(plans):
    mini = plans["mini"]
    for t in P.TABLES:
        for c in mini.tables[t].spec["columns"]:
            subset = t == "table2" and c["key"] != "cifar100"
            assert (c["eval_dataset"] is None) == subset, (t, c["key"])


def test_column_match_separates_columns_sharing_a_stand_in(plans):
    spec = plans["mini"].tables["table3"].spec
    a, b = spec["columns"]
    assert a["eval_dataset"] == b["eval_dataset"] == "mini_objects_lt"
    assert a["match"] != b["match"]
    keys = {
        (r["run"]["dataset"], r["run"]["target"]) for r in _record_runs(plans["mini"], "table3")
    }
    assert keys == {(m["dataset"], m["target"]) for m in (a["match"], b["match"])}


def _record_runs(plan, table):
    out = []
    for rec in plan.tables[table].records:
        ev = plan.evals[rec]
        out.append({"run": plan.pretrain[ev.run].spec.to_dict()})
    return out


def test_table2_probes_the_subclasses_of_a_superclass_run(plans):
    for plan in (plans["mini"], plans["cifar"]):
        recs = plan.tables["table2"].records
        assert recs
        for rec in recs:
            ev = plan.evals[rec]
            assert plan.pretrain[ev.run].spec.target == "super"
            assert ev.protocol == "adamw"
            assert "target=sub" in ev.settings


def test_lr_is_swept_only_where_the_paper_sweeps_it(plans):
    paper = plans["paper"]
    lrs = {t: {paper.pretrain[r].spec.lr for r in paper.tables[t].runs} for t in P.TABLES}
    for t in ("table2", "table3", "table6"):
        assert lrs[t] == set(P.load_design().lrs)
    for t in ("table1", "table4", "table5"):
        assert lrs[t] == {0.0}


def test_table1_baselines_import_torchvision_weights_at_paper(plans, config):
    paper = plans["paper"]
    imported = [j for j in paper.pretrain.values() if j.init_weights]
    assert len(imported) == 3
    for job in imported:
        assert job.spec.placement == "none" and job.spec.seed == 0
        assert job.init_weights.startswith(config["data_root"] + "/weights/")
        assert "epochs=0" in job.overrides
        assert job.resource_kind == "import_weights"
        assert paper.pretrain_resources(job.key)["gpu"] == 0
        assert paper.launcher(job.key) == "python"
    assert not any(j.init_weights for j in plans["mini"].pretrain.values())


def test_an_imported_baseline_needs_its_weights_file_named(config):
    cfg = copy.deepcopy(config)
    del cfg["table1"]["weights"]["tv_convnext_tiny"]
    with pytest.raises(ConfigError, match=r"table1\.weights\.tv_convnext_tiny"):
        P.build_plan(cfg, "paper")


def test_resnet50_recipe_switch(config):
    cfg = copy.deepcopy(config)
    cfg["table1"]["resnet50_recipe"] = "tv_resnet50_v1"
    plan = P.build_plan(cfg, "paper")
    match = plan.tables["table1"].spec["rows"][0]["match"]
    assert match["recipe"] == "tv_resnet50_v1"
    w = [j.init_weights for j in plan.pretrain.values() if j.spec.recipe == "tv_resnet50_v1"]
    assert w and w[0].endswith("resnet50-0676ba61.pth")


def test_table1_train_baseline_switch(config):
    cfg = copy.deepcopy(config)
    cfg["scales"]["paper"]["table1_baseline"] = "train"
    plan = P.build_plan(cfg, "paper")
    assert not any(j.init_weights for j in plan.pretrain.values())
    assert plan.table_jobs("table1")["pretrain"] == 3 * (20 + 1) * 3


def test_paper_scale_plans_imported_and_trained_baselines_as_rows_of_their_own(plans):
    spec = plans["paper"].tables["table1"].spec
    rows = {r["key"]: r for r in spec["rows"]}
    for key in ("resnet50", "convnext_tiny", "vit_b_32"):
        imported, trained = rows[key], rows[f"{key}_trained"]
        assert imported["match"]["init"] == "torchvision" and trained["match"]["init"] == "scratch"
        assert imported["paper_key"] == trained["paper_key"] == key  # the paper's row beside both
    runs = [plans["paper"].pretrain[r].spec for r in plans["paper"].tables["table1"].runs]
    trained_base = [s for s in runs if s.placement == "none" and s.init == "scratch"]
    assert len(trained_base) == 3 * 3  # 3 architectures x 3 seeds, the VCR rows' recipe and seeds
    assert {s.seed for s in trained_base} == {0, 1, 2}
    # Table 5 measures the same runs (one job each)
    t5 = {r["key"] for r in plans["paper"].tables["table5"].spec["rows"]}
    assert t5 == {"convnext", "convnext_trained", "convnext_vcr"}
    # a trained baseline and the imported one never share a run folder
    assert len({s.relpath() for s in runs}) == len(runs)


def test_cifar_scale_plans_eq2_and_alg1_side_by_side(plans, config):
    cifar = plans["cifar"]
    for table in ("table2", "table3"):
        spec = cifar.tables[table].spec
        vcr_rows = [r for r in spec["rows"] if r["match"]["placement"] != "none"]
        assert {r["match"]["cov_scale"] for r in vcr_rows} == {"eq2", "alg1"}
        assert len({r.get("paper_key") for r in vcr_rows}) == 1  # one paper VCR number
        runs = [cifar.pretrain[k].spec for k in cifar.tables[table].runs]
        by_cs = {cs: [s for s in runs if s.vcr and s.cov_scale == cs] for cs in ("eq2", "alg1")}
        n_pre = sum(1 for c in spec["columns"] if c["eval_dataset"])  # one pretraining each
        # 20 (alpha, beta) x 2 lr x 3 seeds per pretraining dataset, under each convention
        assert len(by_cs["eq2"]) == len(by_cs["alg1"]) == 20 * 2 * 3 * n_pre
    # the other tables run the scale's one convention; the paper scale sets its own (alg1)
    assert {r["key"] for r in cifar.tables["table6"].spec["rows"]} == {
        "vcr1",
        "vcr2",
        "vcr3",
        "vcr4",
    }
    paper_cs = {j.spec.cov_scale for j in plans["paper"].pretrain.values() if j.spec.vcr}
    assert paper_cs == {config["scales"]["paper"]["cov_scale"]} == {"alg1"}
    mini_cs = {j.spec.cov_scale for j in plans["mini"].pretrain.values() if j.spec.vcr}
    assert mini_cs == {config["cov_scale"]}


def test_the_pretrain_rule_passes_every_runspec_field():
    """rules/pretrain.smk hands each RunSpec field to the trainer flag of the same name."""
    import dataclasses

    from test_names import _script_parser

    rule = (ROOT / "rules" / "pretrain.smk").read_text()
    parser = _script_parser("pretrain")
    flags = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
    for field in dataclasses.fields(RunSpec):
        assert f"{flags[field.name]} {{params.run.{field.name}}}" in rule, field.name


def test_pretrain_jobs_read_the_manifest_of_their_dataset(plans):
    for plan in plans.values():
        for job in plan.pretrain.values():
            assert job.manifest == f"work/{plan.scale}/data/{job.spec.dataset}/manifest.json"


def test_multi_node_resources_start_one_launcher_per_node(plans):
    paper = plans["paper"]
    key = next(k for k, j in paper.pretrain.items() if j.spec.recipe == "tv_convnext_tiny"
               and not j.init_weights)  # fmt: skip
    res = paper.pretrain_resources(key)
    assert res["nodes"] == 2 and res["tasks"] == 2 and res["mpi"] == "srun"
    eff = R.effective(res)
    # GPUs per node as a gres (--gres=gpu:8 per node), never the job total --gpus
    assert eff["tasks_per_gpu"] == 0 and eff["gres"] == "gpu:8" and "gpu" not in eff
    launch = paper.launcher(key)
    # srun gets the layout explicitly (the rule's shell has no SLURM_* allocation variables)
    assert launch.startswith("srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --cpus-per-task=64")
    assert "--kill-on-bad-exit=1" in launch
    assert launch.endswith("python -m vcr.launch --nnodes 2 --nproc-per-node 8")
    assert "$" not in launch  # nothing read from the rule's shell
    assert paper.device("pretrain", key) == "cuda"
    # single node, 8 GPUs
    key = next(k for k, j in paper.pretrain.items() if j.spec.recipe == "atto_in1k_90ep")
    assert paper.launcher(key) == "python -m vcr.launch --nproc-per-node 8"


def test_a_gpu_model_goes_into_the_per_node_gres(config):
    cfg = copy.deepcopy(config)
    cfg["scales"]["paper"]["resources"]["default"]["gpu_model"] = "a100"
    plan = P.build_plan(cfg, "paper")
    multi = next(k for k, j in plan.pretrain.items() if j.spec.recipe == "simclr_100ep")
    assert R.effective(plan.pretrain_resources(multi))["gres"] == "gpu:a100:8"
    single = R.effective(plan.resources.merged("probe", "lbfgs"))
    assert single["gpu"] == 1 and single["gpu_model"] == "a100"
    # a CPU job keeps no model (the plugin would turn it into --gpus=a100:1)
    assert "gpu_model" not in R.effective(plan.resources.merged("prepare_data"))


def test_jobs_get_an_explicit_device(plans, config):
    paper, mini = plans["paper"], plans["mini"]
    assert {paper.device("probe", p) for p in PROBE_PROTOCOLS} == {"cuda"}
    assert paper.device("collapse") == "cuda"
    imported = next(k for k, j in paper.pretrain.items() if j.init_weights)
    assert paper.device("pretrain", imported) == "cpu"
    assert {mini.device("pretrain", k) for k in mini.pretrain} == {"cpu"}
    cfg = copy.deepcopy(config)
    cfg["scales"]["paper"]["gpu_device"] = "cpu"  # fake GPUs (the rehearsal)
    plan = P.build_plan(cfg, "paper")
    assert {plan.device("pretrain", k) for k in plan.pretrain} == {"cpu"}


def test_mini_jobs_declare_no_gpu(plans):
    mini = plans["mini"]
    for rule in ("pretrain", "probe", "collapse", "prepare_data"):
        res = mini.rule_resources(rule)
        assert "gpu" not in res and "nodes" not in res
    assert mini.launcher(next(iter(mini.pretrain))) == "python"


def test_resource_getters_return_per_job_values(plans):
    paper = plans["paper"]
    getters = paper.rule_resources("pretrain")

    class WC:
        pass

    wc = WC()
    wc.run = next(k for k, j in paper.pretrain.items() if j.spec.recipe == "resnet32_lt")
    assert getters["gpu"](wc) == 1
    assert getters["nodes"](wc) is None  # left out: no --nodes flag for a one-node job
    probe = paper.rule_resources("probe")
    wc.protocol = "sgd"
    assert probe["runtime"](wc) == 2880


def test_missing_dataset_mapping_names_the_key(config):
    cfg = copy.deepcopy(config)
    del cfg["scales"]["cifar"]["datasets"]["dtd"]
    with pytest.raises(ConfigError, match=r"scales\.cifar\.datasets.*dtd"):
        P.build_plan(cfg, "cifar")


def test_bad_target_label_names_the_key(config):
    cfg = copy.deepcopy(config)
    cfg["scales"]["mini"]["datasets"]["imagenet"] = "mini_objects/fine"
    with pytest.raises(ConfigError, match=r"datasets\.imagenet"):
        P.build_plan(cfg, "mini")


def test_unknown_resource_key_names_the_key(config):
    cfg = copy.deepcopy(config)
    cfg["scales"]["mini"]["resources"]["pretrain"] = {"gpus": 1}
    with pytest.raises(ConfigError, match="gpus"):
        P.build_plan(cfg, "mini").rule_resources("pretrain")


def test_schema_rejects_unknown_keys_and_types_naming_them(config):
    snakemake_utils = pytest.importorskip("snakemake.utils")
    schema = str(ROOT / "config.schema.yaml")
    snakemake_utils.validate(copy.deepcopy(config), schema)
    for path, value, name in [
        (("scales", "mini", "seedz"), [0], "seedz"),
        (("scales", "mini", "seeds"), "0,1", "seeds"),
        (("scale",), "huge", "huge"),
        (("scales", "paper", "resources", "pretrain", "gpus"), 1, "gpus"),
    ]:
        cfg = copy.deepcopy(config)
        d = cfg
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
        with pytest.raises(Exception, match=name):
            snakemake_utils.validate(cfg, schema)


def test_two_moons_settings(plans, config):
    assert plans["mini"].two_moons_seeds() == str(config["scales"]["mini"]["two_moons"]["seeds"])
    assert any(s.startswith("epochs=") for s in plans["mini"].two_moons_sets())


def _write_csv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["row", "column", "status", "mean"])
        w.writeheader()
        w.writerows(rows)


def test_check_results_tolerates_nothing(config, tmp_path):
    cfg = copy.deepcopy(config)
    cfg["results_root"] = str(tmp_path)
    plan = P.build_plan(cfg, "mini")
    assert any("missing" in p for p in P.check_results(plan, ["table3"]))
    spec = plan.tables["table3"].spec
    for ext in ("md", "tex"):
        (tmp_path / "tables").mkdir(exist_ok=True)
        (tmp_path / "tables" / f"table3.{ext}").write_text("x")
        (tmp_path / "tables" / f"table3.per_row.{ext}").write_text("x")
    cells = [
        {"row": r["key"], "column": c["key"], "status": "ok", "mean": "12.5"}
        for r in spec["rows"]
        for c in spec["columns"]
    ]
    _write_csv(tmp_path / "tables" / "table3.csv", cells)
    _write_csv(tmp_path / "tables" / "table3.per_row.csv", cells)
    assert P.check_results(plan, ["table3"]) == []
    cells[-1] = {**cells[-1], "status": "not run", "mean": ""}
    _write_csv(tmp_path / "tables" / "table3.per_row.csv", cells)
    problems = P.check_results(plan, ["table3"])
    assert len(problems) == 1 and "not run" in problems[0] and "per_row" in problems[0]


def test_deep_update_merges_like_configfile(config):
    merged = P.deep_update(config, {"scales": {"mini": {"seeds": [0]}}, "work_root": "w"})
    assert merged["scales"]["mini"]["seeds"] == [0]
    assert merged["scales"]["mini"]["archs"] == config["scales"]["mini"]["archs"]
    assert merged["work_root"] == "w" and config["work_root"] == "work"


def test_renderer_accepts_every_spec(plans, tmp_path):
    render = pytest.importorskip("vcr.tables.render")
    from vcr.tables.paper import load_paper_numbers

    numbers = load_paper_numbers()
    for plan in plans.values():
        for t in P.TABLES:
            path = tmp_path / plan.scale / f"{t}.json"
            plan.write_spec(t, str(path), log=str(tmp_path / "spec.log"))
            spec = render.load_spec(path)
            cells = render.build_cells(spec, [], numbers)  # no records yet: all "not run"
            assert len(cells) == len(spec["rows"]) * len(spec["columns"])
            assert all(c["status"] != "ok" for c in cells)


def test_set_values_round_trip_through_the_recipe_parser():
    recipes = pytest.importorskip("vcr.recipes")
    values = {"projector_dims": [512, 512], "epochs": 3, "warmup_epochs": 1, "model_ema": False}
    sets = format_sets(values)
    assert sets == ("epochs=3", "model_ema=false", "projector_dims=[512,512]", "warmup_epochs=1")
    from vcr.cli import parse_sets

    r = recipes.get_recipe("vicreg_100ep", **parse_sets(list(sets)))
    assert r.projector_dims == (512, 512) and r.epochs == 3 and r.model_ema is False
