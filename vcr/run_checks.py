"""The checks a training run makes on itself, each with a clear error or warning: a non-finite
loss (kept on the device, read at logging steps and across ranks), the world size against the
recipe's, and VCR's gradient against bf16's resolution."""

from __future__ import annotations

import sys
import warnings

import torch

from vcr import distributed as vdist
from vcr.errors import ConfigError, NonFiniteError
from vcr.recipes import Recipe


class NonFiniteWatch:
    """The first step whose loss was not finite, kept on the device: no host sync per step."""

    def __init__(self, device, first_step: int):
        self.first_step = int(first_step)
        self.steps = torch.zeros((), dtype=torch.long, device=device)
        self.bad = torch.full((), -1, dtype=torch.long, device=device)

    def update(self, loss: torch.Tensor) -> None:
        self.bad = torch.where((self.bad < 0) & ~torch.isfinite(loss), self.steps, self.bad)
        self.steps += 1

    def check(self, describe) -> None:
        """Raise ``NonFiniteError`` (one host sync; one all-reduce across ranks) if a watched
        step had a non-finite loss on any rank: every rank raises, naming the rank(s), so none
        waits in the next backward's all-reduce for a rank that stopped."""
        if vdist.world_size() > 1:
            import torch.distributed as dist

            per_rank = torch.full(
                (vdist.world_size(),), -1, dtype=torch.long, device=self.bad.device
            )
            per_rank[vdist.rank()] = self.bad
            dist.all_reduce(per_rank, op=dist.ReduceOp.MAX)
            steps = {r: s for r, s in enumerate(per_rank.tolist()) if s >= 0}
            if steps:
                # the rank(s) where it began; the others follow once DDP averages its gradients
                first = min(steps.values())
                ranks = [r for r, s in steps.items() if s == first]
                later = sorted(set(steps) - set(ranks))
                also = f" (later also on rank(s) {later})" if later else ""
                raise NonFiniteError(
                    f"non-finite loss on rank(s) {ranks}{also} {describe(self.first_step + first)}"
                )
            return
        bad = int(self.bad)
        if bad >= 0:
            raise NonFiniteError(f"non-finite loss {describe(self.first_step + bad)}")


# bf16 keeps 8 significant bits: a gradient part below half a step (2^-9 of the sum) is lost
# by round-to-nearest wherever it is summed.
BF16_RESOLUTION = 2.0**-9


def warn_below_bf16(ctx, stats: dict) -> None:
    """Say once per run when VCR's gradient is below bf16's resolution at some sites."""
    if ctx.warned_bf16 or ctx.recipe.amp_dtype != "bf16" or ctx.autocast() is None:
        return
    sites = {k: v for k, v in stats.items() if k.startswith("vcr/grad_ratio/")}
    low = {k.removeprefix("vcr/grad_ratio/"): v for k, v in sites.items() if v < BF16_RESOLUTION}
    if not low:
        return
    ctx.warned_bf16 = True
    rounding = ctx.recipe.vcr_rounding
    keeps = (
        "stochastic rounding keeps it in expectation (with rounding noise)"
        if rounding == "stochastic"
        else "round-to-nearest erases it"
    )
    msg = (
        f"warning: VCR's gradient is below bf16's resolution (||g_vcr||/||g_task|| < 2^-9) at "
        f"{len(low)} of {len(sites)} sites (e.g. {next(iter(low))}: {next(iter(low.values())):.1e}"
        f"); vcr_rounding={rounding}: {keeps}; amp_dtype=none keeps it exactly"
    )
    print(msg, file=sys.stderr, flush=True)
    warnings.warn(msg, stacklevel=2)


def check_world_size(recipe: Recipe, world_size: int, device: torch.device) -> None:
    """A GPU run splits the global batch over the recipe's ``world_size`` GPUs or not at all:
    the per-GPU batch sets BN's and VCR's per-GPU statistics, so another cluster layout would
    be another experiment. CPU runs (tests, the mini scale) are one process and not checked."""
    if device.type != "cuda" or not recipe.world_size or world_size == recipe.world_size:
        return
    raise ConfigError(
        f"recipe {recipe.name} splits its batch of {recipe.batch_size} over "
        f"{recipe.world_size} GPUs ({recipe.batch_size // recipe.world_size} per GPU), but this "
        f"run has {world_size} process(es): ask for {recipe.world_size} GPUs (config "
        f"scales.<scale>.resources, pretrain:{recipe.name}) or change the experiment with "
        f"--set world_size={world_size}"
    )
