"""What a training run checkpoints, and how it resumes bit-identically.

``RUN_DIR/checkpoint.pt`` holds the model, optimizer, scheduler, scaler, EMA, every rank's RNG
states, the epoch, the step inside it and the epoch's running log sums, with the run's spec and
recipe. A checkpoint of another run, or written with other recipe values (except the
:data:`RESUME_FREE_KEYS`, which cannot change a result), is refused with a message that says
which values differ.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vcr import distributed as vdist
from vcr import io
from vcr.errors import ConfigError

CHECKPOINT = "checkpoint.pt"
FORMAT = 1
# Recipe keys that may change between a checkpoint and its resume without changing the result.
RESUME_FREE_KEYS = (
    "num_workers",
    "print_freq",
    "eval_batch_size",
    "source",
    "keep_checkpoint",
    "slow_step_s",
)


@dataclass
class TrainState:
    """Everything the training loop changes, and what a checkpoint stores."""

    model: nn.Module  # what runs forward (the DDP wrapper under torchrun)
    model_without_ddp: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: Any
    ema: Any  # torch.optim.swa_utils.AveragedModel or None
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    # running sums of the epoch's logs (checkpointed: a resumed epoch logs the same means)
    sums: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)


def rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])


def _gather_rng(world_size: int) -> list:
    mine = rng_state()
    if world_size == 1:
        return [mine]
    import torch.distributed as dist

    out = [None] * world_size
    dist.all_gather_object(out, mine)
    return out


def save_checkpoint(run_dir: Path, state: TrainState, *, spec, recipe, dist) -> None:
    """Write ``run_dir/checkpoint.pt`` atomically (a collective: every rank calls it)."""
    rngs = _gather_rng(dist.world_size)
    if dist.is_main:
        io.torch_save(
            {
                "format": FORMAT,
                "spec": spec.to_dict(),
                "recipe": recipe.to_dict(),
                "epoch": state.epoch,
                "step_in_epoch": state.step_in_epoch,
                "global_step": state.global_step,
                "model": state.model_without_ddp.state_dict(),
                "optimizer": state.optimizer.state_dict(),
                "scheduler": state.scheduler.state_dict(),
                "scaler": state.scaler.state_dict() if state.scaler is not None else None,
                "ema": state.ema.state_dict() if state.ema is not None else None,
                "rng": rngs,
                "world_size": dist.world_size,
                "epoch_logs": {"sums": state.sums, "counts": state.counts},
            },
            Path(run_dir) / CHECKPOINT,
        )
    vdist.barrier()


def load_checkpoint(run_dir: Path, state: TrainState, *, spec, recipe, rank: int) -> bool:
    """Restore ``state`` (and this rank's RNG) from ``run_dir/checkpoint.pt``; False if none."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        return False
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if ck["spec"] != spec.to_dict():
        raise ConfigError(
            f"{path} belongs to another run ({ck['spec']}), not {spec.to_dict()}; "
            "delete it to start this run from scratch"
        )
    old, new = ck["recipe"], recipe.to_dict()
    diff = sorted(k for k in new if k not in RESUME_FREE_KEYS and old.get(k) != new[k])
    if diff:
        raise ConfigError(
            f"{path} was written with other recipe values for {diff} "
            f"(checkpoint: {[old.get(k) for k in diff]}, now: {[new[k] for k in diff]}); "
            "delete it to restart with the new values"
        )
    state.model_without_ddp.load_state_dict(ck["model"])
    state.optimizer.load_state_dict(ck["optimizer"])
    state.scheduler.load_state_dict(ck["scheduler"])
    if state.scaler is not None and ck["scaler"] is not None:
        state.scaler.load_state_dict(ck["scaler"])
    if state.ema is not None and ck["ema"] is not None:
        state.ema.load_state_dict(ck["ema"])
    state.epoch, state.step_in_epoch = ck["epoch"], ck["step_in_epoch"]
    state.global_step = ck["global_step"]
    state.sums = dict(ck["epoch_logs"]["sums"])
    state.counts = dict(ck["epoch_logs"]["counts"])
    rngs = ck["rng"]
    set_rng_state(rngs[min(rank, len(rngs) - 1)])
    return True
