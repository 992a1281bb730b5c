"""Job counts of a plan: what each target runs from scratch, by rule (what ``snakemake -n``
lists), and in all. ``tests/design_counts.py`` derives the same numbers from the design file
without this code."""

from __future__ import annotations

from vcr.names import LEDGERS, TABLES, TARGETS

# The rule that runs each kind of evaluation.
EVAL_RULES = {"probe": "probe", "classifier": "classifier_metric", "collapse": "collapse"}


def _unique(items):
    return list(dict.fromkeys(items))


def table_jobs(plan, table: str) -> dict[str, int]:
    """Jobs a table's target runs from scratch, by rule name (what ``snakemake -n`` lists)."""
    counts: dict[str, int] = {}

    def add(rule, n=1):
        counts[rule] = counts.get(rule, 0) + n

    if table == "figure2":
        add("two_moons", len(plan.two_moons))
        add("plot_figure2")
        return counts
    # the ledger reads every table's records and specs and the two-moons files, not the
    # rendered tables or the figure
    tables = TABLES if table in LEDGERS else (table,)
    runs = _unique(r for t in tables for r in plan.tables[t].runs)
    records = _unique(r for t in tables for r in plan.tables[t].records)
    datasets = set()
    for run in runs:
        add("pretrain")
        datasets.add(plan.pretrain[run].spec.dataset)
        # probe_in_pretrain: the job also probes its run, so it needs those datasets too
        datasets.update(d for p in plan.then_probe(run) for d in p["datasets"])
    seen = set()
    for rec in records:
        ev = plan.evals[rec]
        if id(ev) in seen:
            continue
        seen.add(id(ev))
        add(EVAL_RULES[ev.kind])
        datasets.update(d for d, _ in ev.datasets if ev.kind != "classifier")
    if datasets:
        add("prepare_data", len(datasets))
    add("table_spec", len(tables))
    if table in LEDGERS:
        if plan.two_moons:
            add("two_moons", len(plan.two_moons))
        add("claims_ledger")
    else:
        add("render_table")
        add("report_figures")  # the table's heatmap, curves and page for `snakemake --report`
    return dict(sorted(counts.items()))


def total_jobs(plan) -> int:
    """Jobs of ``all`` from scratch (shared runs counted once), incl. the ``all`` rule."""
    probes = {id(e): e for e in plan.evals.values()}
    n = len(plan.pretrain) + len(probes) + len(plan.datasets)
    n += 3 * len(TABLES)  # table_spec + render_table + report_figures
    n += len(plan.two_moons) + 1 if plan.two_moons else 0
    n += len(LEDGERS)  # the claims ledger
    return n + 1


def summary(plan) -> dict:
    return {
        "scale": plan.scale,
        "pretrain_runs": len(plan.pretrain),
        "evaluation_jobs": len({id(e) for e in plan.evals.values()}),
        "datasets": sorted(plan.datasets),
        "per_table": {t: table_jobs(plan, t) for t in TARGETS},
        "total_jobs": total_jobs(plan),
    }
