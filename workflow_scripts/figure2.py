#!/usr/bin/env python
"""Fig. 2: two-moons decision boundaries per method, and the margins CSV.

    python workflow_scripts/figure2.py --inputs work/mini/two_moons/none.pt ... \
        --out results/figures/figure2.png --margins results/tables/figure2_margins.csv

The logic is in vcr.figures; this file only parses arguments.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--inputs", nargs="+", required=True, help="two-moons .pt files, one per method"
    )
    ap.add_argument("--out", required=True, help="figure path (format from the suffix, e.g. .png)")
    ap.add_argument("--margins", default=None, help="margins CSV (method, mean, std, n)")
    args = ap.parse_args(argv)

    from vcr.figures import figure2

    summary = figure2(args.inputs, args.out, args.margins)
    for s in summary:
        std = "–" if s["std"] is None else f"{s['std']:.4f}"
        print(f"{s['method']:>10}: margin {s['mean']:.4f} ± {std} (n={s['n']})")
    print(f"wrote {args.out}" + (f" and {args.margins}" if args.margins else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
