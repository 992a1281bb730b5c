"""The pipeline's plan, one module per job:

- ``vcr.plan.design``: the paper's design, ``vcr/design.yaml``, read and checked;
- ``vcr.plan.jobs``: config + design -> every job (:class:`Plan`, :func:`build_plan`);
- ``vcr.plan.rows``: a design row's variants (imported/trained baselines, eq2/alg1 rows);
- ``vcr.plan.counts``: the jobs each target runs, by rule;
- ``vcr.plan.layout``: every GPU job asks for its recipe's world size;
- ``vcr.plan.resources``: SLURM resources per job and the trainer's launcher;
- ``vcr.plan.check``: the results check of a finished run;
- ``vcr.plan.config``: reading and validating ``config.yaml`` as Snakemake does;
- ``python -m vcr.plan`` (``__main__``): job counts, or the results check.

Importing it imports neither torch nor snakemake (the Snakefile imports it).
"""

from pathlib import Path

from vcr.names import FIGURES, LEDGERS, SCALES, TABLES, TARGETS
from vcr.plan.check import check_results
from vcr.plan.config import deep_update, load_config, validate_config
from vcr.plan.design import load_design
from vcr.plan.jobs import Evaluation, Plan, Pretrain, TablePlan, build_plan

# Code files of the rendering rules, declared as their inputs: editing the renderer (or the
# paper numbers) reruns the rendering jobs and nothing else. Training/probe code is not tracked
# this way on purpose (a comment edit must not retrain 1,800 runs); rerun those explicitly.
RENDER_CODE = (
    "workflow_scripts/render_table.py",
    "vcr/tables/render.py",
    "vcr/tables/paper_numbers.yaml",
    "vcr/select.py",
    "vcr/tables/paper.py",
)
FIGURE_CODE = ("workflow_scripts/figure2.py", "vcr/figures.py")
CLAIMS_CODE = ("workflow_scripts/claims.py", "vcr/claims.py", *RENDER_CODE[1:])
REPORT_CODE = ("workflow_scripts/report_figures.py", "vcr/report.py", *RENDER_CODE[1:])
STUDY_CODE = ("workflow_scripts/study_report.py", "vcr/study.py", "vcr/study_heatmaps.py")


def compile_bytecode(root) -> None:
    """Byte-compile ``vcr/`` and ``workflow_scripts/`` below ``root`` (see the Snakefile)."""
    import compileall

    for folder in ("vcr", "workflow_scripts"):
        try:
            compileall.compile_dir(Path(root) / folder, quiet=1)
        except OSError:  # a read-only checkout: every job compiles what it imports
            pass


__all__ = [
    "CLAIMS_CODE",
    "FIGURES",
    "FIGURE_CODE",
    "LEDGERS",
    "RENDER_CODE",
    "REPORT_CODE",
    "STUDY_CODE",
    "SCALES",
    "TABLES",
    "TARGETS",
    "Evaluation",
    "Plan",
    "Pretrain",
    "TablePlan",
    "build_plan",
    "check_results",
    "compile_bytecode",
    "deep_update",
    "load_config",
    "load_design",
    "validate_config",
]
