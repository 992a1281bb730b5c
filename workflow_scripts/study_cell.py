"""Train and probe one cell of the eq. 2 / Algorithm 1 study (its seeds) in one process; see
vcr/study_cell.py.

    python workflow_scripts/study_cell.py --cell CELL_JSON [--threads N]

CELL_JSON is vcr.plan.study.StudyPlan.cell_job(): per run, the arguments the pretrain and probe
rules give pretrain.py and probe.py. Exit status 128+signal after a SIGTERM/SIGUSR1 checkpoint
(rerun to resume), as pretrain.py.
"""

import argparse
import json
import sys

from vcr.cli import add_compute_arguments


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cell", required=True, help="the cell's JSON (vcr.plan.study)")
    add_compute_arguments(ap, device=False)
    args = ap.parse_args(argv)
    cell = json.loads(args.cell)

    from vcr.preemption import Preempted
    from vcr.study_cell import run_cell

    try:
        run_cell(cell, threads=args.threads)
    except Preempted as p:
        print(f"{cell['cell']}: {p}; rerun to resume", file=sys.stderr, flush=True)
        return 128 + int(p.signum)
    return 0


if __name__ == "__main__":
    sys.exit(main())
