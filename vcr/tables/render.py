"""The one renderer for all six tables: paper number, ours (mean ± std, n), difference, scale.

Input: a table spec (CONTRACT section 7, written by ``vcr.plan``)::

    {"table": "table1", "scale": "mini",
     "rows": [{"key": "resnet50", "label": "ResNet-50", "match": {"arch": ..., "placement": ...}}],
     "columns": [{"key": "food101", "label": "Food", "eval_dataset": "mini_texture",
                  "metric": "top1"}]}

plus metric records (``vcr.records``) and the paper numbers (``paper_numbers.yaml``). A record
belongs to a cell when every row ``match`` item equals its run parameter, its run's scale is the
spec's scale, and its ``eval_dataset`` and ``metric`` equal the column's; columns may also carry
``protocol`` and their own ``match`` (both optional, checked when present). The cell's number comes
from ``vcr.select.select`` (alpha/beta/lr chosen on validation only).

A cell whose column has ``eval_dataset: null`` (not in this scale's plan) or that has no records
says "not run" — never a placeholder number. Mini-scale cells also name the stand-in dataset
(the column's ``eval_dataset``), because mini numbers are not comparable to the paper's; at the
other scales the dataset is named only when it differs from the paper's column.

Outputs: Markdown (tabulate, ``<br>`` line breaks inside cells), LaTeX (booktabs; each cell a
small centred ``tabular``), and a long-format CSV (one line per cell) for machines.

Units: paper columns in "%" hold accuracies in percent while records hold fractions, so ours is
multiplied by 100 (std too); "raw" columns (Table 5) are compared as they are.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path

from vcr import io
from vcr.errors import ConfigError
from vcr.names import SCALES, SELECTION_RULES
from vcr.records import RunSpec
from vcr.select import Selection, select, select_row
from vcr.tables.paper import column_meta, load_paper_numbers, paper_value, table_meta

NOT_RUN = "not run"
_REASON = {"not in plan": "not in this scale's plan", "no records": "no records"}
NO_STD = "–"  # n = 1: no spread to show (see vcr.select)
CSV_COLUMNS = (
    "table", "row", "column", "row_label", "column_label", "status", "paper", "mean", "std", "n",
    "diff", "unit", "scale", "eval_dataset", "metric", "protocol", "alpha", "beta", "lr",
    "val_mean", "n_groups", "seeds", "cov_scale",
)  # fmt: skip
_RUN_FIELDS = {f.name for f in dataclasses.fields(RunSpec)}


# ----------------------------------------------------------------------------- spec


def validate_spec(spec: dict, numbers: dict | None = None) -> dict:
    """Check a table spec's shape; raise ConfigError naming the offending key."""
    numbers = numbers if numbers is not None else load_paper_numbers()
    for key in ("table", "rows", "columns"):
        if key not in spec:
            raise ConfigError(f"table spec: missing key {key!r}")
    table_meta(spec["table"], numbers)  # raises for an unknown table
    scale = spec.get("scale")
    if scale is not None and scale not in SCALES:
        raise ConfigError(f"table spec {spec['table']}: scale={scale!r}, expected one of {SCALES}")
    for i, row in enumerate(spec["rows"]):
        for key in ("key", "match"):
            if key not in row:
                raise ConfigError(f"table spec {spec['table']}: rows[{i}] misses {key!r}")
        unknown = set(row["match"]) - _RUN_FIELDS
        if unknown:
            raise ConfigError(
                f"table spec {spec['table']}: rows[{i}].match has unknown run parameter(s) "
                f"{sorted(unknown)}; expected RunSpec fields {sorted(_RUN_FIELDS)}"
            )
    for i, col in enumerate(spec["columns"]):
        for key in ("key", "eval_dataset"):
            if key not in col:
                raise ConfigError(f"table spec {spec['table']}: columns[{i}] misses {key!r}")
        unknown = set(col.get("match") or {}) - _RUN_FIELDS
        if unknown:
            raise ConfigError(
                f"table spec {spec['table']}: columns[{i}].match has unknown run parameter(s) "
                f"{sorted(unknown)}; expected RunSpec fields {sorted(_RUN_FIELDS)}"
            )
        if col["eval_dataset"] is not None and not col.get("metric"):
            raise ConfigError(
                f"table spec {spec['table']}: columns[{i}] ({col['key']}) has an eval_dataset "
                "but no metric"
            )
    return spec


def load_spec(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"table spec {path} not found (it is written by vcr.plan / Snakefile)")
    return validate_spec(io.read_json(path))


def _equal(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
        return a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    return a == b


def matches(match: dict, run: dict) -> bool:
    """True when every ``match`` item equals the run parameter (numbers compared as floats)."""
    return all(k in run and _equal(v, run[k]) for k, v in match.items())


def column_matches(col: dict, record: dict) -> bool:
    """A record belongs to a column by eval_dataset and metric, and, where the spec gives them,
    by ``protocol`` (one eval dataset can be probed two ways, e.g. L-BFGS and fine-tuning) and
    by the column's own ``match`` on run params (Tables 2 and 3 pretrain per column)."""
    if record["eval_dataset"] != col["eval_dataset"] or record["metric"] != col.get("metric"):
        return False
    if col.get("protocol") is not None and record.get("protocol") != col["protocol"]:
        return False
    return matches(col.get("match") or {}, record["run"])


# ----------------------------------------------------------------------------- cells


def _unit(table: str, numbers: dict) -> str:
    return table_meta(table, numbers).get("unit", "raw")


def build_cells(
    spec: dict, records: list[dict], numbers: dict | None = None, selection: str = "per_cell"
) -> list[dict]:
    """One dict per (row, column) with the CSV_COLUMNS keys; rows then columns in spec order.

    ``selection``: ``per_cell`` (each cell its own alpha/beta/lr) or ``per_row`` (one per row),
    see ``vcr.select``. A row's paper numbers are those of its ``paper_key`` (default: its key),
    so two rows of ours (e.g. imported and trained baselines) can stand beside one paper row.
    """
    numbers = numbers if numbers is not None else load_paper_numbers()
    validate_spec(spec, numbers)
    if selection not in SELECTION_RULES:
        raise ConfigError(f"selection={selection!r}: expected one of {SELECTION_RULES}")
    table, scale = spec["table"], spec.get("scale")
    unit = _unit(table, numbers)
    factor = 100.0 if unit == "%" else 1.0
    if scale is not None:
        records = [r for r in records if r["run"].get("scale") == scale]
    cells = []
    for row in spec["rows"]:
        row_recs = [r for r in records if matches(row["match"], r["run"])]
        run_cols = [c for c in spec["columns"] if c["eval_dataset"] is not None]
        by_col = {c["key"]: [r for r in row_recs if column_matches(c, r)] for c in run_cols}
        if selection == "per_row":
            sels = select_row(by_col, where=f"{table}/{row['key']}")
        else:
            sels = {
                k: select(recs, where=f"{table}/{row['key']}/{k}") for k, recs in by_col.items()
            }
        for col in spec["columns"]:
            paper = paper_value(table, row.get("paper_key", row["key"]), col["key"], numbers)
            cell = {k: None for k in CSV_COLUMNS}
            cell.update(
                table=table,
                row=row["key"],
                column=col["key"],
                row_label=row.get("label", row["key"]),
                column_label=col.get("label")
                or column_meta(col["key"], numbers).get("label")
                or col["key"],
                paper=paper,
                unit=unit,
                scale=scale,
                eval_dataset=col["eval_dataset"],
                metric=col.get("metric"),
                n=0,
            )
            if col["eval_dataset"] is None:
                cell["status"] = "not in plan"
                cells.append(cell)
                continue
            sel = sels[col["key"]]
            if sel is None:
                cell["status"] = "no records"
                cells.append(cell)
                continue
            _fill(cell, sel, factor)
            cell["vcr_grad_ratio"] = _strength(by_col[col["key"]], sel)
            cell["tests"] = [t * factor for t in sel.tests]  # per seed (claims ledger)
            cells.append(cell)
    return cells


def _strength(records: list[dict], sel: Selection) -> float | None:
    """Median over the chosen group's runs of their VCR strength (final.json's median over
    sites of ||g_vcr|| / ||g_task||, last epoch); None for baselines and older records."""
    chosen = [
        r.get("extra", {}).get("vcr_grad_ratio_median")
        for r in records
        if tuple(float(r["run"][k]) for k in ("alpha", "beta", "lr"))
        == (sel.alpha, sel.beta, sel.lr)
    ]
    chosen = [v for v in chosen if v is not None]
    return statistics.median(chosen) if chosen else None


def unmatched_records(spec: dict, records: list[dict]) -> list[dict]:
    """Records that fall in no cell (wrong scale, row match, eval dataset, metric or protocol):
    the CLI warns about them, since a misnamed stand-in dataset would otherwise just read as
    "not run"."""
    scale = spec.get("scale")
    cols = [c for c in spec["columns"] if c["eval_dataset"] is not None]
    return [
        r
        for r in records
        if (scale is not None and r["run"].get("scale") != scale)
        or not any(matches(row["match"], r["run"]) for row in spec["rows"])
        or not any(column_matches(c, r) for c in cols)
    ]


def _fill(cell: dict, sel: Selection, factor: float) -> None:
    mean = sel.mean * factor
    cell.update(
        status="ok",
        mean=mean,
        std=None if sel.std is None else sel.std * factor,
        n=sel.n,
        diff=None if cell["paper"] is None else mean - cell["paper"],
        scale=sel.run.get("scale", cell["scale"]),
        protocol=sel.protocol,
        alpha=sel.alpha,
        beta=sel.beta,
        lr=sel.lr,
        val_mean=sel.val_mean,
        n_groups=sel.n_groups,
        seeds=" ".join(str(s) for s in sel.seeds),
        cov_scale=sel.run.get("cov_scale") if sel.run.get("placement", "none") != "none" else None,
    )


# ----------------------------------------------------------------------------- text


def _digits(unit: str) -> int:
    return 1 if unit == "%" else 2  # as printed in the paper (Table 5 has 0.28 and 2.8)


def _fmt(x: float | None, digits: int, sign: bool = False) -> str:
    if x is None:
        return NO_STD
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _show_dataset(cell: dict) -> bool:
    return cell["eval_dataset"] is not None and (
        cell["scale"] == "mini" or cell["eval_dataset"] != cell["column"]
    )


def cell_lines(cell: dict) -> list[str]:
    """The cell as plain text lines: paper, ours (mean ± std, n), Δ, scale [· stand-in]."""
    d = _digits(cell["unit"])
    lines = [f"paper {_fmt(cell['paper'], d)}"]
    if cell["status"] != "ok":
        return [*lines, f"{NOT_RUN} ({_REASON[cell['status']]})"]
    lines.append(f"ours {_fmt(cell['mean'], d)} ± {_fmt(cell['std'], d)} (n={cell['n']})")
    if cell["diff"] is not None:
        lines.append(f"Δ {_fmt(cell['diff'], d, sign=True)}")
    where = str(cell["scale"])
    if _show_dataset(cell):
        where += f" · {cell['eval_dataset']}"
    lines.append(where)
    return lines


def _hp_text(cell: dict) -> str:
    if cell["status"] != "ok":
        return NOT_RUN
    from vcr.records import fmt_float

    lr = fmt_float(cell["lr"]) if cell["lr"] else "recipe"  # lr=0 means the recipe's own lr
    return f"α={fmt_float(cell['alpha'])} β={fmt_float(cell['beta'])} lr={lr}"


SELECTION_TEXT = {
    "per_cell": "for the (α, β, lr) with the best mean validation score over seeds, chosen per "
    "cell on validation only (vcr.select)",
    "per_row": "for ONE (α, β, lr) per row (selection=per_row): the one with the best mean over "
    "the row's columns of the per-column mean validation score over seeds, chosen on "
    "validation only (vcr.select; the per_cell rule lets each VCR cell pick its own, which "
    "favours the VCR rows)",
}


def caption(
    spec: dict, cells: list[dict], numbers: dict | None = None, selection: str = "per_cell"
) -> str:
    """What was measured, the selection rule, the scale and the VCR cov_scale of the runs."""
    numbers = numbers if numbers is not None else load_paper_numbers()
    table = spec["table"]
    meta = table_meta(table, numbers)
    unit = meta.get("unit", "raw")
    # Group the column notes so "L-BFGS linear probe, top-1: Food, Cars, DTD" is said once.
    notes: dict[str, list[str]] = {}
    for col in spec["columns"]:
        cmeta = column_meta(col["key"], numbers)
        note = cmeta.get("note", "")
        if col.get("metric") and col["metric"] != cmeta.get("metric"):
            # say so when our records measure something other than the paper's metric
            note = f"{note} [ours: {col['metric']}]" if note else col["metric"]
        label = col.get("label") or column_meta(col["key"], numbers).get("label") or col["key"]
        notes.setdefault(note or "unspecified", []).append(label)
    measured = "; ".join(f"{', '.join(labels)}: {note}" for note, labels in notes.items())
    unit_text = "accuracy in %" if unit == "%" else "each metric in its own unit"
    cov = sorted({c["cov_scale"] for c in cells if c["cov_scale"]})
    cov_text = (
        f"VCR runs used cov_scale={'/'.join(cov)}."
        if cov
        else "No VCR run is among the rendered cells."
    )
    scale = spec.get("scale") or "/".join(sorted({str(c["scale"]) for c in cells if c["scale"]}))
    scale_text = f"Scale: {scale}."
    if scale == "mini":
        scale_text += (
            " Mini-scale cells name their stand-in dataset; their numbers are not comparable "
            "to the paper's."
        )
    n_run = sum(c["status"] == "ok" for c in cells)
    strength = _strength_text(spec, cells)
    text = (
        f"Table {table.removeprefix('table')}: {meta.get('title', '')}. "
        f"Measured ({unit_text}): {measured}. "
        "Each cell: the paper's number; ours = mean ± sample std (ddof=1; – when n=1) of the "
        f"test metric over seeds (n), {SELECTION_TEXT[selection]}; Δ = ours − paper. "
        f"{cov_text}{strength} {scale_text} {n_run}/{len(cells)} cells run."
    )
    counts = meta.get("class_counts")
    if counts:
        keys = [c["key"] for c in spec["columns"]]
        sup, sub = counts["num_superclasses"], counts["num_subclasses"]
        text += (
            " Paper's super/subclass counts: "
            + ", ".join(f"{k} {sup[k]}/{sub[k]}" for k in keys if k in sup and k in sub)
            + "."
        )
    return text


def _strength_text(spec: dict, cells: list[dict]) -> str:
    """' VCR strength ...: row a, row b.' per VCR row with a measured ratio, or ''."""
    parts = []
    for row in spec["rows"]:
        vals = [c.get("vcr_grad_ratio") for c in cells if c["row"] == row["key"]]
        vals = [v for v in vals if v is not None]
        if vals:
            parts.append(f"{row.get('label', row['key'])} {statistics.median(vals):.1e}")
    if not parts:
        return ""
    return (
        " VCR strength (the chosen runs' median over sites of ||g_vcr||/||g_task|| in their last "
        "epoch; about 2e-3 and below, bf16 cannot hold it next to the task gradient): "
        + "; ".join(parts)
        + "."
    )


def _grid(spec: dict, cells: list[dict], fn) -> list[list[str]]:
    by_key = {(c["row"], c["column"]): c for c in cells}
    return [
        [row.get("label", row["key"])]
        + [fn(by_key[(row["key"], col["key"])]) for col in spec["columns"]]
        for row in spec["rows"]
    ]


def _headers(spec: dict, cells: list[dict], numbers: dict) -> list[str]:
    labels = {c["column"]: c["column_label"] for c in cells}
    corner = table_meta(spec["table"], numbers).get("corner") or ""
    return [corner] + [labels[col["key"]] for col in spec["columns"]]


def render_markdown(
    spec: dict, cells: list[dict], numbers: dict | None = None, selection: str = "per_cell"
) -> str:
    from tabulate import tabulate

    numbers = numbers if numbers is not None else load_paper_numbers()
    headers = _headers(spec, cells, numbers)
    body = tabulate(
        _grid(spec, cells, lambda c: "<br>".join(cell_lines(c))),
        headers=headers,
        tablefmt="pipe",
        disable_numparse=True,
    )
    hps = tabulate(
        _grid(spec, cells, _hp_text), headers=headers, tablefmt="pipe", disable_numparse=True
    )
    number = spec["table"].removeprefix("table")
    return (
        f"### Table {number} ({spec.get('scale') or 'mixed scales'} scale)\n\n"
        f"{caption(spec, cells, numbers, selection)}\n\n{body}\n\n"
        f"Chosen hyperparameters (validation only):\n\n{hps}\n"
    )


_TEX_ESCAPE = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    # the captions' Unicode, so the .tex compiles with pdflatex and no inputenc tricks
    "±": r"$\pm$", "–": "--", "−": "$-$", "α": r"$\alpha$", "β": r"$\beta$",
    "Δ": r"$\Delta$", "·": r"$\cdot$",
}  # fmt: skip


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in str(text))


def _tex_cell(cell: dict) -> str:
    d = _digits(cell["unit"])
    lines = [f"paper {tex_escape(_fmt(cell['paper'], d))}"]
    if cell["status"] != "ok":
        lines.append(r"\emph{" + f"{NOT_RUN} ({tex_escape(_REASON[cell['status']])})" + "}")
    else:
        std = "--" if cell["std"] is None else _fmt(cell["std"], d)
        lines.append(f"ours ${_fmt(cell['mean'], d)} \\pm {std}$ ($n{{=}}{cell['n']}$)")
        if cell["diff"] is not None:
            lines.append(f"$\\Delta$ ${_fmt(cell['diff'], d, sign=True)}$")
        where = tex_escape(cell["scale"])
        if _show_dataset(cell):
            where += r" $\cdot$ \texttt{" + tex_escape(cell["eval_dataset"]) + "}"
        lines.append(where)
    return r"\begin{tabular}[t]{@{}c@{}}" + r"\\ ".join(lines) + r"\end{tabular}"


def render_latex(
    spec: dict, cells: list[dict], numbers: dict | None = None, selection: str = "per_cell"
) -> str:
    """A ``table*`` float (needs ``booktabs``) ready for ``\\input``."""
    numbers = numbers if numbers is not None else load_paper_numbers()
    headers = [tex_escape(h) for h in _headers(spec, cells, numbers)]
    rows = _grid(spec, cells, _tex_cell)
    lines = [
        r"\begin{table*}[t]",
        r"\centering",
        r"\scriptsize",
        r"\begin{tabular}{l" + "c" * len(spec["columns"]) + "}",
        r"\toprule",
        " & ".join(headers) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join([tex_escape(r[0]), *r[1:]]) + r" \\" for r in rows]
    lines += [
        r"\bottomrule",
        r"\end{tabular}",
        r"\caption{" + tex_escape(caption(spec, cells, numbers, selection)) + "}",
        r"\label{tab:" + spec["table"] + "}",
        r"\end{table*}",
    ]
    return "\n".join(lines) + "\n"


def render_csv(cells: list[dict]) -> str:
    import pandas as pd

    df = pd.DataFrame(cells, columns=list(CSV_COLUMNS))
    for col in ("n", "n_groups"):
        df[col] = df[col].astype("Int64")  # integers, empty when not run (not 1.0 / NaN)
    for col in ("mean", "std", "diff"):
        df[col] = df[col].astype(float).round(6)  # drop float noise like 1.0000000000000009
    return df.to_csv(index=False)


def write_outputs(
    spec: dict,
    cells: list[dict],
    out_prefix,
    numbers: dict | None = None,
    selection: str = "per_cell",
):
    """Write ``<out_prefix>.md``, ``.tex`` and ``.csv`` atomically; return the paths by suffix.

    All three texts are built before the first write, so an error leaves no partial output.
    """
    numbers = numbers if numbers is not None else load_paper_numbers()
    texts = {
        "md": render_markdown(spec, cells, numbers, selection),
        "tex": render_latex(spec, cells, numbers, selection),
        "csv": render_csv(cells),
    }
    out_prefix = Path(out_prefix)
    paths = {}
    for suffix, text in texts.items():
        path = out_prefix.with_name(f"{out_prefix.name}.{suffix}")
        io.write_text(path, text)
        paths[suffix] = path
    return paths


def render_table(
    spec: dict,
    records: list[dict],
    out_prefix,
    numbers: dict | None = None,
    selection: str = "per_cell",
) -> dict[str, Path]:
    """Select every cell from ``records`` and write the three outputs (see ``write_outputs``)."""
    numbers = numbers if numbers is not None else load_paper_numbers()
    cells = build_cells(spec, records, numbers, selection)
    return write_outputs(spec, cells, out_prefix, numbers, selection)
