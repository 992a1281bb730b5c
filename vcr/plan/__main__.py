"""``python -m vcr.plan [--scale S] [--check-results | --check-study | --budget | --status]``:
the plan's job counts as JSON; the check of a finished run's tables and figure, or of the study's
outputs (exit 1 and a list of problems when incomplete); the cost before launch
(``vcr.plan.budget``); or where a run stands, read from the work folder only
(``vcr.plan.status``)."""

from __future__ import annotations

import argparse
import json

from vcr.names import SCALES, TARGETS
from vcr.plan.check import check_results, check_study
from vcr.plan.config import deep_update, load_config, validate_config
from vcr.plan.jobs import build_plan


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="config.yaml")
    ap.add_argument("--configfile", nargs="*", default=[], help="deep-merged over --config")
    ap.add_argument("--scale", default=None, choices=SCALES)
    ap.add_argument("--check-results", action="store_true")
    ap.add_argument("--check-study", action="store_true", help="the study's outputs instead")
    ap.add_argument("--targets", nargs="*", default=list(TARGETS), choices=TARGETS)
    ap.add_argument("--budget", action="store_true", help="jobs, GPU-hours, wall-clock hours")
    ap.add_argument("--gpus", type=int, default=None, help="cluster GPUs (budget, status ETA)")
    ap.add_argument("--cpus", type=int, default=None, help="cluster CPU cores (budget)")
    ap.add_argument(
        "--derive-figures", action="store_true", help="with --budget: measured figures as YAML"
    )
    ap.add_argument(
        "--max-error",
        type=float,
        default=None,
        help="with --budget: exit 1 unless the estimate of the measured jobs is within this "
        "fraction of their benchmark files (e.g. 0.25)",
    )
    ap.add_argument("--status", action="store_true", help="where a run stands (work folder)")
    ap.add_argument("--slurm", action="store_true", help="with --status: add squeue's states")
    ap.add_argument(
        "--active-minutes",
        type=float,
        default=30.0,
        help="with --status: a started job written to within this many minutes is running",
    )
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    for extra in args.configfile:
        cfg = deep_update(cfg, load_config(extra))
    plan = build_plan(validate_config(cfg), args.scale)
    if args.budget:
        from vcr.plan import budget

        if args.derive_figures:
            import yaml

            from vcr.plan import derive

            print(yaml.safe_dump(derive.derive_figures(plan), sort_keys=False, width=1000))
            return 0
        b = budget.make_budget(plan, args.targets, gpus=args.gpus, cpus=args.cpus)
        print(budget.format_budget(b))
        if args.max_error is not None:
            problem = budget.check_estimate(b, args.max_error)
            print(problem or f"estimate within {args.max_error:.0%} of the benchmark files")
            return 1 if problem else 0
        return 0
    if args.status:
        from vcr.plan import status

        st = status.make_status(
            plan,
            args.targets,
            active_minutes=args.active_minutes,
            slurm=args.slurm,
            gpus=args.gpus,
            cpus=args.cpus,
        )
        print(status.format_status(st))
        return 0
    if args.check_results or args.check_study:
        problems = check_study(plan) if args.check_study else check_results(plan, args.targets)
        for p in problems:
            print("PROBLEM:", p)
        what = "the study" if args.check_study else f"{len(args.targets)} target(s)"
        print(f"checked {what} at scale {plan.scale}: {len(problems)} problem(s)")
        return 1 if problems else 0
    print(json.dumps(plan.summary(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
