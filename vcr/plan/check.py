"""Checking the published outputs of a finished run: every planned cell of every table (under
each selection rule) has a number, the figure is a PNG and every claim of the ledger has a
verdict (``python -m vcr.plan --check-results``, used by CI)."""

from __future__ import annotations

import csv
from pathlib import Path

from vcr.names import LEDGERS, TARGETS

VERDICTS = ("supported", "not supported", "inconclusive", "not run")  # vcr.claims.VERDICTS


def check_results(plan, targets=TARGETS) -> list[str]:
    """Problems with the rendered outputs of ``targets`` (empty list = all there and complete).

    Tolerates nothing: a missing file, an empty figure, or a cell of a planned column that is
    not "ok" (no records, no number) is a problem. Used by .ci/pipeline_checks.sh after the
    mini pipeline.
    """
    problems = []
    for target in targets:
        outs = plan.table_outputs(target)
        missing = [p for p in outs if not Path(p).is_file() or Path(p).stat().st_size == 0]
        if missing:
            problems.append(f"{target}: missing or empty {missing}")
            continue
        if target == "figure2":
            with open(outs[0], "rb") as fh:
                if fh.read(8) != b"\x89PNG\r\n\x1a\n":
                    problems.append(f"{outs[0]}: not a PNG file")
            with open(outs[1], newline="") as fh:
                rows = list(csv.DictReader(fh))
            methods = {r.get("method") for r in rows}
            if methods != set(plan.two_moons):
                problems.append(f"{outs[1]}: methods {sorted(methods)} != {sorted(plan.two_moons)}")
            continue
        if target in LEDGERS:
            with open(outs[1], newline="") as fh:
                claims = list(csv.DictReader(fh))
            if not claims:
                problems.append(f"{outs[1]}: no claims")
            for c in claims:
                if c.get("verdict") not in VERDICTS:
                    problems.append(f"{outs[1]}: claim {c.get('claim_id')} has no verdict")
            continue
        planned = {c["key"] for c in plan.tables[target].spec["columns"] if c["eval_dataset"]}
        for path in (p for p in outs if p.endswith(".csv")):
            with open(path, newline="") as fh:
                cells = list(csv.DictReader(fh))
            for key in sorted(planned):
                for row in plan.tables[target].spec["rows"]:
                    found = [c for c in cells if c["row"] == row["key"] and c["column"] == key]
                    if not found:
                        problems.append(f"{target}: no cell ({row['key']}, {key}) in {path}")
                        continue
                    cell = found[0]
                    if cell["status"] != "ok" or not _is_number(cell["mean"]):
                        problems.append(
                            f"{target}: cell ({row['key']}, {key}) of {path} is "
                            f"{cell['status']!r} (mean {cell['mean']!r})"
                        )
        if not planned:
            problems.append(f"{target}: no column of this table is planned at {plan.scale}")
    return problems


def _is_number(text) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return text not in ("", "nan")


def check_study(plan) -> list[str]:
    """Problems with the study's outputs (``snakemake study``): every planned file there and
    non-empty, the heatmaps PNGs, and a number in best.csv for every (arch, metric, convention)
    and in settings.csv for every (arch, setting, metric)."""
    study = plan.study
    if study is None:
        return [f"the study is not planned at scale {plan.scale} (config study.scale)"]
    problems = []
    outs = [p for files in study.outputs().values() for p in files]
    missing = [p for p in outs if not Path(p).is_file() or Path(p).stat().st_size == 0]
    if missing:
        return [f"study: missing or empty {missing}"]
    for png in study.outputs()["heatmaps"]:
        with open(png, "rb") as fh:
            if fh.read(8) != b"\x89PNG\r\n\x1a\n":
                problems.append(f"{png}: not a PNG file")
    st = study.settings
    n_metrics, n_cov = len(study.metrics()), len(st["cov_scales"])
    n_grid = len(st["alpha"]) * len(st["beta"])
    expected = {
        "best.csv": len(st["archs"]) * n_metrics * n_cov,
        "settings.csv": len(st["archs"]) * n_metrics * (1 + n_cov * n_grid),
        "effects.csv": len(st["archs"]) * n_metrics * n_cov,
    }
    for name, n in expected.items():
        with open(f"{study.results}/{name}", newline="") as fh:
            rows = list(csv.DictReader(fh))
        if len(rows) != n:
            problems.append(f"{study.results}/{name}: {len(rows)} rows, expected {n}")
        key = "test_mean" if name != "effects.csv" else "range_points"
        bad = [r for r in rows if not _is_number(r.get(key))]
        if bad:
            problems.append(f"{study.results}/{name}: {len(bad)} row(s) without a number ({key})")
    return problems
