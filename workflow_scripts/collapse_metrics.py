"""Table 5 metrics of a run on its own training data: CDNV, NCC accuracy, MINE I(X; Z) in bits.

    python workflow_scripts/collapse_metrics.py --run RUN_DIR --manifest M --out-dir DIR \
        [--feature-cache DIR] [--set key=value ...] [--threads N] [--device auto|cpu|cuda]

Writes DIR/cdnv.json, DIR/ncc.json, DIR/mi.json (protocol ``collapse``; val = the run's
final.json val_top1 so the one selection rule applies; test = the metric). ``--set`` keys:
split, target, max_samples, extract_batch_size, extract_workers, cache_dtype and ``mine.<key>``
for vcr.metrics.MineConfig (e.g. mine.steps=500).
"""

import argparse
import sys

from vcr.cli import add_run_evaluation_arguments, parse_sets, set_threads


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--out-dir", required=True)
    add_run_evaluation_arguments(
        ap, set_help="collapse settings and mine.<key> (vcr.metrics.MineConfig)"
    )
    args = ap.parse_args(argv)

    from vcr.metrics import collapse_records
    from vcr.records import write_record

    set_threads(args.threads)
    records = collapse_records(
        args.run,
        args.manifest,
        feature_cache=args.feature_cache,
        sets=parse_sets(args.sets),
        device=args.device,
    )
    from pathlib import Path

    for name, rec in records.items():
        write_record(Path(args.out_dir) / f"{name}.json", rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
