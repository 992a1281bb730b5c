"""What each job asks SLURM for, and how a (possibly multi-node) trainer is started.

Resources come from ``config.yaml`` ``scales.<scale>.resources``, merged per job:
``RESOURCE_DEFAULTS`` <- ``default`` <- ``<kind>`` <- ``<kind>:<key>`` for each key in order
(a recipe, dataset or protocol with an entry of its own). The kinds are the rules, except that
the ``pretrain`` rule's imported Table 1 baselines take ``import_weights`` (no GPU, no time).
Multi-node entries (``nodes`` > 1) get ``mpi: srun`` and one task per node, so the rule's shell
starts one torchrun per node.
"""

from __future__ import annotations

from typing import Any

from vcr.errors import ConfigError

RESOURCE_KEYS = (
    "gpu",
    "gpu_model",
    "cpus_per_gpu",
    "cpus_per_task",
    "mem_mb",
    "runtime",
    "nodes",
    "tasks",
    "tasks_per_gpu",
    "mpi",
    "gres",
    "slurm_extra",
    "disk_mb",
)
RESOURCE_DEFAULTS = {
    "gpu": 0,
    "gpu_model": "",
    "cpus_per_gpu": 0,
    "cpus_per_task": 1,
    "mem_mb": 2000,
    "runtime": 30,
    "nodes": 1,
    "tasks": 1,
    # 0 keeps the slurm plugin from turning ``tasks`` into --ntasks-per-gpu for GPU jobs.
    "tasks_per_gpu": 0,
    "mpi": "",
    "gres": "",
    "slurm_extra": "",
    # a constant: Snakemake's built-in default stats every input file of every job (dry run)
    "disk_mb": 1000,
}


class ScaleResources:
    """The merged resources of a scale, cached by (kind, keys)."""

    def __init__(self, scale: str, table: dict | None):
        self.scale, self.table = scale, dict(table or {})
        self._cache: dict[tuple, dict] = {}

    def merged(self, kind: str, *keys: str) -> dict[str, Any]:
        cache_key = (kind, *keys)
        if cache_key not in self._cache:
            self._cache[cache_key] = self._merge(kind, *keys)
        return self._cache[cache_key]

    def _merge(self, kind: str, *keys: str) -> dict[str, Any]:
        merged = dict(RESOURCE_DEFAULTS)
        for name in ("default", kind, *(f"{kind}:{k}" for k in keys if k)):
            if name in self.table:
                merged.update(self.table[name])
        unknown = set(merged) - set(RESOURCE_KEYS)
        if unknown:
            raise ConfigError(f"scales.{self.scale}.resources: unknown key(s) {sorted(unknown)}")
        if merged["gpu"]:
            merged["cpus_per_task"] = 0  # per-GPU CPUs instead (slurm: --cpus-per-gpu)
        if int(merged["nodes"]) > 1:
            merged["mpi"] = merged["mpi"] or "srun"
            merged["tasks"] = int(merged["nodes"])
        return merged


def effective(res: dict) -> dict:
    """Drop the resources left at their 'unset' value (no sbatch flag for them)."""
    out = {}
    for k, v in res.items():
        if k in ("mem_mb", "runtime", "disk_mb") or (
            v and RESOURCE_DEFAULTS.get(k) != v and k != "nodes"
        ):
            out[k] = v
    if int(res.get("nodes", 1)) > 1:
        out["nodes"] = res["nodes"]
        out["tasks_per_gpu"] = 0  # else the slurm plugin turns tasks into --ntasks-per-gpu
    return out


def per_job(resources_by_key: dict[str, dict], key_of) -> dict[str, Any]:
    """A rule's ``resources:`` from each job's resources (``key_of(wildcards)`` names the job).

    A resource every job agrees on is a constant (Snakemake evaluates a callable resource per
    job, ~0.1 ms each on the 4k-job DAG); one that differs is a callable returning the job's
    value (None: the job does not use it, and Snakemake then leaves it out: no sbatch flag).
    """
    out: dict[str, Any] = {}
    for n in _union(resources_by_key.values()):
        values = {repr(r.get(n)) for r in resources_by_key.values()}
        first = next(iter(resources_by_key.values())).get(n)
        if len(values) == 1 and first is not None:
            out[n] = first
        else:
            out[n] = lambda wildcards, n=n: resources_by_key.get(key_of(wildcards), {}).get(n)
    return out


def _union(dicts) -> list[str]:
    names: dict[str, None] = {}
    for d in dicts:
        names.update(dict.fromkeys(d))
    return list(names)


def gres_count(gres: str) -> int:
    if not gres or not gres.startswith("gpu"):
        return 0
    last = gres.split(":")[-1]
    return int(last) if last.isdigit() else 1


def launcher(res: dict) -> str:
    """How to start a (possibly distributed) trainer for these resources."""
    gpus = int(res["gpu"]) or gres_count(res["gres"])
    if int(res["nodes"]) > 1:
        per_node = gres_count(res["gres"]) or max(1, gpus // int(res["nodes"]))
        # One torchrun per node (srun starts one task per node); rendezvous on the first node.
        return (
            f"{res['mpi']} torchrun --nnodes={res['nodes']} --nproc_per_node={per_node} "
            "--rdzv_backend=c10d --rdzv_id=$SLURM_JOB_ID "
            '--rdzv_endpoint="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)'
            ':29500"'
        )
    if gpus > 1:
        return f"torchrun --standalone --nproc_per_node={gpus}"
    return "python"
