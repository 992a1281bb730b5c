"""The GPU layout of the pretraining jobs: each asks SLURM for the GPUs its recipe splits the
global batch over (the recipe's ``world_size``, after the scale's ``recipe_overrides``).

The per-GPU batch sets BatchNorm's and VCR's per-GPU statistics, so a job on another number of
GPUs would be another experiment; the plan refuses such a config before any job, and the
trainer checks the world size again at start (``vcr.run_checks.check_world_size``).
"""

from __future__ import annotations

from vcr.errors import ConfigError
from vcr.plan.resources import gpus_per_node


def check_world_sizes(plan) -> None:
    """Raise ConfigError naming the (recipe, dataset) whose GPU count is not its world size."""
    from vcr.recipes import RECIPES

    problems = []
    for key, job in plan.pretrain.items():
        if job.init_weights:
            continue  # an import trains nothing
        res = plan.pretrain_resources(key)
        per_node = gpus_per_node(res)
        if not per_node:
            continue  # CPU jobs (mini): one process
        gpus = per_node * int(res["nodes"])  # gpu is per node (vcr.plan.resources)
        sets = dict(o.split("=", 1) for o in job.overrides)
        want = int(sets.get("world_size", RECIPES[job.spec.recipe].world_size))
        if want and gpus != want:
            problems.append(
                f"{job.spec.recipe} on {job.spec.dataset}: {res['nodes']} node(s) x {per_node} "
                f"GPUs in scales.{plan.scale}.resources, the recipe's world_size is {want}"
            )
    if problems:
        raise ConfigError(
            "GPU count != recipe world_size (set the resources' nodes x gpu per node, or the recipe's world_size "
            "in recipe_overrides.<recipe>[:<dataset>]): " + "; ".join(sorted(set(problems))[:5])
        )
