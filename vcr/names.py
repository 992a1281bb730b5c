"""Every name list of the project, defined once (pure Python: the Snakefile imports it).

Wildcard regexes (``Snakefile``), argparse ``choices`` (``workflow_scripts/``, the trainer) and
the registries (``vcr.attach``, ``vcr.probes``, ``vcr.two_moons``) are built from these tuples;
the enums of ``config.schema.yaml`` and ``vcr/plan/design.schema.yaml`` are checked against them
by ``tests/test_names.py``.
"""

from __future__ import annotations

SCALES = ("mini", "rehearsal", "cifar", "paper")

# VCR placements (App. A; Table 6's VCR1-4 are final, blocks, downsample, blocks+downsample).
PLACEMENTS = ("none", "blocks", "final", "downsample", "blocks+downsample")
COV_SCALES = ("eq2", "alg1")  # eq. 2 (1/(n-1)) | Algorithm 1 as printed (beta x (n-1))
# The fast op's backward options (vcr.regularizer.VCRLayer; recipe keys vcr_rounding, vcr_matmul):
# how a bf16 output's summed gradient is rounded, and the precision of the two products.
VCR_ROUNDINGS = ("stochastic", "nearest")
VCR_MATMULS = ("fp32", "bf16")

PRETRAIN_METHODS = ("supervised", "simclr", "vicreg")
TARGET_LABELS = ("default", "super", "sub")  # label sets of a dataset

# Evaluations of a pretrained run: the probe protocols (vcr.probes.PROTOCOLS) and the two
# measurements a table takes from the run itself.
PROBE_PROTOCOLS = ("lbfgs", "sgd", "adamw", "finetune")
RUN_MEASUREMENTS = ("classifier", "collapse")
COLLAPSE_METRICS = ("cdnv", "ncc", "mi")  # Table 5, one record each
# Datasets scored by mean per-class accuracy (Kornblith et al.; SimCLR App. B.8); top-1 elsewhere.
MEAN_PER_CLASS_DATASETS = ("aircraft", "pets", "flowers")

# Fig. 2 (the two-moons toy), in the paper's panel order.
TWO_MOONS_METHODS = ("none", "l2", "dropout", "batchnorm", "sd", "vcr")

TABLES = ("table1", "table2", "table3", "table4", "table5", "table6")
# The report's pictures of each table (vcr.report; rules/tables.smk report_figures), beside its page
REPORT_FIGURES = ("heatmap", "curves")
FIGURES = ("figure2",)
LEDGERS = ("claims",)  # results/claims.md: every claim of the paper against our records
TARGETS = TABLES + FIGURES + LEDGERS

# How a table chooses alpha/beta/lr on validation (vcr.select): each cell its own, or one per row.
SELECTION_RULES = ("per_cell", "per_row")
# Table 1's baselines (config scales.<s>.table1_baseline): torchvision's released weights, trained
# with the recipe like every other run, or both (two rows beside the paper's one).
TABLE1_BASELINES = ("torchvision_weights", "train", "both")
# How a pretraining run starts: from scratch, or from torchvision's released weights (Table 1).
RUN_INITS = ("scratch", "torchvision")


def regex(names) -> str:
    """``("a", "b+c")`` -> ``"a|b\\+c"``: a Snakemake wildcard constraint matching exactly these."""
    import re

    return "|".join(re.escape(n) for n in names)
