"""Fig. 2 two-moons: train one method over seeds and save logit grids and margins.

    python workflow_scripts/two_moons.py --method none|l2|dropout|batchnorm|sd|vcr \
        --seeds 0-9 --out FILE.pt [--set key=value ...] [--threads N]

Writes (atomically) {"method", "seeds", "grid": {"xs", "ys"}, "logits": (S, 100, 100) with
logits[s, i, j] = f(xs[j], ys[i]), "margins": (S,), "X", "y" (seed 0's data), "config"}.
Settings: the ``two_moons`` recipe of vcr/recipes.py; see vcr/two_moons.py for the choices.
"""

import argparse
import sys
import time

from vcr.cli import add_compute_arguments, add_set_argument, parse_seeds, parse_sets, set_threads
from vcr.names import TWO_MOONS_METHODS


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", required=True, choices=TWO_MOONS_METHODS)
    p.add_argument("--seeds", default="0-9")
    p.add_argument("--out", required=True)
    add_set_argument(p, help="two_moons recipe keys (vcr.recipes)")
    add_compute_arguments(p, device=False)
    args = p.parse_args(argv)

    from vcr import io
    from vcr.two_moons import run_method

    set_threads(args.threads)
    t0 = time.perf_counter()
    result = run_method(args.method, parse_seeds(args.seeds), parse_sets(args.sets))
    io.torch_save(result, args.out)
    margins = ", ".join(f"{m:.3f}" for m in result["margins"].tolist())
    print(
        f"{args.method}: {len(result['seeds'])} seeds in {time.perf_counter() - t0:.1f}s, "
        f"margins [{margins}] -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
