"""vcr.report: a table's heatmap, curves and page, from its spec, records and the runs' logs; the
check of a built Snakemake report."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from vcr import plan as P
from vcr.records import make_record, write_record
from vcr.report import check_report, val_grid, write_table_report
from vcr.tables.render import build_cells

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def table2(tmp_path):
    """The mini plan's Table 2 (a 2-point α/β sweep) with made-up records and epoch logs."""
    cfg = P.load_config(ROOT / "config.yaml")
    plan = P.build_plan(
        {**cfg, "work_root": str(tmp_path / "work"), "results_root": str(tmp_path / "r")}, "mini"
    )
    tp = plan.tables["table2"]
    rng = random.Random(0)
    records = []
    for path in tp.records:
        ev = plan.evals[path]
        spec = plan.pretrain[ev.run].spec
        val = 0.3 + 0.2 * (spec.alpha == 0.16) + 0.01 * spec.seed  # α 0.16 wins on val
        rec = make_record(spec, eval_dataset=ev.datasets[0][0], protocol=ev.protocol,
                          metric="top1", val=val, test=rng.random())  # fmt: skip
        write_record(path, rec)
        records.append(rec)
        run_dir = Path(plan.run_dir(ev.run))
        lines = [
            {"epoch": e, "loss": 2.0 - 0.3 * e + spec.seed / 10, "val_top1": 0.2 + 0.1 * e}
            for e in range(3)
        ]
        (run_dir / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return plan, tp.spec, records, tmp_path


def test_val_grid_keeps_the_best_lr_per_alpha_beta():
    def rec(a, b, lr, seed, val):
        run = dict(scale="mini", method="supervised", arch="a", dataset="d", target="default",
                   recipe="r", placement="blocks", alpha=a, beta=b, lr=lr, seed=seed)  # fmt: skip
        return make_record(run, eval_dataset="d", protocol="p", metric="top1", val=val, test=0.5)

    recs = [
        rec(0.64, 0.04, 0.1, 0, 0.5),
        rec(0.64, 0.04, 0.2, 0, 0.7),
        rec(0.16, 0.01, 0.1, 0, 0.6),
    ]
    assert val_grid(recs) == {(0.64, 0.04): (0.7, 0.2), (0.16, 0.01): (0.6, 0.1)}


def test_table_report_has_the_table_the_heatmap_and_the_curves(table2):
    plan, spec, records, tmp = table2
    claims = tmp / "claims.md"
    claims.write_text("| claim | verdict |\n|---|---|\n| VCR helps on sub-classes | not shown |\n")
    paths = write_table_report(spec, records, f"{plan.work}/runs", tmp / "report" / "table2",
                               claims=claims)  # fmt: skip
    for kind in ("heatmap", "curves"):
        assert paths[kind].read_bytes()[:8] == PNG and paths[kind].stat().st_size > 5000
    page = paths["page"].read_text()
    assert page.count('<img src="data:image/png;base64,') == 2
    assert "<table>" in page and "ConvNeXt (VCR)" in page and "paper 72.9" in page
    assert "Claims ledger" in page and "VCR helps on sub-classes" in page
    # the heatmap marks what the table reports: α 0.16 won on validation
    cells = build_cells(spec, records)
    chosen = {
        (c["alpha"], c["beta"]) for c in cells if c["row"] == "convnext_vcr" and c["status"] == "ok"
    }
    assert chosen == {(0.16, 0.01)}


def test_check_report_finds_the_pictures_in_a_snakemake_report(tmp_path):
    results = {
        "results/report/table2.html": {"filename": "table2.html", "mime_type": "text/html",
                                       "data_uri": "data:text/html;base64," + "A" * 300},
        "results/report/table2_heatmap.png": {"filename": "table2_heatmap.png",
                                              "mime_type": "image/png",
                                              "data_uri": "data:image/png;base64," + "A" * 300},
    }  # fmt: skip
    html = f'<html><script id="results">\n    var results = {json.dumps(results)};\n</script>'
    (tmp_path / "r.html").write_text(html)
    problems = check_report(tmp_path / "r.html", ["table2"])
    assert problems == [f"{tmp_path / 'r.html'}: no table2_curves.png among the report's results"]
