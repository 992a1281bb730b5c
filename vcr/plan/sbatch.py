"""The sbatch line the slurm executor plugin would submit for each kind of job of a plan, built
by the plugin's own functions (``get_submit_command`` + ``set_gres_string``, as its
``run_job`` does) from the resources the rules declare. ``snakemake -n`` never shows them.

    python -m vcr.plan.sbatch [--scale paper] [--configfile FILE] [--partition gpu]

Imports the plugin only when called (``vcr.plan`` itself imports no snakemake).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vcr.plan import resources as R


class _Resources(dict):
    """What the plugin reads of ``job.resources``: ``.get(key)`` and attribute access."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


class _Job:
    def __init__(self, rule: str, resources: dict, threads: int = 1):
        self.name, self.resources, self.threads = rule, _Resources(resources), threads

    def is_group(self) -> bool:
        return False


def sbatch_line(rule: str, resources: dict, *, partition: str = "gpu", threads: int = 1) -> str:
    """The plugin's sbatch call for a job of ``rule`` with these (effective) resources."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    job = _Job(rule, resources, threads)
    params = {
        "run_uuid": "RUN",
        "slurm_logfile": f".snakemake/slurm_logs/rule_{rule}/%j.log",
        "comment_str": f"rule_{rule}",
        "account": "",
        "partition": f"-p {partition}" if partition else "",
        "workdir": "",
    }
    call = get_submit_command(job, params) + set_gres_string(job)
    return " ".join(call.split())


def job_kinds(plan) -> list[tuple[str, str, dict]]:
    """``(label, rule, effective resources)`` of each distinct kind of job of the plan."""
    kinds: dict[tuple, tuple[str, str, dict]] = {}

    def add(label, rule, res, kind=""):
        eff = R.effective(res)
        kinds.setdefault((rule, kind, repr(sorted(eff.items()))), (label, rule, eff))

    for key, job in plan.pretrain.items():
        res = plan.pretrain_resources(key)
        nodes, gpus = int(res["nodes"]), R.gpus_per_node(res)
        layout = f"{nodes} nodes x {gpus} GPUs" if nodes > 1 else f"{gpus} GPU(s)"
        add(f"pretrain ({job.resource_kind}, {layout}, e.g. {job.spec.recipe})", "pretrain", res)
    rules = {"probe": "probe", "collapse": "collapse", "classifier": "classifier_metric"}
    for ev in {id(e): e for e in plan.evals.values()}.values():
        rule, key = rules[ev.kind], (ev.protocol if ev.kind == "probe" else "")
        add(f"{rule} {key}".strip(), rule, plan.resources.merged(rule, key), kind=key)
    for rule in ("prepare_data", "two_moons", "plot_figure2", "table_spec", "render_table"):
        add(rule, rule, plan.resources.merged(rule))
    return list(kinds.values())


def main(argv=None) -> int:
    from vcr.plan import build_plan, load_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default="paper")
    ap.add_argument(
        "--configfile", default=str(Path(__file__).resolve().parents[2] / "config.yaml")
    )
    ap.add_argument("--partition", default="gpu")
    args = ap.parse_args(argv)
    plan = build_plan(load_config(args.configfile), args.scale)
    for label, rule, res in job_kinds(plan):
        print(f"{label}:\n    {sbatch_line(rule, res, partition=args.partition)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
