"""The eq. 2 / Algorithm 1 study's report (vcr/study.py): tables, tests and heatmaps.

    python workflow_scripts/study_report.py --spec work/mini/study/spec.json --out-dir results/study

Reads the spec written by the ``study_spec`` rule (vcr.plan.study) and, through it, every study
run's final.json, log.jsonl and probe record; writes study.md, settings.csv, best.csv,
effects.csv, conventions.csv and heatmap_<metric>_<convention>.png into OUT_DIR.
"""

import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", required=True)
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args(argv)

    from vcr import io
    from vcr.study import write_report

    tables = write_report(io.read_json(args.spec), args.out_dir)
    for r in tables["best"]:
        print(
            f"{r['arch']} {r['metric']} {r['cov_scale']}: best (a={r['alpha']:g}, b={r['beta']:g})"
            f" test {100 * r['test_mean']:.1f} vs baseline {100 * r['baseline_test_mean']:.1f}"
            f" (p={r['p_paired']})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
