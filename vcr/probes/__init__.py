"""Probes of a pretrained run (PAPER_PROTOCOLS.md §4, §5, B.2), one module per protocol family.

Registry ``PROTOCOLS`` (``vcr.probes.run``; names from ``vcr.names.PROBE_PROTOCOLS``), each with a
config dataclass whose fields are the ``--set`` keys of ``workflow_scripts/probe.py``:

- ``lbfgs`` (``vcr.probes.lbfgs``): Kornblith/SimCLR linear evaluation, Tables 1/4/6 transfer
  columns; the solver is ``vcr.probes.lbfgs_solver``.
- ``sgd`` (``vcr.probes.heads``): the VICReg-paper linear evaluation for iNat18 / Places205.
- ``adamw`` (``vcr.probes.heads``): the Table 2 subclass probe.
- ``finetune`` (``vcr.probes.finetune``): ImageNet-1% fine-tuning of backbone + head.

Conventions shared by every probe:

- Accuracies are fractions in [0, 1] (``vcr.scoring``). ``metric`` is ``top1`` or
  ``mean_per_class`` (mean of the per-class recalls over the classes present in the scored
  split), as ``vcr.data.dataset_info`` says for the dataset.
- Nothing is ever chosen on test: hyper-parameters (λ) and epochs are chosen on ``val``; the test
  split is scored once, after every choice is made. ``tests/test_probe.py`` proves it for λ.
- Features are z-scored with the statistics of the split the classifier is fitted on
  (``standardize=True``; see ``vcr.probes.lbfgs`` for why).

The scikit-learn reference the ``lbfgs`` probe is tested and benchmarked against lives with the
benchmark (``vcr.bench_probe.sklearn_probe_reference``).
"""

from vcr.probes.finetune import FinetuneConfig, finetune
from vcr.probes.heads import (
    SGD_SCHEDULES,
    AdamwConfig,
    SgdConfig,
    linear_probe_adamw,
    linear_probe_sgd,
)
from vcr.probes.lbfgs import LAMBDA_GRIDS, LbfgsConfig, lambda_grid, linear_probe_lbfgs
from vcr.probes.run import (
    COMMON_SETTINGS,
    PROTOCOLS,
    evaluate_call,
    evaluate_run,
    get_protocol,
    make_config,
    split_config,
)

__all__ = [
    "COMMON_SETTINGS",
    "LAMBDA_GRIDS",
    "PROTOCOLS",
    "SGD_SCHEDULES",
    "AdamwConfig",
    "FinetuneConfig",
    "LbfgsConfig",
    "SgdConfig",
    "evaluate_call",
    "evaluate_run",
    "finetune",
    "get_protocol",
    "lambda_grid",
    "linear_probe_adamw",
    "linear_probe_lbfgs",
    "linear_probe_sgd",
    "make_config",
    "split_config",
]
