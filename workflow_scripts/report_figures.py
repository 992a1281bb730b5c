#!/usr/bin/env python
"""The report's page and pictures of one table: the alpha x beta heatmap of the validation metric
(chosen cell marked), the chosen runs' training curves against the baseline, and one HTML page
with the table, both pictures and the claims ledger (when given).

    python workflow_scripts/report_figures.py --spec work/mini/tables/table2.json \
        --records R1.json ... --runs-root work/mini/runs --out-prefix results/report/table2

The logic is in vcr.report; this file only parses arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--spec", required=True, help="table spec JSON (CONTRACT section 7)")
    ap.add_argument("--records", nargs="*", default=[], help="metric record files")
    ap.add_argument("--runs-root", required=True, help="work/<scale>/runs (the runs' log.jsonl)")
    ap.add_argument("--out-prefix", required=True, help="PREFIX.html, PREFIX_{heatmap,curves}.png")
    ap.add_argument("--claims", default=None, help="the claims ledger (Markdown) to include")
    args = ap.parse_args(argv)

    from vcr.records import read_records
    from vcr.report import write_table_report
    from vcr.tables.render import load_spec

    missing = [p for p in args.records if not Path(p).exists()]
    if missing:
        ap.error(f"record file(s) not found: {missing}")
    spec = load_spec(args.spec)
    paths = write_table_report(
        spec, read_records(args.records), args.runs_root, args.out_prefix, claims=args.claims
    )
    print(f"{spec['table']}: " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
