# Named input and params functions: each looks one job up in the plan (vcr.plan.jobs.Plan) by
# the wildcards Snakemake matched.
import inspect
import json

from snakemake.common import overwrite_function_params


def store_parameters(fn):
    """Store ``fn``'s parameters for Snakemake, which reads them every time it calls an input,
    params or resources function (several times per job), with the hook Snakemake itself uses
    for functions whose parameters it should not inspect (README, "Dry-run time")."""
    overwrite_function_params(fn, inspect.signature(fn).parameters)
    return fn


def job_resources(rule):
    """The rule's resources from the plan (vcr.plan.jobs.Plan.rule_resources): constants where
    every job agrees, else per-job functions (their parameters stored here)."""
    res = PLAN.rule_resources(rule)
    return {k: store_parameters(v) if callable(v) else v for k, v in res.items()}


# --- pretrain (rules/pretrain.smk)
@store_parameters
def pretrain_manifest(wildcards):
    """The prepared pretraining dataset."""
    return PLAN.pretrain_job(wildcards.run).manifest


@store_parameters
def pretrain_spec(wildcards):
    """The run's RunSpec: the shell reads its fields ({params.run.method}, ...)."""
    return PLAN.pretrain_job(wildcards.run).spec


@store_parameters
def pretrain_launcher(wildcards):
    """python, vcr.launch (torchrun on one node) or srun ... vcr.launch (several nodes)."""
    return PLAN.launcher(wildcards.run)


@store_parameters
def pretrain_device(wildcards):
    """cuda for a run that asked for GPUs (cpu where they are fake), else cpu; never auto."""
    return PLAN.device("pretrain", wildcards.run)


@store_parameters
def pretrain_init_weights(wildcards):
    """The released torchvision weights an imported Table 1 baseline loads ("" otherwise)."""
    return PLAN.pretrain_job(wildcards.run).init_weights or ""


@store_parameters
def pretrain_overrides(wildcards):
    """Recipe overrides of the scale (key=value)."""
    return list(PLAN.pretrain_job(wildcards.run).overrides)


@store_parameters
def pretrain_probe_manifests(wildcards):
    """The datasets of the probes a pretraining job runs itself (config probe_in_pretrain)."""
    probes = PLAN.then_probe(wildcards.run)
    return list(dict.fromkeys(m for p in probes for m in p["manifests"]))


@store_parameters
def pretrain_then_probe(wildcards):
    """The run's probe jobs to run inside this job once it has finished (JSON; "": none):
    config probe_in_pretrain, vcr/probe_staging.py."""
    probes = PLAN.then_probe(wildcards.run)
    return json.dumps(probes, separators=(",", ":")) if probes else ""


# --- probe (rules/probe.smk)
@store_parameters
def probe_manifests(wildcards):
    """The prepared datasets a probe job reads, one per eval dataset."""
    return PLAN.probe_job(wildcards.run, wildcards.protocol, wildcards.evalname).manifests


@store_parameters
def probe_datasets(wildcards):
    """The eval datasets of a probe job (one, or a run's group: config probe_grouping)."""
    job = PLAN.probe_job(wildcards.run, wildcards.protocol, wildcards.evalname)
    return [d for d, _ in job.datasets]


@store_parameters
def probe_settings(wildcards):
    """--set items: the scale's probe overrides, and the probed label set."""
    return PLAN.probe_job(wildcards.run, wildcards.protocol, wildcards.evalname).settings


@store_parameters
def probe_device(wildcards):
    """cuda where the protocol's jobs ask for a GPU (cpu where it is fake), else cpu."""
    return PLAN.device("probe", wildcards.protocol)


@store_parameters
def classifier_dataset(wildcards):
    """The dataset name a Table 3 record carries."""
    return PLAN.classifier_job(wildcards.run, wildcards.evalname).datasets[0][0]


@store_parameters
def feature_cache(wildcards):
    """The run's cached frozen features."""
    return PLAN.feature_cache(wildcards.run)


# --- collapse (rules/analysis.smk)
@store_parameters
def collapse_manifest(wildcards):
    """The run's own prepared dataset (Table 5 measures the training features)."""
    return PLAN.collapse_job(wildcards.run).manifests


@store_parameters
def collapse_settings(wildcards):
    """--set items: the scale's collapse overrides (e.g. mine.steps)."""
    return PLAN.collapse_job(wildcards.run).settings


# --- tables (rules/tables.smk)
@store_parameters
def table_spec(wildcards):
    """The table's spec (rows, columns, "not run" columns), as the renderer reads it."""
    return PLAN.tables[wildcards.table].spec


@store_parameters
def table_records(wildcards):
    """Every metric record of the table's cells."""
    return PLAN.tables[wildcards.table].records


@store_parameters
def table_finals(wildcards):
    """The final.json of every run of the table (its log.jsonl is then complete)."""
    return [f"{PLAN.run_dir(run)}/final.json" for run in PLAN.tables[wildcards.table].runs]


def report_item(kind, path):
    """A table's report picture or page, in the report's Tables category beside the table."""
    return report(
        path,
        caption="../report/table_figures.rst",
        category="Tables",
        labels={"table": "{table}", "format": kind},
    )


def report_claims(path):
    """The claims ledger (results/claims.md) as a report item (the claims_ledger rule)."""
    return report(path, caption="../report/claims.rst", category="Claims")


# --- the study (rules/study.smk)
@store_parameters
def study_cell_manifests(wildcards):
    """The prepared datasets a study cell reads (pretraining set, probe sets)."""
    return PLAN.study.cell_manifests(wildcards.cell)


@store_parameters
def study_cell_job(wildcards):
    """The cell's runs as study_cell.py's --cell JSON (vcr.plan.study.StudyPlan.cell_job)."""
    return json.dumps(PLAN.study.cell_job(wildcards.cell, PLAN), separators=(",", ":"))


@store_parameters
def study_outputs(wildcards):
    """The study's report files; the study is planned at one scale (config study.scale)."""
    if PLAN.study is None:
        from vcr.errors import ConfigError

        raise ConfigError(
            f"`snakemake study` runs at scale {config.get('study', {}).get('scale', 'mini')!r} "
            f"(config study.scale), not at {SCALE!r}: add --config scale=<that scale>"
        )
    return [p for files in PLAN.study.outputs().values() for p in files]


# Snakemake evaluates every declared resource of every job through Resource.evaluate and reads
# that method's parameters each time (inspect.signature of a bound method: 65k calls, about a
# second, on the 4k-job paper dry run). Its parameters never change: store them once. Should a
# later Snakemake move the class, this only costs the second back.
try:
    from snakemake.resources import Resource

    store_parameters(Resource.evaluate)
except ImportError:
    pass
