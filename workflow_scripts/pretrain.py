"""Pretrain one run (supervised / SimCLR / VICReg, with or without VCR); see vcr/train.py.

    python workflow_scripts/pretrain.py --out RUN_DIR --scale S --method M --arch A \
        --dataset D --target T --recipe R --placement P --alpha A --beta B --lr LR --seed S \
        --cov-scale eq2 --delta 0 --manifest work/<scale>/data/<dataset>/manifest.json \
        [--init-weights PATH] [--set key=value ...] [--threads N] [--device auto|cpu|cuda]

Resumes from RUN_DIR/checkpoint.pt when present. Exit status 128+signal after a SIGTERM/SIGUSR1
checkpoint (resubmit to resume). Runs under torchrun or srun unchanged.
"""

import sys

from vcr.train import main

if __name__ == "__main__":
    sys.exit(main())
