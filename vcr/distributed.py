"""Process-group setup for one trainer that runs alone, under torchrun, or under SLURM srun.

Rank and world size come from torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK) when they
are set, else from SLURM's (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, with MASTER_ADDR the first
node of the job step and a per-job port, as ``vcr.launch`` finds them, when the launcher did not
set them), else one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    source: str = "single"  # single | torchrun | slurm
    nodes: int = 1
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def layout(self) -> dict:
        """What run.json records of the process layout."""
        return {"nodes": self.nodes, "processes_per_node": self.local_world_size}


def dist_info_from_env(env=None) -> DistInfo:
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        world = int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_WORLD_SIZE", world))
        return DistInfo(
            int(env["RANK"]),
            world,
            int(env.get("LOCAL_RANK", 0)),
            "torchrun",
            nodes=int(env.get("GROUP_WORLD_SIZE", max(1, world // max(1, local)))),
            local_world_size=local,
        )
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        nodes = int(env.get("SLURM_NNODES", "1"))
        return DistInfo(
            int(env["SLURM_PROCID"]),
            int(env["SLURM_NTASKS"]),
            int(env.get("SLURM_LOCALID", 0)),
            "slurm",
            nodes=nodes,
            local_world_size=int(env["SLURM_NTASKS"]) // max(1, nodes),
        )
    return DistInfo()


def ranks_where(flag: bool, device="cpu") -> list[int]:
    """The ranks on which ``flag`` is true, known on every rank (one all-reduce)."""
    if world_size() == 1:
        return [0] if flag else []
    t = torch.zeros(world_size(), device=device)
    t[rank()] = 1.0 if flag else 0.0
    dist.all_reduce(t)
    return [int(r) for r in torch.nonzero(t).flatten().tolist()]


def init_distributed(device_type: str = "cpu", *, env=None) -> DistInfo:
    """Join the default process group if the environment asks for more than one process.

    Backend: nccl for CUDA, gloo for CPU. Idempotent: returns the info if already initialised.
    """
    info = dist_info_from_env(env)
    if not info.distributed:
        return info
    if dist.is_initialized():
        return info
    if info.source == "slurm":  # srun started every process itself (no torchrun)
        from vcr.launch import hostnames, node_address, rendezvous_port

        if "MASTER_ADDR" not in os.environ:
            first = hostnames(os.environ.get("SLURM_JOB_NODELIST", ""))[0]
            os.environ["MASTER_ADDR"] = node_address(first)
        os.environ.setdefault("MASTER_PORT", str(rendezvous_port(os.environ["SLURM_JOB_ID"])))
        os.environ["RANK"] = str(info.rank)
        os.environ["WORLD_SIZE"] = str(info.world_size)
        os.environ["LOCAL_RANK"] = str(info.local_rank)
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(
        backend="nccl" if device_type == "cuda" else "gloo",
        rank=info.rank,
        world_size=info.world_size,
        device_id=torch.device("cuda", info.local_rank) if device_type == "cuda" else None,
    )
    return info


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        dist.all_reduce(t)
    return t


def any_flag(flag: bool, device="cpu") -> bool:
    """True on every rank if ``flag`` is true on any rank (stop decisions must agree)."""
    if world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        out = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads):
        g = torch.stack(grads)
        dist.all_reduce(g)
        return g[dist.get_rank()]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` over ranks, keeping the gradient path to every rank's part.

    The backward all-reduces (sums) the incoming gradients: every rank computes the same global
    loss from the gathered tensor, so rank r's share of dL/dx_r is W times the local value
    after the sum, and DDP's average over W ranks then gives exactly the single-process
    gradient (as in VICReg's FullGatherLayer). No caller-side scaling is needed.
    """
    if world_size() == 1:
        return x
    return torch.cat(_GatherWithGrad.apply(x), dim=0)
