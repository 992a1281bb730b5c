#!/usr/bin/env python
"""Render the claims ledger: every claim of the paper against this scale's records.

    python workflow_scripts/claims.py --specs work/mini/tables/table*.json \
        --records R1.json ... --two-moons work/mini/two_moons/*.pt \
        --out-md results/claims.md --out-csv results/claims.csv [--selection per_cell]

The logic (claims, evidence, verdicts) is in vcr.claims; this file only parses arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vcr.names import SELECTION_RULES


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--specs", nargs="+", required=True, help="table spec JSON files")
    ap.add_argument("--records", nargs="*", default=[], help="metric record files")
    ap.add_argument("--two-moons", nargs="*", default=[], help="two-moons result files (Fig. 2)")
    ap.add_argument("--selection", default="per_cell", choices=SELECTION_RULES)
    ap.add_argument("--out-md", required=True)
    ap.add_argument("--out-csv", required=True)
    args = ap.parse_args(argv)

    from vcr.claims import build_ledger, write_ledger
    from vcr.records import read_records
    from vcr.tables.render import load_spec

    missing = [p for p in (*args.specs, *args.records, *args.two_moons) if not Path(p).exists()]
    if missing:
        ap.error(f"input file(s) not found: {missing}")
    specs = [load_spec(p) for p in args.specs]
    two_moons = []
    if args.two_moons:
        from vcr.figures import load_two_moons

        two_moons = [load_two_moons(p) for p in args.two_moons]
    claims = build_ledger(specs, read_records(args.records), two_moons, selection=args.selection)
    scale = specs[0].get("scale")
    write_ledger(claims, args.out_md, args.out_csv, scale=scale, selection=args.selection)
    counts: dict[str, int] = {}
    for c in claims:
        counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
    print(f"{len(claims)} claims ({scale}): {counts} -> {args.out_md}, {args.out_csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
