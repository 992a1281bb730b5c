"""Turn a supervised run's own classifier accuracy (RUN_DIR/final.json) into a metric record.

    python workflow_scripts/classifier_metric.py --run RUN_DIR [--dataset NAME] --out OUT.json

Table 3 (long-tail CIFAR): protocol ``classifier``, metric ``top1``, val = final.json val_top1,
test = final.json test_top1 (accuracies as fractions).
"""

import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument(
        "--dataset",
        default=None,
        help="the eval dataset name the record carries (default: the run's own dataset)",
    )
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    from vcr.records import classifier_record, write_record

    write_record(args.out, classifier_record(args.run, args.dataset))
    return 0


if __name__ == "__main__":
    sys.exit(main())
