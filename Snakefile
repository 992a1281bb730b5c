"""vcr-repro: every table and figure of Zhu et al. 2023 (VCR) as a Snakemake target.

    snakemake --cores 2                         # everything, mini scale (CPU, minutes)
    snakemake --cores 2 table3                  # one table (only what it needs)
    snakemake --profile slurm                   # paper scale on a SLURM cluster
    snakemake --report results/report.html      # HTML report of the tables and Fig. 2

This file reads the config, validates it and asks vcr.plan for the jobs; the paper's design
(what each table trains and measures) is vcr/design.yaml. rules/common.smk holds the named
input/params functions (lookups into the plan), rules/*.smk one rule per step, each calling a
thin CLI in workflow_scripts/.
"""

from snakemake.utils import min_version, validate

from vcr import names
from vcr import plan as vcr_plan

min_version("9.0")


configfile: "config.yaml"


validate(config, "config.schema.yaml")
# Every job imports vcr from this checkout (also on cluster nodes and in --use-conda envs). The
# thread variables need no prefix: Snakemake's shell() sets OMP_NUM_THREADS, MKL_NUM_THREADS,
# OPENBLAS_NUM_THREADS, ... to each rule's `threads:` for every job.
shell.prefix(f"export PYTHONPATH='{workflow.basedir}'${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")
PLAN = vcr_plan.build_plan(config)
SCALE = PLAN.scale
WORK = PLAN.work


wildcard_constraints:
    scale=SCALE,
    # a run folder below work/<scale>/runs/: RunSpec.relpath() (7 levels)
    run=r"[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+){6}",
    dataset=r"[a-z0-9_]+",
    table=names.regex(names.TABLES),
    protocol=names.regex(names.PROBE_PROTOCOLS),
    evalname=r"[A-Za-z0-9_.+]+",
    method=names.regex(names.TWO_MOONS_METHODS),


# Compile this checkout's bytecode once: where PYTHONDONTWRITEBYTECODE is set (the project's
# machines and CI), every job would otherwise compile the vcr modules it imports, ~0.2 s of CPU
# per process. A no-op when the bytecode is current; a read-only checkout just skips it.
onstart:
    vcr_plan.compile_bytecode(workflow.basedir)


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/pretrain.smk"
include: "rules/probe.smk"
include: "rules/analysis.smk"
include: "rules/tables.smk"
include: "rules/study.smk"


rule all:
    default_target: True
    input:
        PLAN.all_targets(),


# One named target per table and figure; each depends only on what that table needs.
for _target in names.TARGETS:

    rule:
        name:
            _target
        input:
            PLAN.target_files(_target),
