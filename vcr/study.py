"""The eq. 2 / Algorithm 1 study's analysis: records -> tables, tests and heatmaps.

Input: the study spec (``vcr.plan.study``: the settings and, per run, its ``final.json`` and
its probe record). Each run gives one metric record per metric: ``pretrain`` (the run's own
classifier on the pretraining data: val and test accuracy, ``vcr.records.classifier_record``)
and one per probe dataset (L-BFGS on frozen features). A *setting* is ``(cov_scale, alpha,
beta)``; the baseline (no VCR) is ``("none", 0, 0)`` and is shared by both conventions.

Outputs (``write_report``), all from the records, nothing typed:

* ``settings.csv``: every (arch, setting, metric): mean val/test over seeds, test sd, the
  difference to the baseline in points, a paired t-test over seeds against the baseline (the
  same seed = the same initialisation and data order, so the seeds pair), the median
  ||g_vcr||/||g_task|| when the runs logged it (``final.json`` ``vcr_grad_ratio_median``), and
  the last epoch's mean VCR losses (``log.jsonl`` ``vcr/l_var``, ``vcr/l_cov``);
* ``best.csv``: per (arch, metric, convention) the setting with the best mean *validation*
  score (``vcr.select.select``, the tables' rule: test is read only after the choice) against
  the baseline, on test, with the paired test;
* ``effects.csv``: per (arch, metric, convention) whether the grid does anything: the grid's
  mean difference to the baseline (paired over seeds), the range of the settings' means beside
  the seed noise, Friedman tests of alpha (blocks: beta x seed) and of beta (blocks: alpha x
  seed), and the number of settings with p < 0.05 against the baseline; plus eq. 2 against
  Algorithm 1 at the same (alpha, beta, seed) (Wilcoxon signed-rank);
* ``heatmap_<metric>_<cov_scale>.png`` (``vcr.study_heatmaps``): alpha x beta, the test
  difference to the baseline per architecture, one colour scale per (metric, arch) shared by
  the conventions;
* ``study.md``: the three tables in Markdown.

With 3 seeds a paired t-test has 2 degrees of freedom: only large, consistent differences reach
p < 0.05; an effect of one or two points on a 200-600 image probe split is within the noise.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

from vcr import io
from vcr.plan.study import PRETRAIN_METRIC
from vcr.records import classifier_record, read_records
from vcr.select import select

BASELINE = "none"  # the baseline's cov_scale column value
GRAD_RATIO_KEY = "vcr_grad_ratio_median"  # final.json, when the trainer logs it


# ------------------------------------------------------------------------------- loading
def load_runs(spec: dict) -> list[dict]:
    """One row per (run, metric): arch, cov_scale (``none`` for the baseline), alpha, beta,
    seed, metric, val, test, grad_ratio, l_var, l_cov, and the metric ``record``."""
    probes = [p.partition("/")[0] for p in spec["settings"]["probes"]]
    rows, missing = [], []
    for entry in spec["runs"]:
        run_dir = Path(entry["final"]).parent
        if not Path(entry["final"]).is_file() or not Path(entry["record"]).is_file():
            missing.append(str(run_dir))
            continue
        final = io.read_json(entry["final"])
        extra = {"grad_ratio": final.get(GRAD_RATIO_KEY), **_last_vcr_losses(run_dir)}
        records = [classifier_record(run_dir)] + read_records([entry["record"]])
        by_metric = {PRETRAIN_METRIC: records[0]}
        by_metric.update({r["eval_dataset"]: r for r in records[1:]})
        if sorted(by_metric) != sorted([PRETRAIN_METRIC, *probes]):
            raise ValueError(
                f"{entry['record']}: probe records {sorted(by_metric)[1:]} != study.probes "
                f"{sorted(probes)}"
            )
        run = entry["run"]
        vcr_on = run["placement"] != "none"
        for metric, rec in by_metric.items():
            rows.append(
                {
                    "arch": run["arch"],
                    "cov_scale": run["cov_scale"] if vcr_on else BASELINE,
                    "alpha": float(run["alpha"]),
                    "beta": float(run["beta"]),
                    "seed": int(run["seed"]),
                    "metric": metric,
                    "val": rec["val"],
                    "test": rec["test"],
                    "record": rec,
                    **extra,
                }
            )
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} study run(s) have no final.json or probe record, e.g. {missing[0]}: "
            "run `snakemake study` (it trains and probes them first)"
        )
    return rows


def _last_vcr_losses(run_dir: Path) -> dict:
    """The last epoch's mean VCR losses of a VCR run (None for the baseline)."""
    path = run_dir / "log.jsonl"
    last = {}
    if path.is_file():
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        last = json.loads(lines[-1]) if lines else {}
    return {"l_var": last.get("vcr/l_var"), "l_cov": last.get("vcr/l_cov")}


# ------------------------------------------------------------------------------- statistics
def paired_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided paired t-test p of a vs b (same order = same seed); None when undefined
    (fewer than 2 pairs, or every difference equal)."""
    from scipy import stats

    d = [x - y for x, y in zip(a, b)]
    if len(d) < 2 or max(d) == min(d):
        return 1.0 if len(d) >= 2 and max(d) == 0 == min(d) else None
    return float(stats.ttest_rel(a, b).pvalue)


def factor_p(table: dict[tuple, float], factor: int) -> float | None:
    """Does factor ``factor`` (0: alpha, 1: beta of keys (alpha, beta, seed)) change the values,
    within blocks of the other factor x seed? Friedman test (3+ levels) or a paired t-test (2
    levels); 1.0 when no block varies at all, None for a single level."""
    from scipy import stats

    levels = sorted({k[factor] for k in table})
    blocks = sorted({tuple(v for i, v in enumerate(k) if i != factor) for k in table})
    if len(levels) < 2:
        return None
    columns = []
    for level in levels:
        col = []
        for blk in blocks:
            key = (level, *blk) if factor == 0 else (blk[0], level, blk[1])
            col.append(table[key])
        columns.append(col)
    if all(len({c[i] for c in columns}) == 1 for i in range(len(blocks))):
        return 1.0
    if len(levels) == 2:
        return paired_p(columns[0], columns[1])
    return float(stats.friedmanchisquare(*columns).pvalue)


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def _sd(xs):
    return statistics.stdev(xs) if len(xs) > 1 else None


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


class StudyData:
    """The rows of :func:`load_runs`, indexed by (arch, metric, setting)."""

    def __init__(self, rows: list[dict], settings: dict):
        self.rows, self.settings = rows, settings
        self.archs = list(dict.fromkeys(r["arch"] for r in rows))
        self.metrics = [PRETRAIN_METRIC, *(p.partition("/")[0] for p in settings["probes"])]
        self.cov_scales = list(settings["cov_scales"])
        self.alphas, self.betas = list(settings["alpha"]), list(settings["beta"])
        self.seeds = sorted({r["seed"] for r in rows})
        self._by = {}
        for r in rows:
            self._by.setdefault(
                (r["arch"], r["metric"], r["cov_scale"], r["alpha"], r["beta"]), []
            ).append(r)
        for v in self._by.values():
            v.sort(key=lambda r: r["seed"])

    def group(self, arch, metric, cov, alpha=0.0, beta=0.0) -> list[dict]:
        key = (arch, metric, cov, float(alpha), float(beta))
        if key not in self._by:
            raise KeyError(f"study: no runs for {key}")
        return self._by[key]

    def baseline(self, arch, metric) -> list[dict]:
        return self.group(arch, metric, BASELINE)

    def grid(self):
        return [(a, b) for a in self.alphas for b in self.betas]

    def paired(self, rows, base) -> tuple[list[float], list[float]]:
        """Test values of ``rows`` and ``base`` on their common seeds, in seed order."""
        b = {r["seed"]: r["test"] for r in base}
        common = [r for r in rows if r["seed"] in b]
        return [r["test"] for r in common], [b[r["seed"]] for r in common]


# ------------------------------------------------------------------------------- tables
def settings_table(data: StudyData) -> list[dict]:
    out = []
    for arch in data.archs:
        for metric in data.metrics:
            base = data.baseline(arch, metric)
            base_mean = statistics.fmean(r["test"] for r in base)
            groups = [(BASELINE, 0.0, 0.0)] + [
                (c, a, b) for c in data.cov_scales for a, b in data.grid()
            ]
            for cov, a, b in groups:
                rows = data.group(arch, metric, cov, a, b)
                tests = [r["test"] for r in rows]
                x, y = data.paired(rows, base)
                out.append(
                    {
                        "arch": arch,
                        "metric": metric,
                        "cov_scale": cov,
                        "alpha": a,
                        "beta": b,
                        "n": len(rows),
                        "val_mean": _mean([r["val"] for r in rows]),
                        "test_mean": statistics.fmean(tests),
                        "test_sd": _sd(tests),
                        "delta_points": 100 * (statistics.fmean(tests) - base_mean),
                        "p_vs_baseline": None if cov == BASELINE else paired_p(x, y),
                        "grad_ratio_median": _median([r["grad_ratio"] for r in rows]),
                        "l_var": _mean([r["l_var"] for r in rows]),
                        "l_cov": _mean([r["l_cov"] for r in rows]),
                    }
                )
    return out


def best_table(data: StudyData) -> list[dict]:
    """Per (arch, metric, convention): the setting chosen on validation (vcr.select) vs the
    baseline, on test."""
    out = []
    for arch in data.archs:
        for metric in data.metrics:
            base = data.baseline(arch, metric)
            base_tests = [r["test"] for r in base]
            for cov in data.cov_scales:
                records = [
                    r["record"] for a, b in data.grid() for r in data.group(arch, metric, cov, a, b)
                ]
                chosen = select(records, where=f"study/{arch}/{metric}/{cov}")
                rows = data.group(arch, metric, cov, chosen.alpha, chosen.beta)
                x, y = data.paired(rows, base)
                out.append(
                    {
                        "arch": arch,
                        "metric": metric,
                        "cov_scale": cov,
                        "alpha": chosen.alpha,
                        "beta": chosen.beta,
                        "n_settings": chosen.n_groups,
                        "val_mean": chosen.val_mean,
                        "test_mean": chosen.mean,
                        "test_sd": chosen.std,
                        "baseline_test_mean": statistics.fmean(base_tests),
                        "baseline_test_sd": _sd(base_tests),
                        "delta_points": 100 * (chosen.mean - statistics.fmean(base_tests)),
                        "p_paired": paired_p(x, y),
                        "n_pairs": len(x),
                        "grad_ratio_median": _median([r["grad_ratio"] for r in rows]),
                    }
                )
    return out


def effects_table(data: StudyData) -> list[dict]:
    """Per (arch, metric, convention): does the grid change anything, and which factor."""
    out = []
    for arch in data.archs:
        for metric in data.metrics:
            base = {r["seed"]: r["test"] for r in data.baseline(arch, metric)}
            base_mean = statistics.fmean(base.values())
            for cov in data.cov_scales:
                values = {
                    (a, b, r["seed"]): r["test"]
                    for a, b in data.grid()
                    for r in data.group(arch, metric, cov, a, b)
                }
                means = [
                    statistics.fmean(r["test"] for r in data.group(arch, metric, cov, a, b))
                    for a, b in data.grid()
                ]
                sds = [
                    _sd([r["test"] for r in data.group(arch, metric, cov, a, b)])
                    for a, b in data.grid()
                ]
                per_seed = [
                    statistics.fmean(v for k, v in values.items() if k[2] == s) for s in data.seeds
                ]
                pvals = [
                    paired_p(
                        *data.paired(
                            data.group(arch, metric, cov, a, b), data.baseline(arch, metric)
                        )
                    )
                    for a, b in data.grid()
                ]
                out.append(
                    {
                        "arch": arch,
                        "metric": metric,
                        "cov_scale": cov,
                        "grid_mean_delta_points": 100 * (statistics.fmean(means) - base_mean),
                        "p_grid_mean": paired_p(per_seed, [base[s] for s in data.seeds]),
                        "range_points": 100 * (max(means) - min(means)),
                        "seed_sd_points": 100 * _mean(sds) if _mean(sds) is not None else None,
                        "p_alpha": factor_p(values, 0),
                        "p_beta": factor_p(values, 1),
                        "n_p_below_0.05": sum(1 for p in pvals if p is not None and p < 0.05),
                        "n_settings": len(means),
                    }
                )
    return out


def conventions_table(data: StudyData) -> list[dict]:
    """Algorithm 1 minus eq. 2 at the same (alpha, beta, seed): mean difference, mean absolute
    difference, Wilcoxon signed-rank p (two-sided)."""
    from scipy import stats

    if not {"eq2", "alg1"} <= set(data.cov_scales):
        return []
    out = []
    for arch in data.archs:
        for metric in data.metrics:
            diffs = []
            for a, b in data.grid():
                x, y = data.paired(
                    data.group(arch, metric, "alg1", a, b), data.group(arch, metric, "eq2", a, b)
                )
                diffs += [u - v for u, v in zip(x, y)]
            nonzero = [d for d in diffs if d != 0]
            p = float(stats.wilcoxon(nonzero).pvalue) if len(nonzero) >= 2 else 1.0
            out.append(
                {
                    "arch": arch,
                    "metric": metric,
                    "n_pairs": len(diffs),
                    "mean_alg1_minus_eq2_points": 100 * statistics.fmean(diffs),
                    "mean_abs_diff_points": 100 * statistics.fmean(abs(d) for d in diffs),
                    "p_wilcoxon": p,
                }
            )
    return out


# ------------------------------------------------------------------------------- output
def _fmt(v, kind="num"):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if kind == "p":
        return f"{v:.3g}"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def write_csv(rows: list[dict], path) -> None:
    if not rows:
        io.write_text(path, "")
        return
    with io.atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(v, "p" if k.startswith("p_") else "num") for k, v in r.items()})


def _pct(v):
    return "" if v is None else f"{100 * v:.1f}"


def _pts(v):
    return "" if v is None else f"{v:+.1f}"


def _p(v):
    return "–" if v is None else f"{v:.2g}"


def _ratio(v):
    return "not logged" if v is None else f"{v:.2g}"


def markdown(data: StudyData, best, effects, conventions, *, epochs: dict) -> str:
    from tabulate import tabulate

    st = data.settings
    n_runs = len({(r["arch"], r["cov_scale"], r["alpha"], r["beta"], r["seed"]) for r in data.rows})
    lines = [
        "# eq. 2 vs Algorithm 1: the study's tables",
        "",
        f"Generated by `snakemake study` from {n_runs} runs (vcr/study.py). Archs "
        f"{', '.join(data.archs)} pretrained on `{st['pretrain']}` (recipe `{st['recipe']}`, "
        f"epochs {', '.join(f'{a} {e}' for a, e in epochs.items())}); VCR at `{st['placement']}`; "
        f"grid alpha {data.alphas} x beta {data.betas} under {', '.join(data.cov_scales)}; seeds "
        f"{data.seeds}; probes ({st['protocol']}) {', '.join(data.metrics[1:])}. Accuracies in %, "
        "differences in points, p two-sided. `pretrain` = the run's own classifier on the "
        "pretraining task (val 1,000 / test 1,000 images); probes: val 200 / test 600.",
        "",
        "## Best setting per convention (chosen on validation) vs the baseline, on test",
        "",
        "Paired t-test over seeds (same seed = same init and data order).",
        "",
    ]
    head = [
        "arch",
        "metric",
        "conv.",
        "alpha",
        "beta",
        "val",
        "test",
        "baseline",
        "diff",
        "p",
        "grad ratio",
    ]
    body = [
        [
            r["arch"],
            r["metric"],
            r["cov_scale"],
            f"{r['alpha']:g}",
            f"{r['beta']:g}",
            _pct(r["val_mean"]),
            f"{_pct(r['test_mean'])} ± {_pct(r['test_sd'])}",
            f"{_pct(r['baseline_test_mean'])} ± {_pct(r['baseline_test_sd'])}",
            _pts(r["delta_points"]),
            _p(r["p_paired"]),
            _ratio(r["grad_ratio_median"]),
        ]  # fmt: skip
        for r in best
    ]
    lines += [tabulate(body, head, tablefmt="github", disable_numparse=True), ""]
    lines += [
        "## Does the grid do anything? Per convention",
        "",
        "grid mean: the mean over the grid's settings minus the baseline (paired over seeds on "
        "the per-seed grid mean); range: max - min of the settings' means, beside the mean seed "
        "sd of one setting; p(alpha) / p(beta): Friedman test of that factor within blocks of "
        "the other factor x seed (paired t for 2 levels); #p<.05: settings whose paired test "
        "against the baseline gives p < 0.05 (about 1 in 20 by chance alone).",
        "",
    ]
    head = [
        "arch",
        "metric",
        "conv.",
        "grid mean",
        "p",
        "range",
        "seed sd",
        "p(alpha)",
        "p(beta)",
        "#p<.05",
    ]
    body = [
        [
            r["arch"],
            r["metric"],
            r["cov_scale"],
            _pts(r["grid_mean_delta_points"]),
            _p(r["p_grid_mean"]),
            f"{r['range_points']:.1f}",
            "" if r["seed_sd_points"] is None else f"{r['seed_sd_points']:.1f}",
            _p(r["p_alpha"]),
            _p(r["p_beta"]),
            f"{r['n_p_below_0.05']}/{r['n_settings']}",
        ]  # fmt: skip
        for r in effects
    ]
    lines += [tabulate(body, head, tablefmt="github", disable_numparse=True), ""]
    if conventions:
        lines += [
            "## Algorithm 1 minus eq. 2 at the same (alpha, beta, seed)",
            "",
            "Wilcoxon signed-rank test over all pairs of the grid.",
            "",
        ]
        head = ["arch", "metric", "pairs", "mean diff", "mean abs diff", "p"]
        body = [
            [
                r["arch"],
                r["metric"],
                r["n_pairs"],
                _pts(r["mean_alg1_minus_eq2_points"]),
                f"{r['mean_abs_diff_points']:.1f}",
                _p(r["p_wilcoxon"]),
            ]  # fmt: skip
            for r in conventions
        ]
        lines += [tabulate(body, head, tablefmt="github", disable_numparse=True), ""]
    lines += [
        "Heatmaps: `heatmap_<metric>_<convention>.png`; every setting: `settings.csv` "
        "(with the last epoch's mean VCR losses l_var, l_cov).",
        "",
    ]
    return "\n".join(lines)


def write_report(spec: dict, out_dir) -> dict:
    """Every output of the study into ``out_dir``; returns the tables."""
    out_dir = Path(out_dir)
    rows = load_runs(spec)
    data = StudyData(rows, spec["settings"])
    settings_rows = settings_table(data)
    best, effects, conventions = best_table(data), effects_table(data), conventions_table(data)
    epochs = _epochs_by_arch(spec)
    write_csv(settings_rows, out_dir / "settings.csv")
    write_csv(best, out_dir / "best.csv")
    write_csv(effects, out_dir / "effects.csv")
    write_csv(conventions, out_dir / "conventions.csv")  # empty with one convention
    io.write_text(out_dir / "study.md", markdown(data, best, effects, conventions, epochs=epochs))
    from vcr.study_heatmaps import plot_heatmaps

    plot_heatmaps(data, settings_rows, out_dir)
    return {"settings": settings_rows, "best": best, "effects": effects, "conventions": conventions}


def _epochs_by_arch(spec: dict) -> dict:
    from vcr.recipes import get_recipe

    st = spec["settings"]
    ro = st.get("recipe_overrides") or {}
    out = {}
    for arch in dict.fromkeys(e["run"]["arch"] for e in spec["runs"]):
        sets = {**(ro.get("default") or {}), **(ro.get(arch) or {})}
        out[arch] = get_recipe(st["recipe"], **sets).epochs
    return out
