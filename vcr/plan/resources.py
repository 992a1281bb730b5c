"""What each job asks SLURM for, and how a (possibly multi-node) trainer is started.

Resources come from ``config.yaml`` ``scales.<scale>.resources``, merged per job:
``RESOURCE_DEFAULTS`` <- ``default`` <- ``<kind>`` <- ``<kind>:<key>`` for each key in order
(a recipe, dataset or protocol with an entry of its own). The kinds are the rules, except that
the ``pretrain`` rule's imported Table 1 baselines take ``import_weights`` (no GPU, no time).

``gpu``, ``cpus_per_gpu`` and ``mem_mb`` are **per node**, as sbatch's ``--mem`` is: the paper's
"2 nodes x 8 GPUs" is ``nodes: 2, gpu: 8``. One node: ``gpu`` becomes the plugin's ``gpu``
(``sbatch --gpus=N``). Several nodes: it becomes ``gres: gpu[:model]:N`` (``sbatch
--gres=gpu:N``, per node; ``--gpus`` would be the job's total, which SLURM may spread unevenly),
with ``mpi: srun`` and one task per node, so the rule's shell starts one launcher per node
(:func:`launcher`).
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
        elif merged["gpu_model"]:
            merged["gpu_model"] = ""  # a model without GPUs would make the plugin ask for one
        if int(merged["nodes"]) > 1:
            if merged["gres"] and merged["gpu"]:
                raise ConfigError(
                    f"scales.{self.scale}.resources.{kind}: give the GPUs per node as gpu "
                    f"(not also gres={merged['gres']!r})"
                )
            if merged["gpu"]:  # per node: --gres=gpu[:model]:N
                model = f"{merged['gpu_model']}:" if merged["gpu_model"] else ""
                merged["gres"] = f"gpu:{model}{int(merged['gpu'])}"
                merged["gpu"], merged["gpu_model"] = 0, ""
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
    elif int(res.get("gpu", 0)) > 1:
        # --gpus is the job's total: without --nodes=1 SLURM may spread it over nodes, and
        # torchrun --standalone then sees only the first node's share (seen in the rehearsal)
        out["nodes"] = 1
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


def gpus_per_node(res: dict) -> int:
    return int(res["gpu"]) or gres_count(res["gres"])


def device(res: dict, gpu_device: str = "cuda") -> str:
    """The ``--device`` of a job: ``gpu_device`` (cuda; cpu where the GPUs are fake, as in the
    rehearsal) when it asks for GPUs, else cpu. Never ``auto``: a job that asked for a GPU must
    not train on the CPU because the node's driver does not fit the torch wheel."""
    return gpu_device if gpus_per_node(res) else "cpu"


def launcher(res: dict) -> str:
    """How to start a trainer for these resources: ``python`` (one process), ``python -m
    vcr.launch`` (torchrun on one node) or ``srun ... python -m vcr.launch`` (one launcher per
    node inside the job step; everything about the allocation is read there, see vcr.launch).
    On CPU (rehearsal) each "GPU" is one gloo process: the same command lines."""
    per_node, nodes = gpus_per_node(res), int(res["nodes"])
    if nodes > 1:
        # The rule's shell has lost the allocation's SLURM_* variables (slurm-jobstep plugin):
        # srun gets the whole layout explicitly. --kill-on-bad-exit: a failed node ends the
        # others at once instead of leaving them in a collective.
        cpus = int(res["cpus_per_gpu"]) * max(1, per_node) or int(res["cpus_per_task"])
        return (
            f"{res['mpi']} --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1"
            + (f" --cpus-per-task={cpus}" if cpus else "")
            + f" --mem=0 --kill-on-bad-exit=1 python -m vcr.launch --nnodes {nodes}"
            f" --nproc-per-node {max(1, per_node)}"
        )
    if per_node > 1:
        return f"python -m vcr.launch --nproc-per-node {per_node}"
    return "python"
