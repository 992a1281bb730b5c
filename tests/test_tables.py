"""Paper numbers (checked against the paper text) and the one table renderer."""

import json
import os
import statistics
from pathlib import Path

import pandas as pd
import pytest

from vcr.errors import ConfigError
from vcr.names import TABLES
from vcr.records import RunSpec, make_record
from vcr.tables.paper import load_paper_numbers, paper_value, table_meta
from vcr.tables.render import build_cells, render_markdown, render_table, unmatched_records

ROOT = Path(__file__).resolve().parents[1]
NUMBERS = load_paper_numbers()


def _paper_txt() -> Path:
    env = os.environ.get("VCR_PAPER_TXT")
    return Path(env) if env else ROOT.parent / "shared" / "papers" / "vcr-zhu-2023.txt"


# ----------------------------------------------------------------------------- paper text


def _parse_table(lines: list[str], number: int, row_labels: set[str]) -> tuple[list, dict]:
    """Header (merged over header lines) and {row label: [cells]} of 'Table N:' in the text."""
    start = next(i for i, line in enumerate(lines) if line.startswith(f"Table {number}:"))
    i = start + 1
    while not lines[i].strip():
        i += 1
    block = []
    while i < len(lines) and lines[i].strip():
        block.append(lines[i].split("\t"))
        i += 1
    header: list[str] = []
    rows = {}
    for fields in block:
        if fields[0] in row_labels:
            rows[fields[0]] = fields[1:]
        elif not rows:  # header lines come first; a later line's label wins per position
            header += [""] * (len(fields) - len(header))
            for j, f in enumerate(fields):
                if f.strip():
                    header[j] = f.strip()
        else:
            raise AssertionError(f"Table {number}: unexpected line {fields!r} in the paper text")
    return header, rows


def _number(text: str) -> float:
    return float(text.strip().rstrip("%"))


@pytest.mark.parametrize("table", TABLES)
def test_transcription_equals_paper_text(table):
    path = _paper_txt()
    if not path.exists():
        pytest.skip(f"paper text not found at {path} (set VCR_PAPER_TXT to its path)")
    lines = path.read_text(encoding="utf-8").splitlines()
    meta = table_meta(table, NUMBERS)
    counts = meta.get("class_counts", {})
    labels = {**{v: k for k, v in meta["rows"].items()}}
    labels.update({c["label"]: name for name, c in counts.items()})
    header, rows = _parse_table(lines, int(table.removeprefix("table")), set(labels))

    assert header[0] == meta["corner"]
    col_label = {k: NUMBERS["meta"]["columns"][k]["label"] for k in meta["columns"]}
    assert header[1:] == [col_label[k] for k in meta["columns"]]
    # every row of the paper is transcribed, and nothing else
    assert {labels[lab] for lab in rows} == set(NUMBERS[table]) | set(counts)
    n_checked = 0
    for label, cells in rows.items():
        key = labels[label]
        cells = [c for c in cells if c.strip()]
        assert len(cells) == len(meta["columns"]), (table, label, cells)
        for col, text in zip(meta["columns"], cells):
            ours = counts[key][col] if key in counts else NUMBERS[table][key][col]
            assert ours == _number(text), (table, key, col)
            assert text.strip().endswith("%") == (meta["unit"] == "%" and key not in counts)
            n_checked += 1
        if key not in counts:
            assert set(NUMBERS[table][key]) == set(meta["columns"])
    assert n_checked == len(rows) * len(meta["columns"])


def test_column_metric_notes_follow_the_protocol():
    cols = NUMBERS["meta"]["columns"]
    assert {k for k, c in cols.items() if c["metric"] == "mean_per_class"} == {
        "aircraft",
        "pets",
        "flowers",
    }
    for k in ("food101", "cars", "dtd", "inat18", "places205", "in1pct"):
        assert cols[k]["metric"] == "top1"


# ----------------------------------------------------------------------------- renderer


def _run(row: str, seed: int, alpha=0.0, beta=0.0, lr=0.0, scale="mini") -> dict:
    return RunSpec(
        scale=scale,
        method="supervised",
        arch=f"arch_{row}",
        dataset="mini_objects",
        target="default",
        recipe="mini",
        placement="blocks" if alpha else "none",
        alpha=alpha,
        beta=beta,
        lr=lr,
        seed=seed,
    ).to_dict()


def _spec(table: str, scale="mini", null_columns=()) -> dict:
    """A spec like vcr.plan's: every paper row/column, eval_dataset = a stand-in name."""
    meta = table_meta(table, NUMBERS)
    return {
        "table": table,
        "scale": scale,
        "rows": [
            {"key": k, "label": lab, "match": {"arch": f"arch_{k}"}}
            for k, lab in meta["rows"].items()
        ],
        "columns": [
            {
                "key": c,
                "label": NUMBERS["meta"]["columns"][c]["label"],
                "eval_dataset": None if c in null_columns else f"stand_in_{c}",
                "metric": None if c in null_columns else "top1",
            }
            for c in meta["columns"]
        ],
    }


def _records(table, row, col, seeds, hps, val_fn, test_fn, metric="top1"):
    return [
        make_record(
            _run(row, s, *hp),
            eval_dataset=f"stand_in_{col}",
            protocol="lbfgs",
            metric=metric,
            val=None if val_fn is None else val_fn(hp, s),
            test=test_fn(hp, s),
        )
        for hp in hps
        for s in seeds
    ]


def _cell(cells, row, col):
    return next(c for c in cells if c["row"] == row and c["column"] == col)


def test_missing_run_and_null_column_say_not_run():
    spec = _spec("table3", null_columns=("cifar100_lt",))
    recs = _records("table3", "resnet32", "cifar10_lt", [0, 1], [(0, 0, 0)], None, lambda h, s: 0.6)
    cells = build_cells(spec, recs, NUMBERS)
    assert _cell(cells, "resnet32", "cifar10_lt")["status"] == "ok"
    assert _cell(cells, "resnet32_vcr", "cifar10_lt")["status"] == "no records"
    assert _cell(cells, "resnet32", "cifar100_lt")["status"] == "not in plan"
    md = render_markdown(spec, cells, NUMBERS)
    md_rows = {
        line.split("|")[1].strip(): line
        for line in md.splitlines()
        if line.startswith("|") and "paper" in line
    }
    vcr_row = md_rows["ResNet-32 (VCR)"]
    assert vcr_row.count("not run") == 2 and "ours" not in vcr_row
    base_cells = md_rows["ResNet-32"].split("|")[2:4]
    assert "ours" in base_cells[0] and "not run" in base_cells[1] and "ours" not in base_cells[1]
    for c in cells:  # no number where nothing ran
        if c["status"] != "ok":
            assert c["mean"] is None and c["std"] is None and c["diff"] is None and c["n"] == 0


@pytest.mark.parametrize("table", TABLES)
def test_rendered_paper_numbers_equal_transcription(table, tmp_path):
    spec = _spec(table)
    paths = render_table(spec, [], tmp_path / table, NUMBERS)
    df = pd.read_csv(paths["csv"])
    meta = table_meta(table, NUMBERS)
    assert len(df) == len(meta["rows"]) * len(meta["columns"])
    md = paths["md"].read_text()
    digits = 1 if meta["unit"] == "%" else 2
    for _, r in df.iterrows():
        expected = NUMBERS[table][r["row"]][r["column"]]
        assert r["paper"] == expected
        assert f"paper {expected:.{digits}f}" in md
        assert r["status"] == "no records" and pd.isna(r["mean"])
    assert md.count("not run") >= len(df)


def test_mean_std_n_diff_on_constructed_records(tmp_path):
    spec = _spec("table1")
    hps = [(0.16, 0.01, 0.0), (0.32, 0.02, 0.0), (0.64, 0.04, 0.0)]
    # val prefers alpha=0.32; test values differ per seed
    recs = _records(
        "table1",
        "resnet50_vcr",
        "food101",
        [0, 1, 2],
        hps,
        lambda h, s: 0.5 - abs(h[0] - 0.32),
        lambda h, s: 0.55 + 0.1 * h[0] + 0.013 * s * s,
    )
    recs += _records(
        "table1", "resnet50", "food101", [3], [(0, 0, 0)], lambda h, s: 0.4, lambda h, s: 0.42
    )
    cells = build_cells(spec, recs, NUMBERS)
    c = _cell(cells, "resnet50_vcr", "food101")
    chosen = [100 * r["test"] for r in recs if r["run"]["alpha"] == 0.32]
    assert (c["alpha"], c["beta"], c["lr"]) == (0.32, 0.02, 0.0)
    assert c["n"] == 3 and c["n_groups"] == 3
    assert c["mean"] == pytest.approx(statistics.fmean(chosen))
    assert c["std"] == pytest.approx(statistics.stdev(chosen))
    assert c["diff"] == pytest.approx(c["mean"] - paper_value("table1", "resnet50_vcr", "food101"))
    assert c["scale"] == "mini" and c["cov_scale"] == "eq2"
    single = _cell(cells, "resnet50", "food101")
    assert single["n"] == 1 and single["std"] is None and single["cov_scale"] is None
    md = render_markdown(spec, cells, NUMBERS)
    assert f"ours {c['mean']:.1f} ± {c['std']:.1f} (n=3)" in md
    assert f"Δ {c['diff']:+.1f}" in md
    assert "mini · stand_in_food101" in md  # mini names its stand-in dataset
    assert "ours 42.0 ± – (n=1)" in md
    assert "cov_scale=eq2" in md


def test_raw_units_are_not_scaled_and_other_scales_are_ignored():
    spec = _spec("table5")
    spec["columns"][0]["metric"] = "cdnv"
    recs = _records(
        "table5",
        "convnext",
        "cdnv",
        [0, 1],
        [(0, 0, 0)],
        lambda h, s: 0.9,
        lambda h, s: 0.3 + s,
        metric="cdnv",
    )
    other = _records(
        "table5", "convnext", "cdnv", [5], [(0, 0, 0)], None, lambda h, s: 99.0, metric="cdnv"
    )
    other[0]["run"]["scale"] = "cifar"
    c = _cell(build_cells(spec, recs + other, NUMBERS), "convnext", "cdnv")
    assert c["mean"] == pytest.approx(0.8) and c["n"] == 2
    assert c["diff"] == pytest.approx(0.8 - 0.28)


def test_cli_writes_md_tex_csv(tmp_path):
    from workflow_scripts.render_table import main

    spec = _spec("table3", scale="mini", null_columns=("cifar100_lt",))
    spec_path = tmp_path / "table3.json"
    spec_path.write_text(json.dumps(spec))
    recs = _records(
        "table3", "resnet32", "cifar10_lt", [0, 1], [(0, 0, 0)], None, lambda h, s: 0.5 + s / 10
    )
    one, many = tmp_path / "one.json", tmp_path / "many.json"
    one.write_text(json.dumps(recs[0]))
    many.write_text(json.dumps(recs[1:]))
    prefix = tmp_path / "out" / "table3"
    assert (
        main(
            [
                "--spec",
                str(spec_path),
                "--records",
                str(one),
                str(many),
                "--out-prefix",
                str(prefix),
            ]
        )
        == 0
    )
    for suffix in ("md", "tex", "csv"):
        assert (tmp_path / "out" / f"table3.{suffix}").stat().st_size > 0
    tex = (tmp_path / "out" / "table3.tex").read_text()
    assert tex.isascii() and r"\begin{tabular}" in tex and "not run" in tex
    assert r"stand\_in\_cifar10\_lt" in tex
    df = pd.read_csv(tmp_path / "out" / "table3.csv")
    ok = df[df["status"] == "ok"]
    assert len(ok) == 1 and ok.iloc[0]["n"] == 2 and ok.iloc[0]["mean"] == pytest.approx(55.0)
    assert list(tmp_path.joinpath("out").glob(".*tmp")) == []  # atomic writes left no temp files


def test_spec_errors_name_the_key():
    spec = _spec("table3")
    spec["rows"][0]["match"] = {"architecture": "x"}
    with pytest.raises(ConfigError, match="architecture"):
        build_cells(spec, [], NUMBERS)
    with pytest.raises(ConfigError, match="table9"):
        build_cells({**_spec("table3"), "table": "table9"}, [], NUMBERS)


def test_column_protocol_and_match_pick_the_records():
    spec = _spec("table3")
    spec["columns"][0].update(protocol="classifier", match={"dataset": "mini_objects"})
    good = _records("table3", "resnet32", "cifar10_lt", [0, 1], [(0, 0, 0)], None, lambda h, s: 0.5)
    for r in good:
        r["protocol"] = "classifier"
    wrong_proto = _records(
        "table3", "resnet32", "cifar10_lt", [2], [(0, 0, 0)], None, lambda h, s: 0.9
    )  # protocol "lbfgs"
    wrong_data = _records(
        "table3", "resnet32", "cifar10_lt", [3], [(0, 0, 0)], None, lambda h, s: 0.9
    )
    wrong_data[0]["run"]["dataset"] = "mini_objects_lt"
    wrong_data[0]["protocol"] = "classifier"
    c = _cell(build_cells(spec, good + wrong_proto + wrong_data, NUMBERS), "resnet32", "cifar10_lt")
    assert c["n"] == 2 and c["mean"] == pytest.approx(50.0) and c["protocol"] == "classifier"
    assert unmatched_records(spec, good + wrong_proto + wrong_data) == wrong_proto + wrong_data


def test_caption_shows_each_vcr_rows_strength():
    """The median over the chosen runs of final.json's ||g_vcr||/||g_task|| (records' extra)."""
    spec = _spec("table3", null_columns=("cifar100_lt",))
    hps = [(0.64, 0.04, 0), (0.16, 0.01, 0)]
    recs = _records("table3", "resnet32_vcr", "cifar10_lt", [0, 1, 2], hps,
                    lambda h, s: h[0], lambda h, s: 0.5)  # fmt: skip
    for r in recs:  # the run's strength: 1e-3 for the (0.64, 0.04) runs, 1e-5 for the others
        r["extra"]["vcr_grad_ratio_median"] = (
            1e-3 * (1 + r["run"]["seed"]) if r["run"]["alpha"] == 0.64 else 1e-5
        )
    recs += _records("table3", "resnet32", "cifar10_lt", [0, 1, 2], [(0, 0, 0)], None,
                     lambda h, s: 0.4)  # fmt: skip
    cells = build_cells(spec, recs, NUMBERS)
    assert _cell(cells, "resnet32_vcr", "cifar10_lt")["vcr_grad_ratio"] == 2e-3  # median of 1,2,3
    assert _cell(cells, "resnet32", "cifar10_lt")["vcr_grad_ratio"] is None
    md = render_markdown(spec, cells, NUMBERS)
    listed = md.split("VCR strength")[1].split("):")[1].split("Scale:")[0]
    assert listed.strip() == "ResNet-32 (VCR) 2.0e-03."  # the VCR row only


def test_per_row_selection_renders_one_setting_per_row_and_names_its_rule(tmp_path):
    from workflow_scripts.render_table import main

    spec = _spec("table3")
    hps = [(0.16, 0.01, 0.0), (0.64, 0.04, 0.0)]
    # cifar10_lt prefers alpha 0.16 by a little, cifar100_lt alpha 0.64 by a lot: per cell each
    # column takes its own, per row both take 0.64 (mean val over the columns)
    recs = _records("table3", "resnet32_vcr", "cifar10_lt", [0, 1, 2], hps,
                    lambda h, s: 0.50 if h[0] == 0.16 else 0.49, lambda h, s: 0.6)  # fmt: skip
    recs += _records("table3", "resnet32_vcr", "cifar100_lt", [0, 1, 2], hps,
                     lambda h, s: 0.30 if h[0] == 0.16 else 0.40, lambda h, s: 0.3)  # fmt: skip
    per_cell = build_cells(spec, recs, NUMBERS)
    per_row = build_cells(spec, recs, NUMBERS, selection="per_row")
    assert [_cell(per_cell, "resnet32_vcr", c)["alpha"] for c in ("cifar10_lt", "cifar100_lt")] == [
        0.16,
        0.64,
    ]
    assert {_cell(per_row, "resnet32_vcr", c)["alpha"] for c in ("cifar10_lt", "cifar100_lt")} == {
        0.64
    }
    assert "chosen per cell" in render_markdown(spec, per_cell, NUMBERS)
    assert "selection=per_row" in render_markdown(spec, per_row, NUMBERS, "per_row")
    with pytest.raises(ConfigError, match="selection"):
        build_cells(spec, recs, NUMBERS, selection="per_column")
    # the CLI renders the configured rule and the other beside it
    spec_path, rec_path = tmp_path / "spec.json", tmp_path / "recs.json"
    spec_path.write_text(json.dumps(spec))
    rec_path.write_text(json.dumps(recs))
    prefix = tmp_path / "table3"
    args = ["--spec", str(spec_path), "--records", str(rec_path), "--out-prefix", str(prefix)]
    assert main([*args, "--also", f"per_row={prefix}.per_row"]) == 0
    assert "chosen per cell" in (tmp_path / "table3.md").read_text()
    assert "selection=per_row" in (tmp_path / "table3.per_row.md").read_text()
    df = pd.read_csv(tmp_path / "table3.per_row.csv")
    assert set(df[df["row"] == "resnet32_vcr"]["alpha"]) == {0.64}


def test_a_row_variant_stands_beside_its_paper_row():
    spec = _spec("table3")
    spec["rows"].append(
        {"key": "resnet32_trained", "paper_key": "resnet32", "match": {"arch": "x"}}
    )
    cells = build_cells(spec, [], NUMBERS)
    assert _cell(cells, "resnet32_trained", "cifar10_lt")["paper"] == paper_value(
        "table3", "resnet32", "cifar10_lt"
    )
