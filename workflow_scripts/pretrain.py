"""Pretrain one run (supervised / SimCLR / VICReg, with or without VCR); see vcr/train.py.

    python workflow_scripts/pretrain.py --out RUN_DIR --scale S --method M --arch A \
        --dataset D --target T --recipe R --placement P --alpha A --beta B --lr LR --seed S \
        --cov-scale eq2 --delta 0 --init scratch \
        --manifest work/<scale>/data/<dataset>/manifest.json \
        [--init-weights PATH] [--set key=value ...] [--threads N] [--device auto|cpu|cuda]

The flags are the fields of the run's ``vcr.records.RunSpec``. Resumes from
RUN_DIR/checkpoint.pt when present. Exit status 128+signal after a SIGTERM/SIGUSR1 checkpoint
(resubmit to resume). Runs under torchrun or srun unchanged. ``--then-probe JSON``: afterwards,
the run's probe jobs in this process, their records staged for them (vcr/probe_staging.py).
"""

from __future__ import annotations

import argparse
import sys

from vcr.cli import add_compute_arguments, add_set_argument, parse_sets
from vcr.names import COV_SCALES, PLACEMENTS, PRETRAIN_METHODS, RUN_INITS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--scale", required=True)
    p.add_argument("--method", required=True, choices=PRETRAIN_METHODS)
    p.add_argument("--arch", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--target", default="default")
    p.add_argument("--recipe", required=True)
    p.add_argument("--placement", default="none", choices=PLACEMENTS)
    p.add_argument("--alpha", type=float, default=0.0)
    p.add_argument("--beta", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=0.0, help="0 = the recipe's lr")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cov-scale", default="eq2", choices=COV_SCALES)
    p.add_argument("--delta", type=float, default=0.0)
    p.add_argument(
        "--init", default="scratch", choices=RUN_INITS, help="torchvision: needs --init-weights"
    )
    p.add_argument("--manifest", default=None)
    p.add_argument(
        "--init-weights", default=None, help="torchvision state dict (Table 1); empty: none"
    )
    add_set_argument(p, help="recipe overrides (vcr.recipes keys)")
    p.add_argument(
        "--then-probe",
        default="",
        help="JSON list of the run's probe jobs to run here once it has finished, their records "
        "staged for those jobs (config probe_in_pretrain; vcr/probe_staging.py); empty: none",
    )
    add_compute_arguments(p)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.init == "torchvision") != bool(args.init_weights):
        parser.error(
            f"--init {args.init} with --init-weights={args.init_weights or ''!r}: an imported "
            "baseline is --init torchvision --init-weights FILE, a trained run neither"
        )

    from dataclasses import fields

    from vcr.preemption import Preempted
    from vcr.records import RunSpec
    from vcr.train import run

    spec = RunSpec(**{f.name: getattr(args, f.name) for f in fields(RunSpec)})
    try:
        run(
            spec,
            args.out,
            manifest=args.manifest,
            overrides=parse_sets(args.sets),
            init_weights=args.init_weights or None,  # "--init-weights=" (the rules): none
            device=args.device,
            threads=args.threads,
        )
    except Preempted as p:
        print(f"{args.out}: {p}; resubmit to resume", file=sys.stderr, flush=True)
        return 128 + int(p.signum)
    if args.then_probe:
        import json

        from vcr.probe_staging import probe_ahead

        probe_ahead(args.out, json.loads(args.then_probe), threads=args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
