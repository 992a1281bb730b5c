"""``python -m vcr.plan [--scale S] [--check-results | --check-study]``: the plan's job counts as
JSON, or the check of a finished run's tables and figure, or of the study's outputs (exit 1 and
a list of problems when incomplete)."""

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
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    for extra in args.configfile:
        cfg = deep_update(cfg, load_config(extra))
    plan = build_plan(validate_config(cfg), args.scale)
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
