"""Probe a pretrained run's frozen backbone on one or more eval datasets (vcr/probe.py).

    python workflow_scripts/probe.py --run RUN_DIR --protocol lbfgs|sgd|adamw|finetune \
        --eval-dataset NAME [NAME ...] --manifest M [M ...] --out OUT.json \
        [--feature-cache DIR] [--set key=value ...] [--threads N] [--device auto|cpu|cuda]

Writes one metric record (vcr.records), or a JSON list of records when several eval datasets
are given (one manifest per dataset, same order). Features are cached under
DIR/<dataset>-<target>/<split>.pt (default DIR: RUN_DIR/features). ``--set`` keys: the
protocol's config fields (vcr.probes: LbfgsConfig, SgdConfig, AdamwConfig, FinetuneConfig) and
target, extract_batch_size, extract_workers, cache_dtype. Where the run's pretraining job
already probed it for exactly these arguments (config probe_in_pretrain; vcr/probe_staging.py),
takes those records instead.
"""

import argparse
import sys

from vcr.cli import add_run_evaluation_arguments
from vcr.names import PROBE_PROTOCOLS


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--protocol", required=True, choices=PROBE_PROTOCOLS)
    ap.add_argument("--eval-dataset", required=True, nargs="+")
    ap.add_argument("--manifest", required=True, nargs="+")
    ap.add_argument("--out", required=True)
    add_run_evaluation_arguments(ap, set_help="protocol config keys and the common settings")
    args = ap.parse_args(argv)

    from vcr.probe_staging import take_staged

    # records the run's pretraining job computed for exactly this job (probe_in_pretrain)
    call = {
        "protocol": args.protocol, "datasets": args.eval_dataset, "manifests": args.manifest,
        "settings": args.sets, "feature_cache": args.feature_cache, "device": args.device,
        "out": args.out,
    }  # fmt: skip
    if take_staged(args.run, call):
        print(f"{args.out}: the records the pretraining job staged for this job", flush=True)
        return 0

    from vcr.probes import evaluate_call
    from vcr.records import write_records

    records = evaluate_call(args.run, call, threads=args.threads)
    write_records(args.out, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
