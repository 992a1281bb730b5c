"""The report's pictures of one table (``snakemake --report``): what selection saw and how the
chosen runs trained.

- **Heatmap** (``<prefix>_heatmap.png``): per VCR row x planned column, the validation metric
  that selection reads (mean ``val`` over seeds, the best lr for each (α, β)) on the α x β grid of
  that cell's records, the chosen cell outlined; the baseline row's number in the title.
- **Curves** (``<prefix>_curves.png``): per VCR row, the per-epoch ``log.jsonl`` of the runs
  chosen for its cells (mean over seeds; at most :data:`MAX_SETTINGS` settings, the most often
  chosen) against the table's baseline row of the same method/arch/recipe: training loss, and
  validation top-1 where the run logs it.
- **Page** (``<prefix>.html``): the rendered table (the renderer's cell text), both pictures and,
  when given, the claims ledger, in one self-contained HTML page (the Snakemake report shows one
  result at a time; this one shows them together).

The choice is the renderer's (``vcr.tables.render.build_cells`` -> ``vcr.select.select``): the
heatmap marks the same (α, β, lr) the table reports. Nothing here trains or reads ``test``
except through the rendered table.
"""

from __future__ import annotations

import base64
import html
import json
import math
import statistics
from collections import Counter
from pathlib import Path

from vcr import io
from vcr.names import REPORT_FIGURES
from vcr.records import RunSpec, fmt_float
from vcr.select import group_records
from vcr.tables.paper import load_paper_numbers, table_meta
from vcr.tables.render import build_cells, cell_lines, column_matches, matches

MAX_SETTINGS = 3  # curves per VCR row: its most often chosen (α, β, lr) settings
CURVE_KEYS = ("loss", "val_top1")  # log.jsonl keys drawn (val_top1 only where logged)


def _cell_records(spec, records, row, col):
    scale = spec.get("scale")
    return [
        r
        for r in records
        if (scale is None or r["run"].get("scale") == scale)
        and matches(row["match"], r["run"])
        and column_matches(col, r)
    ]


def _is_vcr(row) -> bool:
    return row["match"].get("placement", "none") != "none"


def _baseline_row(spec, row):
    """The table's row without VCR of the same method/arch/recipe (None: the table has none)."""
    same = ("method", "arch", "recipe", "dataset")
    for other in spec["rows"]:
        if not _is_vcr(other) and all(
            other["match"].get(k) == row["match"].get(k) for k in same if k in row["match"]
        ):
            return other
    return None


def val_grid(cell_records) -> dict[tuple[float, float], tuple[float, float]]:
    """``{(alpha, beta): (mean val over seeds, lr)}``, the best lr of each (α, β) (what selection
    maximises over); groups without a val are left out."""
    out: dict[tuple[float, float], tuple[float, float]] = {}
    for (a, b, lr), recs in group_records(cell_records).items():
        vals = [r["val"] for r in recs]
        if any(v is None for v in vals):
            continue
        m = statistics.fmean(vals)
        if (a, b) not in out or m > out[(a, b)][0]:
            out[(a, b)] = (m, lr)
    return out


def _factor(spec, numbers) -> float:
    return 100.0 if table_meta(spec["table"], numbers).get("unit", "raw") == "%" else 1.0


def draw_heatmaps(spec, records, cells, path, numbers=None) -> int:
    """The heatmap figure; returns the number of panels drawn (0: no VCR row of the table has
    records at this scale, and the figure says so instead of showing empty axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numbers = numbers if numbers is not None else load_paper_numbers()
    factor = _factor(spec, numbers)
    chosen = {(c["row"], c["column"]): c for c in cells if c["status"] == "ok"}
    cols = [c for c in spec["columns"] if c["eval_dataset"] is not None]
    rows = [r for r in spec["rows"] if _is_vcr(r)]
    n_r, n_c = max(1, len(rows)), max(1, len(cols))
    fig, axes = plt.subplots(n_r, n_c, figsize=(2.6 * n_c + 0.8, 2.4 * n_r + 0.8), squeeze=False)
    drawn = 0
    for i, row in enumerate(rows):
        base = _baseline_row(spec, row)
        for j, col in enumerate(cols):
            ax = axes[i][j]
            grid = val_grid(_cell_records(spec, records, row, col))
            if not grid:
                ax.axis("off")
                ax.set_title(f"{col.get('label', col['key'])}\nno records", fontsize=8)
                continue
            alphas = sorted({a for a, _ in grid}, reverse=True)
            betas = sorted({b for _, b in grid})
            z = [[grid[(a, b)][0] * factor if (a, b) in grid else math.nan for b in betas]
                 for a in alphas]  # fmt: skip
            im = ax.imshow(z, cmap="viridis", aspect="auto")
            for y, a in enumerate(alphas):
                for x, b in enumerate(betas):
                    if (a, b) in grid:
                        ax.text(x, y, f"{grid[(a, b)][0] * factor:.1f}", ha="center",
                                va="center", fontsize=7, color="white")  # fmt: skip
            pick = chosen.get((row["key"], col["key"]))
            if pick is not None and (pick["alpha"], pick["beta"]) in grid:
                y, x = alphas.index(pick["alpha"]), betas.index(pick["beta"])
                ax.add_patch(plt.Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, lw=2.5,
                                           edgecolor="red"))  # fmt: skip
            ax.set_xticks(range(len(betas)), [fmt_float(b) for b in betas], fontsize=7)
            ax.set_yticks(range(len(alphas)), [fmt_float(a) for a in alphas], fontsize=7)
            ax.set_xlabel("β", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{row.get('label', row['key'])}\nα", fontsize=8)
            title = col.get("label", col["key"])
            if base is not None and (base["key"], col["key"]) in chosen:
                title += (
                    f"\nbaseline val {chosen[(base['key'], col['key'])]['val_mean'] * factor:.1f}"
                )
            ax.set_title(title, fontsize=8)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
            drawn += 1
    if not drawn:
        for ax in axes.flat:
            ax.axis("off")
        axes[0][0].text(0.5, 0.5, "no VCR row with records", ha="center", va="center")
    _title(
        fig,
        f"Table {spec['table'].removeprefix('table')} ({spec.get('scale')}): mean validation "
        "metric over seeds per (α, β), best lr; red = the cell the table reports",
    )
    _save(fig, path)
    plt.close(fig)
    return drawn


def read_curves(run_dir) -> dict[str, list[tuple[int, float]]]:
    """``{key: [(epoch, value), ...]}`` of a run's ``log.jsonl`` (empty: no log)."""
    path = Path(run_dir) / "log.jsonl"
    out: dict[str, list[tuple[int, float]]] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        for k in CURVE_KEYS:
            if isinstance(entry.get(k), int | float):
                out.setdefault(k, []).append((int(entry["epoch"]), float(entry[k])))
    return out


def _mean_curve(run_dirs, key):
    by_epoch: dict[int, list[float]] = {}
    for d in run_dirs:
        for ep, v in read_curves(d).get(key, []):
            by_epoch.setdefault(ep, []).append(v)
    eps = sorted(by_epoch)
    return eps, [statistics.fmean(by_epoch[e]) for e in eps]


def _settings_runs(spec, records, row, cells, runs_root):
    """[(label, run dirs)] of the row's most often chosen (α, β, lr) settings."""
    picks = Counter(
        (c["alpha"], c["beta"], c["lr"])
        for c in cells
        if c["row"] == row["key"] and c["status"] == "ok"
    )
    out = []
    for (a, b, lr), n in picks.most_common(MAX_SETTINGS):
        dirs = sorted(
            {
                str(Path(runs_root) / RunSpec.from_dict(r["run"]).relpath())
                for col in spec["columns"]
                if col["eval_dataset"] is not None
                for r in _cell_records(spec, records, row, col)
                if (r["run"]["alpha"], r["run"]["beta"], r["run"]["lr"]) == (a, b, lr)
            }
        )
        lr_text = fmt_float(lr) if lr else "recipe"
        vcr = f" α={fmt_float(a)} β={fmt_float(b)}" if _is_vcr(row) else ""
        label = f"{row.get('label', row['key'])}{vcr} lr={lr_text} ({len(dirs)} runs, chosen in {n} cell{'s' if n > 1 else ''})"
        out.append((label, dirs))
    return out


def draw_curves(spec, records, cells, runs_root, path) -> int:
    """The curves figure; returns the number of curves drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = [r for r in spec["rows"] if _is_vcr(r)] or spec["rows"]
    fig, axes = plt.subplots(
        len(rows), len(CURVE_KEYS), figsize=(5.5 * len(CURVE_KEYS), 2.8 * len(rows) + 0.6),
        squeeze=False, sharex=True,
    )  # fmt: skip
    drawn = 0
    for i, row in enumerate(rows):
        base = _baseline_row(spec, row) if _is_vcr(row) else None
        groups = [(row, False)] + ([(base, True)] if base is not None else [])
        for j, key in enumerate(CURVE_KEYS):
            ax = axes[i][j]
            for g_row, is_base in groups:
                for label, dirs in _settings_runs(spec, records, g_row, cells, runs_root):
                    eps, ys = _mean_curve(dirs, key)
                    if not eps:
                        continue
                    style = dict(ls="--", color="grey") if is_base else {}
                    ax.plot(eps, ys, marker="o", ms=3, label=label, **style)
                    drawn += 1
            ax.set_xlabel("epoch", fontsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("train loss (epoch mean)" if key == "loss" else "val top-1", fontsize=8)
            ax.set_title(f"{row.get('label', row['key'])}: {key}", fontsize=9)
            ax.tick_params(labelsize=7)
            if ax.lines:
                ax.legend(fontsize=6)
            else:
                ax.text(0.5, 0.5, f"no {key} in the runs' log.jsonl", ha="center", va="center",
                        transform=ax.transAxes, fontsize=8)  # fmt: skip
    _title(
        fig,
        f"Table {spec['table'].removeprefix('table')} ({spec.get('scale')}): the chosen runs "
        "(mean over seeds) against the baseline (grey, dashed)",
    )
    _save(fig, path)
    plt.close(fig)
    return drawn


def _title(fig, text: str) -> None:
    """A suptitle wrapped to the figure's width, and a layout that leaves room for it."""
    import textwrap

    width = max(30, int(fig.get_figwidth() * 13))
    lines = textwrap.wrap(text, width)
    fig.suptitle("\n".join(lines), fontsize=9)
    top = 1 - (0.17 * len(lines) + 0.1) / fig.get_figheight()  # 9 pt lines are ~0.17 in
    fig.tight_layout()
    fig.subplots_adjust(top=min(top, fig.subplotpars.top))


def _save(fig, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    tmp.replace(path)


def _img(path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%">'


def page_html(spec, cells, figures: dict[str, Path], claims=None, numbers=None) -> str:
    """The table (the renderer's cell text), its pictures and the claims ledger as one page."""
    from tabulate import tabulate

    from vcr.tables.render import caption

    numbers = numbers if numbers is not None else load_paper_numbers()
    by_key = {(c["row"], c["column"]): c for c in cells}
    headers = [""] + [c.get("label") or c["key"] for c in spec["columns"]]
    body = [
        [html.escape(row.get("label", row["key"]))]
        + [
            "<br>".join(html.escape(x) for x in cell_lines(by_key[(row["key"], col["key"])]))
            for col in spec["columns"]
        ]
        for row in spec["rows"]
    ]
    table = tabulate(body, headers=headers, tablefmt="unsafehtml", disable_numparse=True)
    number = spec["table"].removeprefix("table")
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>Table {number}</title><style>body{{font-family:sans-serif;margin:1em}}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #bbb;"
        "padding:3px 6px;vertical-align:top}</style></head><body>",
        f"<h2>Table {number} ({html.escape(str(spec.get('scale')))} scale)</h2>",
        f"<p style='font-size:12px'>{html.escape(caption(spec, cells, numbers))}</p>",
        table,
    ]
    for kind, path in figures.items():
        parts += [f"<h3>{kind}</h3>", _img(path)]
    if claims is not None and Path(claims).is_file():
        parts += ["<h3>Claims ledger</h3>", f"<pre>{html.escape(Path(claims).read_text())}</pre>"]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_table_report(spec, records, runs_root, out_prefix, *, claims=None, numbers=None):
    """Write ``<out_prefix>_heatmap.png``, ``_curves.png`` and ``.html``; return the paths."""
    numbers = numbers if numbers is not None else load_paper_numbers()
    cells = build_cells(spec, records, numbers)
    prefix = Path(out_prefix)
    paths = {k: prefix.with_name(f"{prefix.name}_{k}.png") for k in REPORT_FIGURES}
    draw_heatmaps(spec, records, cells, paths["heatmap"], numbers)
    draw_curves(spec, records, cells, runs_root, paths["curves"])
    page = prefix.with_name(f"{prefix.name}.html")
    io.write_text(page, page_html(spec, cells, paths, claims, numbers))
    return {**paths, "page": page}


# ---------------------------------------------------------------------------------------------
# Checking a built Snakemake report (CI, after the mini run)
# ---------------------------------------------------------------------------------------------
def report_items(report_html) -> dict[str, dict]:
    """The results a Snakemake report embeds (its ``var results = {...}`` object), by name."""
    text = Path(report_html).read_text(encoding="utf-8")
    marker = "var results = "
    start = text.index(marker, text.index('<script id="results">')) + len(marker)
    obj, _ = json.JSONDecoder().raw_decode(text[start:])
    return obj


def check_report(report_html, tables) -> list[str]:
    """Problems with a built report: every table needs its page (HTML) and heatmap and curves
    (PNG images with data) among the report's results."""
    items = report_items(report_html)
    by_file = {Path(v.get("filename", k)).name: v for k, v in items.items()}
    problems = []
    for table in tables:
        for name, mime in [(f"{table}.html", "text/html")] + [
            (f"{table}_{kind}.png", "image/png") for kind in REPORT_FIGURES
        ]:
            item = by_file.get(name)
            if item is None:
                problems.append(f"{report_html}: no {name} among the report's results")
            elif item.get("mime_type") != mime or len(item.get("data_uri", "")) < 200:
                problems.append(f"{report_html}: {name} is not a {mime} with data")
    return problems


def main(argv=None) -> int:
    """``python -m vcr.report --check results/report.html [--tables table1 ...]``."""
    import argparse

    from vcr.names import TABLES

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--check", required=True, help="a report built by snakemake --report")
    ap.add_argument("--tables", nargs="*", default=list(TABLES))
    args = ap.parse_args(argv)
    problems = check_report(args.check, args.tables)
    for p in problems:
        print("PROBLEM:", p)
    n = len(report_items(args.check))
    print(f"{args.check}: {n} results, {len(problems)} problem(s) with the tables' pictures")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
