#!/usr/bin/env python
"""Verify (or generate, for mini datasets) one dataset and write OUT/manifest.json.

    python workflow_scripts/prepare_data.py --dataset NAME --data-root DIR --out DIR \
        [--seed S] [--allow-download] [--set key=value ...]

``--set`` passes dataset options (e.g. ``strict=false``, ``subset_file=PATH``,
``overlap=error``, ``lt_val_head=holdout``); see README "Data". Exit status 2 with the
DatasetError text (what is missing, where it was looked for, how to obtain it) on failure; no
manifest is left behind then.
"""

from __future__ import annotations

import argparse
import sys
import time

from vcr.cli import add_set_argument, parse_sets


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-root", default=None, help="folder holding the real datasets")
    p.add_argument("--out", required=True, help="output folder for manifest.json and the index")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--allow-download", action="store_true")
    add_set_argument(p, help="dataset options (README 'Data')")
    args = p.parse_args(argv)

    from vcr.data import DATASETS, dataset_info, prepare_dataset
    from vcr.errors import ConfigError, DatasetError

    try:
        opts = parse_sets(args.sets)
    except ConfigError as e:
        p.error(str(e))
    if args.dataset not in DATASETS:
        p.error(f"--dataset {args.dataset!r}: unknown; known: {', '.join(sorted(DATASETS))}")
    t0 = time.perf_counter()
    try:
        path = prepare_dataset(
            args.dataset,
            data_root=args.data_root,
            out_dir=args.out,
            seed=args.seed,
            allow_download=args.allow_download,
            **opts,
        )
    except (DatasetError, ConfigError) as e:
        print(f"prepare_data: {e}", file=sys.stderr)
        return 2
    info = dataset_info(path)
    print(
        f"{args.dataset}: {info['split_sizes']} classes={info['num_classes']} -> {path} "
        f"({time.perf_counter() - t0:.2f}s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
