#!/usr/bin/env python
"""Render one paper table beside ours: Markdown, LaTeX and CSV.

    python workflow_scripts/render_table.py --spec work/mini/tables/table1.json \
        --records R1.json R2.json ... --out-prefix results/tables/table1 \
        [--selection per_cell] [--also per_row=results/tables/table1.per_row]

Records files hold one metric record or a list of them (vcr.records). The logic is in
vcr.tables.render; this file only parses arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vcr.names import SELECTION_RULES


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--spec", required=True, help="table spec JSON (CONTRACT section 7)")
    ap.add_argument(
        "--records", nargs="*", default=[], help="metric record files (one record or a list)"
    )
    ap.add_argument("--out-prefix", required=True, help="writes PREFIX.md, PREFIX.tex, PREFIX.csv")
    ap.add_argument("--paper-numbers", default=None, help="override vcr/tables/paper_numbers.yaml")
    ap.add_argument(
        "--selection",
        default="per_cell",
        choices=SELECTION_RULES,
        help="how alpha/beta/lr are chosen (vcr.select) for --out-prefix",
    )
    ap.add_argument(
        "--also",
        nargs="*",
        default=[],
        metavar="RULE=PREFIX",
        help="also render the table under another selection rule into PREFIX.{md,tex,csv}",
    )
    args = ap.parse_args(argv)
    also = []
    for item in args.also:
        rule, sep, prefix = item.partition("=")
        if not sep or rule not in SELECTION_RULES or not prefix:
            ap.error(f"--also {item!r}: expected RULE=PREFIX with RULE in {SELECTION_RULES}")
        also.append((rule, prefix))

    from vcr.records import read_records
    from vcr.tables.paper import load_paper_numbers
    from vcr.tables.render import build_cells, load_spec, unmatched_records, write_outputs

    missing = [p for p in args.records if not Path(p).exists()]
    if missing:
        ap.error(f"record file(s) not found: {missing}")
    numbers = load_paper_numbers(args.paper_numbers)
    spec = load_spec(args.spec)
    records = read_records(args.records)
    # every rendering is built before the first is written: a selection error leaves no output
    cells = build_cells(spec, records, numbers, args.selection)
    other = [(build_cells(spec, records, numbers, rule), rule, prefix) for rule, prefix in also]
    paths = write_outputs(spec, cells, args.out_prefix, numbers, args.selection)
    for other_cells, rule, prefix in other:
        write_outputs(spec, other_cells, prefix, numbers, rule)
    n_ok = sum(c["status"] == "ok" for c in cells)
    stray = unmatched_records(spec, records)
    if stray:
        r = stray[0]
        print(
            f"warning: {len(stray)} record(s) fall in no cell of {spec['table']}, e.g. "
            f"eval_dataset={r['eval_dataset']!r} metric={r['metric']!r} "
            f"protocol={r.get('protocol')!r} run={r['run']}",
            file=sys.stderr,
        )
    print(
        f"{spec['table']}: {n_ok}/{len(cells)} cells run from {len(records)} records -> "
        + ", ".join(str(p) for p in paths.values())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
