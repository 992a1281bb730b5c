"""Jobs each target runs from scratch, counted from vcr/design.yaml and config.yaml directly.

An independent derivation, not vcr.plan's code: it reads the design's rows, columns, grid and
``sweep_lr`` and the scale's seeds, sweep, baseline mode and probe grouping, and counts run and
evaluation *identities*, so runs two tables share (Table 5 measures Table 1's ConvNeXt-T runs)
are counted once in ``all``. ``tests/test_plan.py`` holds the plan to it, and
``tests/test_pipeline_dryrun.py`` holds ``snakemake -n`` to it.
"""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _grid(sc: dict, design: dict, table: str):
    sweep = {**(sc.get("sweep") or {}), **(sc.get("sweep_overrides") or {}).get(table, {})}
    if sweep.get("pairs"):
        points = [tuple(p) for p in sweep["pairs"]]
    else:
        alphas = sweep.get("alpha", design["grid"]["alpha"])
        betas = sweep.get("beta", design["grid"]["beta"])
        points = [(a, b) for a in alphas for b in betas]
    lrs = sweep.get("lr", design["grid"]["lr"])
    return points, lrs


def expected_jobs(scale: str, config: dict | None = None, design: dict | None = None):
    """``{target: {rule: count}}`` for every table and figure2, plus ``{"all": total}``."""
    config = config or yaml.safe_load((ROOT / "config.yaml").read_text())
    design = design or yaml.safe_load((ROOT / "vcr" / "design.yaml").read_text())
    sc = config["scales"][scale]
    dmap, amap = sc["datasets"], sc["archs"]
    protocols = sc.get("protocols") or {}
    grouping = sc.get("probe_grouping", "per_dataset")
    seeds = sc["seeds"]
    placement = config.get("placement", "blocks")
    cov_scale = config.get("cov_scale", "eq2")
    resnet50 = config.get("table1", {}).get("resnet50_recipe", "tv_resnet50_v2")
    out, all_runs, all_evals, all_data = {}, set(), set(), set()
    table_runs, table_data, probe_data = {}, {}, {}  # probe_data: run -> its probes' datasets
    for name, table in design["tables"].items():
        points, lrs = _grid(sc, design, name)
        lrs = lrs if table["sweep_lr"] else [0]
        runs, evals, data = set(), set(), set()
        for row in table["rows"]:
            recipe = resnet50 if row["recipe"] == "@resnet50" else row["recipe"]
            place = placement if row["placement"] == "@vcr" else row["placement"]
            by_pretrain: dict[str, list] = {}
            for col in table["columns"]:
                pre = col.get("pretrain") or table.get("pretrain")
                ev = col.get("eval") if "eval" in col else pre
                if dmap[pre] is None or dmap[ev] is None:
                    continue  # not run at this scale
                by_pretrain.setdefault(dmap[pre], []).append((col, dmap[ev]))
            for pre, cols in by_pretrain.items():
                data.add(pre.split("/")[0])
                base = (row["method"], amap[row["arch"]], pre, recipe, place)
                mode = sc.get("table1_baseline", "train") if row.get("baseline") else "train"
                conventions = (sc.get("cov_scales") or {}).get(name) or [cov_scale]
                if place == "none":
                    # an imported baseline is one run (seed 0); trained ones one per lr x seed
                    hps = [("torchvision", cov_scale, 0, 0, 0, 0)] if mode != "train" else []
                    if mode != "torchvision_weights":
                        hps += [("scratch", cov_scale, 0, 0, lr, s) for lr in lrs for s in seeds]
                else:
                    hps = [
                        ("scratch", cs, a, b, lr, s)
                        for cs in conventions
                        for a, b in points
                        for lr in lrs
                        for s in seeds
                    ]
                for hp in hps:
                    run = (*base, *hp)
                    runs.add(run)
                    for col, ev in cols:
                        proto = col["protocol"]
                        if proto in ("classifier", "collapse"):
                            evals.add((run, proto, ev))
                            continue
                        data.add(ev.split("/")[0])
                        probe_data.setdefault(run, set()).add(ev.split("/")[0])
                        proto = protocols.get(proto, proto)
                        group = "all" if grouping == "per_protocol" else ev
                        evals.add((run, proto, group))
        rule = {"classifier": "classifier_metric", "collapse": "collapse"}
        counts = {"pretrain": len(runs), "prepare_data": len(data), "table_spec": 1}
        counts["render_table"] = 1
        counts["report_figures"] = 1
        for _, proto, _ in evals:
            r = rule.get(proto, "probe")
            counts[r] = counts.get(r, 0) + 1
        out[name] = {k: v for k, v in sorted(counts.items()) if v}
        table_runs[name], table_data[name] = runs, data
        all_runs |= runs
        all_evals |= evals
        all_data |= data
    if sc.get("probe_in_pretrain"):
        # a pretraining job also probes its run (every table's probes of it), so it needs
        # those datasets prepared, whichever table asked for the run
        for name, runs in table_runs.items():
            data = table_data[name].union(*(probe_data.get(r, set()) for r in runs))
            out[name]["prepare_data"] = len(data)
    methods = sc.get("two_moons", {}).get("methods", design["figure2"]["methods"])
    out["figure2"] = {"plot_figure2": 1, "two_moons": len(methods)}
    n_tables = len(design["tables"])
    # the claims ledger: every table's runs, evaluations, data and spec, the two-moons runs
    rules = {"pretrain": len(all_runs), "prepare_data": len(all_data), "table_spec": n_tables}
    rules.update(two_moons=len(methods), claims_ledger=1)
    for _, proto, _ in all_evals:
        r = {"classifier": "classifier_metric", "collapse": "collapse"}.get(proto, "probe")
        rules[r] = rules.get(r, 0) + 1
    out["claims"] = {k: v for k, v in sorted(rules.items()) if v}
    # + render_table and report_figures per table, plot_figure2, claims, all
    out["all"] = len(all_runs) + len(all_evals) + len(all_data) + 3 * n_tables + len(methods) + 3
    return out
