"""The one trainer: supervised, superclass, long-tail and SimCLR/VICReg pretraining, with or
without VCR, shaped like torchvision's ``references/classification/train.py``.

Read top to bottom: ``train_one_epoch`` and ``evaluate`` (the loops), then the pieces ``run``
assembles (data, model, optimizer groups, lr schedule, EMA, checkpoint), then ``run`` and
``main`` (the CLI of ``workflow_scripts/pretrain.py``).

Guarantees and how they are kept:
- Resume is bit-identical (CPU): the sampler order of an epoch is a pure function of
  (seed, epoch); each sample's augmentation is drawn from its own generator seeded by
  (seed, epoch, index), independent of workers and of where a run stopped; the checkpoint holds
  model, optimizer, scheduler, scaler, EMA, every RNG state (per rank), epoch and
  step-in-epoch, and a resumed epoch skips the batches already done.
- SIGTERM / SIGUSR1 (SLURM's pre-timeout signal) set a flag; the loop writes a checkpoint after
  the current step and the process exits with 128 + signal number, so the job can be requeued
  and resumes from ``RUN_DIR/checkpoint.pt`` automatically.
- A non-finite loss raises ``NonFiniteError`` (run dir, step, alpha, beta) before the step's
  backward; ``backbone.pt`` is written only after a successful last epoch.
- Every loop adds ``vcr_penalty(model)`` to its loss (zero in value, carries the VCR gradient).
- GPU: bf16 autocast and channels-last; DDP under torchrun or SLURM (``vcr.distributed``) with
  global batch = recipe batch_size split evenly over ranks (lr is not rescaled by the world
  size: the recipe's lr is for its global batch, stated in run.json).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vcr import distributed as vdist
from vcr import io
from vcr.errors import ConfigError, NonFiniteError
from vcr.recipes import Recipe, get_recipe, parse_overrides
from vcr.records import RunSpec
from vcr.regularizer import vcr_penalty

CHECKPOINT = "checkpoint.pt"
BACKBONE = "backbone.pt"
LOG = "log.jsonl"
# Recipe keys that may change between a checkpoint and its resume without changing the result.
_RESUME_FREE_KEYS = ("num_workers", "print_freq", "eval_batch_size", "source", "keep_checkpoint")


class Preempted(Exception):
    """Raised after the checkpoint on SIGTERM/SIGUSR1 was written; ``main`` exits 128+signum."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signum} after writing the checkpoint")
        self.signum = signum


# =============================================================================================
# The loops
# =============================================================================================
@dataclass
class TrainState:
    """Everything the loops change, and what a checkpoint stores."""

    model: nn.Module  # what runs forward (DDP wrapper under torchrun)
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


@dataclass
class RunContext:
    """Fixed facts of a run the loops need."""

    spec: RunSpec
    recipe: Recipe
    run_dir: Path
    device: torch.device
    dist: vdist.DistInfo
    steps_per_epoch: int
    batch_per_rank: int
    mixup: Any = None  # callable(images, targets) -> (images, soft targets) or None
    stop_signal: int = 0  # set by the signal handler


def training_step(
    model,
    loss_fn,
    batch,
    optimizer,
    *,
    scaler=None,
    clip_grad_norm=0.0,
    autocast=None,
    describe=None,
    inject_nan=False,
):
    """One optimizer step shared by every loop (also the two-moons toy).

    ``loss_fn(model, batch) -> (task_loss, logs)``. The loss that is differentiated is
    ``task_loss + vcr_penalty(model)``. Raises ``NonFiniteError`` (with ``describe()``) before
    the backward if the loss is not finite, so no weight is touched by a NaN step.
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast if autocast is not None else contextlib.nullcontext():
        task_loss, logs = loss_fn(model, batch)
    loss = task_loss + vcr_penalty(model)
    if inject_nan:
        loss = loss * float("nan")
    if not bool(torch.isfinite(loss.detach())):
        where = describe() if describe else ""
        raise NonFiniteError(f"non-finite loss {float(loss.detach())} {where}".strip())
    try:
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            if clip_grad_norm:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if clip_grad_norm:
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
    except NonFiniteError as err:  # raised inside a VCR layer's backward: add where
        where = describe() if describe else ""
        raise NonFiniteError(f"{err} {where}".strip()) from err
    logs = dict(logs)
    logs["loss"] = float(loss.detach())
    return logs


def supervised_loss(criterion):
    def loss_fn(model, batch):
        images, targets = batch
        output = model(images)
        loss = criterion(output, targets)
        logs = {"task_loss": float(loss.detach())}
        if targets.dim() == 1:  # hard labels: training accuracy is defined
            logs["train_top1"] = float((output.argmax(1) == targets).float().mean())
        return loss, logs

    return loss_fn


def ssl_loss_fn(method, recipe):
    from vcr.ssl import ssl_loss

    def loss_fn(model, batch):
        (x1, x2), _ = batch
        z1, z2 = model(x1), model(x2)
        loss, logs = ssl_loss(method, z1, z2, recipe)
        logs["task_loss"] = float(loss.detach())
        return loss, logs

    return loss_fn


def train_one_epoch(ctx: RunContext, state: TrainState, loader, loss_fn, *, vcr_on: bool):
    """Train from ``state.step_in_epoch`` to the end of ``state.epoch``; returns the epoch's
    mean logs. Writes a checkpoint and raises ``Preempted`` if a stop signal arrives."""
    recipe, model = ctx.recipe, state.model
    model.train()
    autocast = _autocast(ctx)
    if state.step_in_epoch == 0:
        state.sums, state.counts = {}, {}
    sums, counts = state.sums, state.counts
    n_images, t0 = 0, time.perf_counter()
    bar = _progress(ctx, total=ctx.steps_per_epoch, initial=state.step_in_epoch)
    for images, targets in loader:
        images, targets = _to_device(images, ctx), targets.to(ctx.device, non_blocking=True)
        if ctx.mixup is not None:
            images, targets = ctx.mixup(images, targets)
        step = state.global_step

        def describe(step=step):
            return (
                f"in run {ctx.run_dir} at step {step} (epoch {state.epoch}, step-in-epoch "
                f"{state.step_in_epoch}), alpha={ctx.spec.alpha}, beta={ctx.spec.beta}, "
                f"placement={ctx.spec.placement}"
            )

        logs = training_step(
            model,
            loss_fn,
            (images, targets),
            state.optimizer,
            scaler=state.scaler,
            clip_grad_norm=recipe.clip_grad_norm,
            autocast=autocast,
            describe=describe,
            inject_nan=(step == recipe.inject_nan_step),
        )
        logs["lr"] = state.optimizer.param_groups[0]["lr"]
        state.scheduler.step()
        if vcr_on and (
            ctx.device.type == "cpu"  # a host sync per call: free on CPU, sampled on GPU
            or state.step_in_epoch % max(1, recipe.print_freq) == 0
            or state.step_in_epoch + 1 == ctx.steps_per_epoch
        ):
            logs.update(_vcr_stats(state.model_without_ddp))
        if state.ema is not None:
            _update_ema(ctx, state)
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + v
            counts[k] = counts.get(k, 0) + 1
        state.step_in_epoch += 1
        state.global_step += 1
        n_images += _batch_len(images) * ctx.dist.world_size
        _report_progress(ctx, state, bar, logs)
        if vdist.any_flag(bool(ctx.stop_signal), device=ctx.device):
            save_checkpoint(ctx, state)
            raise Preempted(ctx.stop_signal or signal.SIGTERM)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t0
    out = {k: sums[k] / counts[k] for k in sums}
    out["images_per_s"] = n_images / elapsed if elapsed > 0 else float("nan")
    out["train_time_s"] = elapsed
    return out


@torch.no_grad()
def evaluate(model, loader, device, *, num_classes, autocast=None, channels_last=False):
    """Top-1 and mean per-class accuracy (fractions) over this rank's share, summed over ranks."""
    model.eval()
    correct = torch.zeros(num_classes, dtype=torch.float64, device=device)
    total = torch.zeros(num_classes, dtype=torch.float64, device=device)
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        if channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        with autocast if autocast is not None else contextlib.nullcontext():
            pred = model(images).argmax(1)
        total.index_add_(0, targets, torch.ones_like(targets, dtype=torch.float64))
        correct.index_add_(0, targets, (pred == targets).to(torch.float64))
    vdist.all_reduce_sum(correct)
    vdist.all_reduce_sum(total)
    seen = total > 0
    top1 = float(correct.sum() / total.sum().clamp_min(1))
    mean_per_class = float((correct[seen] / total[seen]).mean()) if seen.any() else float("nan")
    return {"top1": top1, "mean_per_class": mean_per_class, "n": int(total.sum())}


# =============================================================================================
# Data
# =============================================================================================
@dataclass
class DataBundle:
    """The datasets of a run (tests may pass one directly instead of a manifest)."""

    train: Any
    val: Any = None
    test: Any = None
    num_classes: int = 0
    metric: str = "top1"
    # set by build_data: lets in-memory uint8 arrays take the batched fast path
    train_kind: str = ""
    eval_native: bool = False
    mean: tuple = ()
    std: tuple = ()


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's augmentation: a pure function, so resume and workers agree."""
    return (seed * 1_000_003 + epoch * 7_919_000_009 + index * 2_654_435_761) % (2**63 - 1)


class EpochBatchSampler(torch.utils.data.Sampler):
    """Batches of ``(epoch, index)`` for this rank; the order is a pure function of (seed,
    epoch). Every rank slices the SAME global batch, so W processes see what one process sees.
    ``set_epoch(epoch, start_step)`` starts mid-epoch (resume skips the batches done)."""

    def __init__(self, num_samples, global_batch, *, seed, rank=0, world_size=1, max_steps=0):
        if global_batch % world_size:
            raise ConfigError(
                f"batch_size={global_batch} is not divisible by the world size {world_size}"
            )
        self.num_samples, self.global_batch = num_samples, global_batch
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.per_rank = global_batch // world_size
        steps = num_samples // global_batch
        self.steps = min(steps, max_steps) if max_steps else steps
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0):
        self.epoch, self.start_step = epoch, start_step

    def __len__(self):
        return self.steps - self.start_step

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.num_samples, generator=g).tolist()
        lo = self.rank * self.per_rank
        for step in range(self.start_step, self.steps):
            chunk = perm[step * self.global_batch : (step + 1) * self.global_batch]
            yield [(self.epoch, i) for i in chunk[lo : lo + self.per_rank]]


class SeededSamples(torch.utils.data.Dataset):
    """Wraps a dataset of (image, label) and applies ``transform`` under a per-sample seed.

    The global torch and python RNG states are restored afterwards, so with ``num_workers=0``
    the model's own randomness (dropout, drop-path, mixup) is not disturbed by data loading.
    """

    def __init__(self, dataset, transform, seed):
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        image, label = self.dataset[index]
        if self.transform is None:
            return image, label
        s = sample_seed(self.seed, epoch, index)
        t_state, p_state = torch.get_rng_state(), random.getstate()
        try:
            torch.default_generator.manual_seed(s)
            random.seed(s)
            return self.transform(image), label
        finally:
            torch.set_rng_state(t_state)
            random.setstate(p_state)


def _is_uint8_array(ds) -> bool:
    images = getattr(ds, "images", None)
    return (
        images is not None
        and getattr(images, "dtype", None) == np.uint8
        and images.ndim == 4
        and images.shape[-1] == 3
        and hasattr(ds, "targets")
    )


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised (uint64 in, well-mixed uint64 out; wraps mod 2^64)."""
    with np.errstate(over="ignore"):
        x = np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


class ArrayBatches:
    """Batched fast path for in-memory uint8 images (mini, CIFAR: ``images`` (N, H, W, 3)).

    Computes exactly the ``train_cifar`` transform (4-px zero padding, random crop, horizontal
    flip, ToTensor, Normalize) or the native-size ``eval`` transform (ToTensor, Normalize) on
    whole batches with tensor ops, instead of one PIL image at a time (the mini pipeline's data
    time drops ~10x). Per-sample crop offsets and flips are a hash of (seed, epoch, index), so
    they are the same whatever the world size or where a run resumed. ``recipe
    fast_array_loader=false`` takes the per-sample PIL path instead.
    """

    PAD = 4

    TRANSFORMS = ("train_cifar", "eval", "ssl")  # "ssl": two views of ssl_views()

    def __init__(self, ds, batches, mean, std, *, transform: str, seed: int = 0):
        if transform not in self.TRANSFORMS:
            raise ValueError(f"ArrayBatches transform={transform!r}: one of {self.TRANSFORMS}")
        self.images, self.targets = ds.images, torch.as_tensor(np.asarray(ds.targets))
        self.batches, self.transform, self.seed = batches, transform, seed
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for keys in self.batches:
            if keys and isinstance(keys[0], tuple):
                epoch, idx = keys[0][0], np.array([i for _, i in keys], dtype=np.int64)
            else:
                epoch, idx = 0, np.asarray(keys, dtype=np.int64)
            x = torch.from_numpy(self.images[idx]).permute(0, 3, 1, 2).float().div_(255)
            if self.transform == "ssl":
                g = torch.Generator().manual_seed(
                    int(_mix64(np.uint64(self.seed * 1_000_003 + epoch) ^ _mix64(idx[0])))
                    & (2**63 - 1)
                )
                views = [ssl_views(x, g) for _ in range(2)]
                yield [(v - self.mean) / self.std for v in views], self.targets[idx]
                continue
            if self.transform == "train_cifar":
                x = self._crop_flip(x, epoch, idx)
            yield (x - self.mean) / self.std, self.targets[idx]

    def _crop_flip(self, x, epoch, idx):
        n, _, h, w = x.shape
        p = self.PAD
        key = _mix64(idx.astype(np.uint64) ^ _mix64(np.uint64(self.seed * 1_000_003 + epoch)))
        dy = torch.from_numpy((key % np.uint64(2 * p + 1)).astype(np.int64))
        dx = torch.from_numpy(((key >> np.uint64(8)) % np.uint64(2 * p + 1)).astype(np.int64))
        flip = torch.from_numpy(((key >> np.uint64(16)) & np.uint64(1)).astype(bool))
        padded = F.pad(x, (p, p, p, p))
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (n, 1, h, 1)
        cols = dx[:, None] + torch.arange(w)
        cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]  # (n, 1, 1, w)
        b = torch.arange(n)[:, None, None, None]
        c = torch.arange(x.shape[1])[None, :, None, None]
        return padded[b, c, rows, cols]


def ssl_views(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One SimCLR/VICReg view of a batch in [0, 1] (N, 3, H, W), with batched tensor ops: the
    ``ssl`` transform of ``vcr.data.transforms`` for small images (random resized crop, scale
    0.08-1 and ratio 3/4-4/3, flip, colour jitter 0.4/0.4/0.2 with p=0.8, grayscale p=0.2,
    solarize p=0.1). Differences, for the mini/CIFAR array path only: bilinear instead of
    bicubic resampling, and no hue jitter (it needs an HSV round trip per pixel).
    """
    n, _, h, w = x.shape
    u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    area = 0.08 + 0.92 * u(n)
    ratio = torch.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u(n))
    sw = torch.sqrt(area * ratio).clamp(max=1.0)  # crop side as a fraction of the image
    sh = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (1 - sw) * (2 * u(n) - 1)  # crop centre in [-1, 1] coordinates, inside the image
    cy = (1 - sh) * (2 * u(n) - 1)
    flip = torch.where(u(n) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sw * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = sh, cy
    grid = F.affine_grid(theta, (n, 3, h, w), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    jitter = (u(n) < 0.8).view(n, 1, 1, 1)
    b = 1 + 0.4 * (2 * u(n) - 1)
    c = 1 + 0.4 * (2 * u(n) - 1)
    s = 1 + 0.2 * (2 * u(n) - 1)
    gray_w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    y = (x * b.view(n, 1, 1, 1)).clamp(0, 1)
    mean = (y * gray_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    y = (mean + c.view(n, 1, 1, 1) * (y - mean)).clamp(0, 1)
    gray = (y * gray_w).sum(1, keepdim=True)
    y = (gray + s.view(n, 1, 1, 1) * (y - gray)).clamp(0, 1)
    x = torch.where(jitter, y, x)
    x = torch.where(
        (u(n) < 0.2).view(n, 1, 1, 1), (x * gray_w).sum(1, keepdim=True).expand_as(x), x
    )
    return torch.where((u(n) < 0.1).view(n, 1, 1, 1) & (x >= 0.5), 1 - x, x)


def resolved_sizes(recipe: Recipe, native: int) -> tuple[int, int, int]:
    """(train crop, eval resize, eval crop) for a dataset whose native side is ``native``."""
    use_native = recipe.resolution == "native" or (recipe.resolution == "auto" and native < 64)
    if use_native:
        return native, native, native
    return recipe.train_crop_size, recipe.val_resize_size, recipe.val_crop_size


def tv_preset_train(recipe: Recipe, crop: int, mean, std):
    """torchvision's ClassificationPresetTrain (RRC, flip, auto-augment, random erase)."""
    from torchvision.transforms import v2

    interp = v2.InterpolationMode(recipe.interpolation)
    t = [
        v2.ToImage(),
        v2.RandomResizedCrop(crop, interpolation=interp, antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    aa = recipe.auto_augment
    if aa == "ra":
        t.append(v2.RandAugment(interpolation=interp, magnitude=recipe.ra_magnitude))
    elif aa == "ta_wide":
        t.append(v2.TrivialAugmentWide(interpolation=interp))
    elif aa == "augmix":
        t.append(v2.AugMix(interpolation=interp, severity=recipe.augmix_severity))
    elif aa == "imagenet":
        t.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET, interpolation=interp))
    t += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if recipe.random_erase > 0:
        t.append(v2.RandomErasing(p=recipe.random_erase))
    t.append(v2.ToPureTensor())
    return v2.Compose(t)


def tv_preset_eval(recipe: Recipe, resize: int, crop: int, mean, std):
    from torchvision.transforms import v2

    interp = v2.InterpolationMode(recipe.interpolation)
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(resize, interpolation=interp, antialias=True),
            v2.CenterCrop(crop),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
            v2.ToPureTensor(),
        ]
    )


def train_kind(recipe: Recipe, method: str, native: int) -> str:
    kind = recipe.train_transform
    if method in ("simclr", "vicreg") and kind == "auto":
        kind = "ssl"
    if kind == "auto":
        kind = "train_cifar" if native < 64 else "train_imagenet"
    if kind == "none":  # no augmentation: train images go through the eval transform
        kind = "eval"
    return kind


def build_transforms(recipe: Recipe, method: str, info: dict):
    """(train transform, eval transform) from the recipe and ``vcr.data.dataset_info``."""
    from vcr.data import build_transform

    native, mean, std = int(info["image_size"]), info["mean"], info["std"]
    crop, resize, eval_crop = resolved_sizes(recipe, native)
    kind = train_kind(recipe, method, native)
    if kind == "tv_preset":
        train = tv_preset_train(recipe, crop, mean, std)
        evalt = tv_preset_eval(recipe, resize, eval_crop, mean, std)
    else:
        train = build_transform(kind, image_size=crop, mean=mean, std=std)
        evalt = build_transform("eval", image_size=eval_crop, mean=mean, std=std)
    if kind == "ssl":
        from vcr.data.transforms import MultiView

        train = MultiView(train, 2)
    return train, evalt


def _one_transform(recipe: Recipe, method: str, info: dict, which: int):
    return build_transforms(recipe, method, info)[which]


def build_data(spec: RunSpec, recipe: Recipe, manifest) -> tuple[DataBundle, Any, Any]:
    """Load the run's splits through ``vcr.data``; returns (bundle, train tf, eval tf)."""
    from vcr.data import DeferredTransform, dataset_info, load_dataset

    if manifest is None or not Path(manifest).is_file():
        from vcr.errors import DatasetError

        raise DatasetError(
            f"--manifest {manifest}: no such file; prepare it with "
            f"`python workflow_scripts/prepare_data.py --dataset {spec.dataset} ...`"
        )
    info = dataset_info(manifest, target=spec.target)
    # Built on first use: the batched array path (mini, CIFAR) never calls them, and then
    # torchvision (~1.2 s of imports per process) is never imported.
    train_tf, eval_tf = (
        DeferredTransform(_one_transform, recipe, spec.method, info, i) for i in (0, 1)
    )
    bundle = DataBundle(
        train=load_dataset(spec.dataset, "train", manifest=manifest, target=spec.target),
        val=load_dataset(spec.dataset, "val", manifest=manifest, target=spec.target),
        test=load_dataset(spec.dataset, "test", manifest=manifest, target=spec.target),
        num_classes=int(info["num_classes"]),
        metric=info.get("metric", "top1"),
        train_kind=train_kind(recipe, spec.method, int(info["image_size"])),
        eval_native=resolved_sizes(recipe, int(info["image_size"]))[2] == info["image_size"],
        mean=tuple(info["mean"]),
        std=tuple(info["std"]),
    )
    return bundle, train_tf, eval_tf


def build_loaders(ctx: RunContext, bundle: DataBundle, train_tf, eval_tf):
    recipe = ctx.recipe
    sampler = EpochBatchSampler(
        len(bundle.train),
        recipe.batch_size,
        seed=ctx.spec.seed,
        rank=ctx.dist.rank,
        world_size=ctx.dist.world_size,
        max_steps=recipe.max_steps_per_epoch,
    )
    fast = recipe.fast_array_loader and bundle.mean
    no_aug_native = bundle.train_kind == "eval" and bundle.eval_native
    ssl_native = bundle.train_kind == "ssl" and bundle.eval_native
    if (
        fast
        and (bundle.train_kind == "train_cifar" or no_aug_native or ssl_native)
        and _is_uint8_array(bundle.train)
    ):
        train_loader = ArrayBatches(
            bundle.train,
            sampler,
            bundle.mean,
            bundle.std,
            transform=bundle.train_kind,  # train_cifar, eval (no augmentation) or ssl
            seed=ctx.spec.seed,
        )
    else:
        train_loader = _train_dataloader(ctx, bundle, train_tf, sampler)
    eval_loaders = {}
    eval_bs = recipe.eval_batch_size or ctx.batch_per_rank
    for split in ("val", "test"):
        ds = getattr(bundle, split)
        if ds is None:
            continue
        # each rank evaluates a strided share; counts are summed over ranks in evaluate()
        idx = list(range(ctx.dist.rank, len(ds), ctx.dist.world_size))
        if fast and bundle.eval_native and _is_uint8_array(ds):
            eval_loaders[split] = ArrayBatches(
                ds,
                [idx[i : i + eval_bs] for i in range(0, len(idx), eval_bs)],
                bundle.mean,
                bundle.std,
                transform="eval",
            )
            continue
        eval_loaders[split] = torch.utils.data.DataLoader(
            torch.utils.data.Subset(SeededSamples(ds, eval_tf, ctx.spec.seed), idx),
            batch_size=eval_bs,
            shuffle=False,
            num_workers=recipe.num_workers,
            pin_memory=ctx.device.type == "cuda",
            generator=torch.Generator().manual_seed(ctx.spec.seed),
        )
    return sampler, train_loader, eval_loaders


def _train_dataloader(ctx, bundle, train_tf, sampler):
    workers = ctx.recipe.num_workers
    return torch.utils.data.DataLoader(
        SeededSamples(bundle.train, train_tf, ctx.spec.seed),
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=workers > 0,
        # own generator: creating an iterator must not draw from the global RNG (resume)
        generator=torch.Generator().manual_seed(ctx.spec.seed),
    )


def build_mixup(recipe: Recipe, num_classes: int):
    """torchvision's MixUp/CutMix (one of the two per batch), or None."""
    if recipe.mixup_alpha <= 0 and recipe.cutmix_alpha <= 0:
        return None
    from torchvision.transforms import v2

    choices = []
    if recipe.mixup_alpha > 0:
        choices.append(v2.MixUp(alpha=recipe.mixup_alpha, num_classes=num_classes))
    if recipe.cutmix_alpha > 0:
        choices.append(v2.CutMix(alpha=recipe.cutmix_alpha, num_classes=num_classes))
    return choices[0] if len(choices) == 1 else v2.RandomChoice(choices)


# =============================================================================================
# Model, optimizer, schedule, EMA
# =============================================================================================
def build_model(spec: RunSpec, recipe: Recipe, num_classes: int) -> nn.Module:
    """Classifier (supervised) or backbone + projector (SSL), VCR not yet attached."""
    if spec.method == "supervised":
        from vcr.models import create_model

        return create_model(spec.arch, num_classes=num_classes, **recipe.model_kwargs)
    from vcr.ssl import build_ssl_model

    return build_ssl_model(spec.arch, spec.method, recipe)


def vcr_target(model: nn.Module) -> nn.Module:
    """The module VCR is attached to: the backbone (never an SSL projector)."""
    return model.backbone if hasattr(model, "backbone") and hasattr(model, "projector") else model


def attach(model: nn.Module, spec: RunSpec, recipe: Recipe) -> list[str]:
    if spec.placement == "none":
        return []
    from vcr.attach import attach_vcr

    return attach_vcr(
        vcr_target(model),
        spec.placement,
        alpha=spec.alpha,
        beta=spec.beta,
        eps=recipe.vcr_eps,
        delta=spec.delta or None,
        cov_scale=spec.cov_scale,
        # one process: local statistics are the global ones (and need no process group)
        global_stats=recipe.vcr_global_stats and vdist.world_size() > 1,
    )


def _vcr_stats(model: nn.Module) -> dict[str, float]:
    from vcr.attach import vcr_stats

    return vcr_stats(vcr_target(model))


_NORM_CLASSES = (
    nn.modules.batchnorm._BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)
_EMBEDDING_NAMES = (
    "cls_token",
    "pos_embed",
    "class_token",
    "pos_embedding",
    "relative_position_bias_table",
    "dist_token",
    "reg_token",
)


def param_groups(model: nn.Module, recipe: Recipe) -> list[dict]:
    """Weight-decay groups as torchvision's ``set_weight_decay`` (norm / bias / embedding / rest),
    plus the LARS exclusion flag (biases and norms: no wd, no trust ratio)."""
    buckets: dict[str, list] = {"other": [], "norm": [], "bias": [], "embedding": []}
    seen = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if recipe.embedding_weight_decay is not None and name in _EMBEDDING_NAMES:
                buckets["embedding"].append(p)
            elif recipe.norm_weight_decay is not None and isinstance(module, _NORM_CLASSES):
                buckets["norm"].append(p)
            elif recipe.bias_weight_decay is not None and name.endswith("bias"):
                buckets["bias"].append(p)
            else:
                buckets["other"].append(p)
    wd = {
        "other": recipe.weight_decay,
        "norm": recipe.norm_weight_decay,
        "bias": recipe.bias_weight_decay,
        "embedding": recipe.embedding_weight_decay,
    }
    groups = []
    for key, params in buckets.items():
        if not params:
            continue
        if recipe.optimizer == "lars" and recipe.lars_exclude_1d:
            multi = [p for p in params if p.ndim > 1]
            one_d = [p for p in params if p.ndim <= 1]
            if multi:
                groups.append(
                    {"params": multi, "weight_decay": wd[key], "group": key, "lars_exclude": False}
                )
            if one_d:
                groups.append(
                    {
                        "params": one_d,
                        "weight_decay": 0.0,
                        "group": key + "_1d",
                        "lars_exclude": True,
                    }
                )
        else:
            groups.append(
                {"params": params, "weight_decay": wd[key], "group": key, "lars_exclude": False}
            )
    return groups


def resolved_lr(spec: RunSpec, recipe: Recipe) -> float:
    """The peak lr: the run's --lr (0 = the recipe's), times batch/256 for linear scaling."""
    lr = spec.lr if spec.lr > 0 else recipe.lr
    if recipe.lr_scaling == "linear":
        lr = lr * recipe.batch_size / 256
    return lr


def build_optimizer(model: nn.Module, recipe: Recipe, lr: float) -> torch.optim.Optimizer:
    groups = param_groups(model, recipe)
    name = recipe.optimizer
    if name in ("sgd", "sgd_nesterov"):
        return torch.optim.SGD(
            groups, lr=lr, momentum=recipe.momentum, nesterov=name == "sgd_nesterov"
        )
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(recipe.betas))
    if name == "adam":  # Adam with L2 in the gradient (the long-tail recipe's other reading)
        return torch.optim.Adam(groups, lr=lr, betas=tuple(recipe.betas))
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=recipe.momentum, eps=0.0316, alpha=0.9)
    if name == "lars":
        from vcr.ssl import LARS

        return LARS(groups, lr=lr, momentum=recipe.momentum, eta=recipe.lars_eta)
    raise ConfigError(f"recipe.optimizer={name!r} unknown")


class LRSchedule:
    """Multiplicative lr factor at optimizer step ``t`` (LambdaLR), warmup then main schedule.

    ``schedule_unit="epoch"`` evaluates the same formula at ``t // steps_per_epoch``, exactly
    torchvision's per-epoch SequentialLR(LinearLR, CosineAnnealingLR/StepLR).
    """

    def __init__(self, recipe: Recipe, steps_per_epoch: int, peak_lr: float):
        self.unit = recipe.schedule_unit
        self.spe = steps_per_epoch
        scale = 1 if self.unit == "epoch" else steps_per_epoch
        self.warmup = recipe.warmup_epochs * scale
        self.total = recipe.epochs * scale
        self.kind = recipe.lr_scheduler
        self.warmup_method = recipe.warmup_method
        self.start = recipe.warmup_decay
        self.floor = max(recipe.lr_min / peak_lr if peak_lr else 0.0, recipe.lr_min_ratio)
        self.step_size = recipe.lr_step_size * scale
        self.gamma = recipe.lr_gamma

    def __call__(self, step: int) -> float:
        t = step // self.spe if self.unit == "epoch" else step
        if t < self.warmup:
            if self.warmup_method == "constant":
                return self.start
            return self.start + (1.0 - self.start) * t / self.warmup
        t = t - self.warmup
        if self.kind == "cosine":
            p = min(1.0, t / max(1, self.total - self.warmup))
            return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * p))
        if self.kind == "step":
            return self.gamma ** (t // self.step_size)
        return 1.0


def build_ema(model: nn.Module, recipe: Recipe, device):
    """torchvision's ExponentialMovingAverage: decay adjusted for batch and update period."""
    if not recipe.model_ema:
        return None
    from torch.optim.swa_utils import AveragedModel

    adjust = recipe.batch_size * recipe.model_ema_steps / max(1, recipe.epochs)
    alpha = min(1.0, (1.0 - recipe.model_ema_decay) * adjust)
    decay = 1.0 - alpha

    def ema_avg(avg, param, num_averaged):
        return decay * avg + (1.0 - decay) * param

    return AveragedModel(model, device=device, avg_fn=ema_avg, use_buffers=True)


def _update_ema(ctx: RunContext, state: TrainState):
    if state.step_in_epoch % ctx.recipe.model_ema_steps == 0:
        state.ema.update_parameters(state.model_without_ddp)
        if state.epoch < ctx.recipe.warmup_epochs:  # torchvision resets the EMA in warmup
            state.ema.n_averaged.fill_(0)


# =============================================================================================
# Checkpoint
# =============================================================================================
def _rng_state() -> dict:
    import numpy as np

    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def _set_rng_state(s: dict):
    import numpy as np

    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])


def _gather_rng(ctx: RunContext) -> list:
    mine = _rng_state()
    if ctx.dist.world_size == 1:
        return [mine]
    import torch.distributed as dist

    out = [None] * ctx.dist.world_size
    dist.all_gather_object(out, mine)
    return out


def save_checkpoint(ctx: RunContext, state: TrainState):
    rngs = _gather_rng(ctx)  # collective: every rank takes part
    if ctx.dist.is_main:
        io.torch_save(
            {
                "format": 1,
                "spec": ctx.spec.to_dict(),
                "recipe": ctx.recipe.to_dict(),
                "epoch": state.epoch,
                "step_in_epoch": state.step_in_epoch,
                "global_step": state.global_step,
                "model": state.model_without_ddp.state_dict(),
                "optimizer": state.optimizer.state_dict(),
                "scheduler": state.scheduler.state_dict(),
                "scaler": state.scaler.state_dict() if state.scaler is not None else None,
                "ema": state.ema.state_dict() if state.ema is not None else None,
                "rng": rngs,
                "world_size": ctx.dist.world_size,
                "epoch_logs": {"sums": state.sums, "counts": state.counts},
            },
            ctx.run_dir / CHECKPOINT,
        )
    vdist.barrier()


def load_checkpoint(ctx: RunContext, state: TrainState) -> bool:
    path = ctx.run_dir / CHECKPOINT
    if not path.is_file():
        return False
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if ck["spec"] != ctx.spec.to_dict():
        raise ConfigError(
            f"{path} belongs to another run ({ck['spec']}), not {ctx.spec.to_dict()}; "
            "delete it to start this run from scratch"
        )
    old, new = ck["recipe"], ctx.recipe.to_dict()
    diff = sorted(k for k in new if k not in _RESUME_FREE_KEYS and old.get(k) != new[k])
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
    _set_rng_state(rngs[min(ctx.dist.rank, len(rngs) - 1)])
    return True


# =============================================================================================
# Torchvision weights for the Table 1 baselines
# =============================================================================================
def _map_convnext(sd: dict) -> dict:
    """torchvision ConvNeXt keys -> timm ConvNeXt keys (features[2k+1] = stage k)."""
    out = {}
    for k, v in sd.items():
        p = k.split(".")
        if p[0] == "features":
            i = int(p[1])
            if i == 0:  # stem: conv, LayerNorm2d
                out[f"stem.{p[2]}.{p[3]}"] = v
            elif i % 2 == 0:  # downsample before stage i//2: LayerNorm2d, conv
                out[f"stages.{i // 2}.downsample.{p[2]}.{p[3]}"] = v
            else:
                s, b = (i - 1) // 2, p[2]
                rest = ".".join(p[3:])
                name = {
                    "block.0.weight": "conv_dw.weight",
                    "block.0.bias": "conv_dw.bias",
                    "block.2.weight": "norm.weight",
                    "block.2.bias": "norm.bias",
                    "block.3.weight": "mlp.fc1.weight",
                    "block.3.bias": "mlp.fc1.bias",
                    "block.5.weight": "mlp.fc2.weight",
                    "block.5.bias": "mlp.fc2.bias",
                    "layer_scale": "gamma",
                }[rest]
                out[f"stages.{s}.blocks.{b}.{name}"] = v.flatten() if name == "gamma" else v
        elif p[0] == "classifier":
            out[{"0": "head.norm", "2": "head.fc"}[p[1]] + "." + p[2]] = v
    return out


def _map_vit(sd: dict) -> dict:
    """torchvision VisionTransformer keys -> timm VisionTransformer keys."""
    out = {}
    for k, v in sd.items():
        if k.startswith("conv_proj."):
            out["patch_embed.proj." + k.split(".", 1)[1]] = v
        elif k == "class_token":
            out["cls_token"] = v
        elif k == "encoder.pos_embedding":
            out["pos_embed"] = v
        elif k.startswith("encoder.ln."):
            out["norm." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("heads.head."):
            out["head." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("encoder.layers.encoder_layer_"):
            rest = k[len("encoder.layers.encoder_layer_") :]
            i, rest = rest.split(".", 1)
            name = {
                "ln_1": "norm1",
                "ln_2": "norm2",
                "self_attention.in_proj": "attn.qkv",
                "self_attention.out_proj": "attn.proj",
                "mlp.0": "mlp.fc1",
                "mlp.3": "mlp.fc2",
            }
            stem, last = rest.rsplit(".", 1)
            if rest.startswith("self_attention.in_proj_"):
                stem, last = "self_attention.in_proj", rest.rsplit("_", 1)[1]
            out[f"blocks.{i}.{name[stem]}.{last}"] = v
    return out


def load_torchvision_weights(model: nn.Module, path, arch: str) -> None:
    """Load a torchvision state dict (Table 1 baselines) into our timm model.

    resnet50: timm's ResNet uses torchvision's key names, so V1 and V2 weights load directly
    (which one is chosen by the file). convnext_tiny and vit_base_patch32_224: keys mapped
    (torchvision ConvNeXt-T / ViT-B/32 are the same networks as these timm models).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"--init-weights {path}: no such file; download the torchvision weights (e.g. "
            "torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url) and pass the .pth file"
        )
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    if arch.startswith("convnext"):
        sd = _map_convnext(sd)
    elif arch.startswith("vit"):
        sd = _map_vit(sd)
    elif not arch.startswith("resnet"):
        raise ConfigError(
            f"--init-weights: arch {arch!r} has no torchvision key mapping "
            "(supported: resnet*, convnext_*, vit_*)"
        )
    # a classifier of another width (1000 ImageNet classes vs the run's) is not imported: the
    # run trains its own head (the backbone, what the probes use, is always complete)
    own = model.state_dict()
    head = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    if head and not all(k.startswith(("fc.", "head.")) for k in head):
        raise ConfigError(f"--init-weights {path}: shapes differ for {head[:5]} (arch {arch!r})")
    sd = {k: v for k, v in sd.items() if k not in head}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k not in head]
    if missing or unexpected:
        raise ConfigError(
            f"--init-weights {path} does not fit arch {arch!r}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )


# =============================================================================================
# Run
# =============================================================================================
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible")
    return torch.device(name)


def seed_everything(seed: int):
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _autocast(ctx: RunContext):
    if ctx.device.type != "cuda" or ctx.recipe.amp_dtype == "none":
        return None
    dtype = torch.bfloat16 if ctx.recipe.amp_dtype == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _channels_last(ctx: RunContext) -> bool:
    return _use_channels_last(ctx.device, ctx.recipe)


def _use_channels_last(device: torch.device, recipe: Recipe) -> bool:
    if device.type == "cuda":
        return recipe.channels_last
    return device.type == "cpu" and recipe.channels_last_cpu


def _to_device(images, ctx: RunContext):
    if isinstance(images, list | tuple):
        return [_to_device(x, ctx) for x in images]
    images = images.to(ctx.device, non_blocking=True)
    if _channels_last(ctx) and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def _batch_len(images) -> int:
    return len(images[0]) if isinstance(images, list | tuple) else len(images)


def _progress(ctx: RunContext, total: int, initial: int):
    if not (ctx.dist.is_main and sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="train", leave=False)


def _report_progress(ctx: RunContext, state: TrainState, bar, logs: dict):
    if bar is not None:
        bar.set_description(f"epoch {state.epoch}")
        bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.3g}")
        bar.update(1)
    elif ctx.dist.is_main and (state.step_in_epoch % max(1, ctx.recipe.print_freq) == 0):
        # plain periodic lines (SLURM logs)
        print(
            f"epoch {state.epoch} step {state.step_in_epoch}/{ctx.steps_per_epoch} "
            f"loss {logs['loss']:.4f} lr {logs['lr']:.4g}",
            flush=True,
        )


def code_version() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0:
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    import vcr

    return f"vcr {vcr.__version__} (no git)"


def package_versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "timm", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _append_log(run_dir: Path, entry: dict):
    with open(run_dir / LOG, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _truncate_log(run_dir: Path, before_epoch: int):
    """On resume, drop log lines of epochs the checkpoint does not cover (written after it)."""
    path = run_dir / LOG
    if not path.is_file():
        return
    keep = [
        ln
        for ln in path.read_text().splitlines()
        if ln.strip() and json.loads(ln).get("epoch", -1) < before_epoch
    ]
    io.write_text(path, "".join(ln + "\n" for ln in keep))


def _install_signal_handlers(ctx: RunContext):
    def handler(signum, frame):
        ctx.stop_signal = signum

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        previous[sig] = signal.signal(sig, handler)
    return previous


def run(
    spec: RunSpec,
    out,
    *,
    manifest=None,
    overrides: dict | None = None,
    init_weights=None,
    device: str = "auto",
    threads: int | None = None,
    data: DataBundle | None = None,
    model_factory=None,
    transforms=None,
) -> dict:
    """Train (or resume) one run into ``out``; returns the final metrics dict.

    ``data``/``model_factory``/``transforms`` replace ``vcr.data``/``vcr.models`` (tests).
    """
    if threads:
        torch.set_num_threads(int(threads))
    recipe = get_recipe(spec.recipe, **(overrides or {}))
    if recipe.method != spec.method:
        raise ConfigError(
            f"--method {spec.method} does not match recipe {recipe.name} (method {recipe.method})"
        )
    run_dir = Path(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / BACKBONE).unlink(missing_ok=True)  # a backbone is only ever the last output
    dev = resolve_device(device)
    info = vdist.init_distributed(dev.type)
    if dev.type == "cuda":
        dev = torch.device("cuda", info.local_rank)
        torch.backends.cudnn.benchmark = True
    try:
        return _run(
            spec,
            recipe,
            run_dir,
            dev,
            info,
            manifest,
            init_weights,
            data,
            model_factory,
            transforms,
        )
    finally:
        vdist.cleanup()


def _run(spec, recipe, run_dir, dev, info, manifest, init_weights, data, model_factory, transforms):
    t_start = time.perf_counter()
    seed_everything(spec.seed)
    import_only = init_weights is not None and recipe.epochs == 0

    # ---- data
    train_tf = eval_tf = None
    if data is None and not import_only:
        data, train_tf, eval_tf = build_data(spec, recipe, manifest)
    if transforms is not None:
        train_tf, eval_tf = transforms
    num_classes = data.num_classes if data is not None else 1000

    # ---- model (same init on every rank: seeded before creation; DDP broadcasts anyway)
    model = (model_factory or build_model)(spec, recipe, num_classes)
    if init_weights is not None:
        load_torchvision_weights(vcr_target(model), init_weights, spec.arch)
    model.to(dev)
    if _use_channels_last(dev, recipe):
        model = model.to(memory_format=torch.channels_last)
    if import_only:
        return _finish(spec, recipe, run_dir, info, model, None, None, t_start, epochs_done=0)
    if len(data.train) < recipe.batch_size:
        raise ConfigError(
            f"batch_size={recipe.batch_size} is larger than the training set "
            f"({len(data.train)} samples of {spec.dataset}); lower it with --set batch_size=N"
        )
    if info.distributed and recipe.sync_bn and dev.type == "cuda":
        # SimCLR's global BN / VICReg's SyncBN (torchvision recipes: off, as their default)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ema = build_ema(model, recipe, dev)  # before attaching VCR: the EMA copy carries no hooks
    vcr_names = attach(model, spec, recipe)
    seed_everything(spec.seed + 7919 * info.rank)  # per-rank stream for dropout/mixup

    ctx = RunContext(
        spec=spec,
        recipe=recipe,
        run_dir=run_dir,
        device=dev,
        dist=info,
        steps_per_epoch=0,
        batch_per_rank=recipe.batch_size // info.world_size,
    )
    sampler, train_loader, eval_loaders = build_loaders(ctx, data, train_tf, eval_tf)
    ctx.steps_per_epoch = sampler.steps
    ctx.mixup = build_mixup(recipe, num_classes) if spec.method == "supervised" else None

    lr = resolved_lr(spec, recipe)
    optimizer = build_optimizer(model, recipe, lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, LRSchedule(recipe, ctx.steps_per_epoch, lr)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda" and recipe.amp_dtype == "fp16")
    model_without_ddp = model
    if info.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    state = TrainState(model, model_without_ddp, optimizer, scheduler, scaler, ema)
    resumed = load_checkpoint(ctx, state)

    if info.is_main:
        if resumed:
            _truncate_log(run_dir, state.epoch + (1 if state.step_in_epoch else 0))
        io.write_json(
            run_dir / "run.json",
            {
                "params": spec.to_dict(),
                "recipe": recipe.to_dict(),
                "seed": spec.seed,
                "code_version": code_version(),
                "packages": package_versions(),
                "device": str(dev),
                "world_size": info.world_size,
                "global_batch": recipe.batch_size,
                "batch_per_rank": ctx.batch_per_rank,
                "lr": lr,
                "lr_rule": (
                    f"{'--lr' if spec.lr else 'recipe lr'}"
                    f"{' x batch/256' if recipe.lr_scaling == 'linear' else ''}; "
                    "not rescaled by world size (global batch is fixed)"
                ),
                "steps_per_epoch": ctx.steps_per_epoch,
                "vcr_layers": vcr_names,
                "resumed_at": [state.epoch, state.step_in_epoch] if resumed else None,
            },
        )
        print(
            f"run {run_dir}: {spec.method} {spec.arch} on {spec.dataset}, {info.world_size} "
            f"process(es) x batch {ctx.batch_per_rank} (global {recipe.batch_size}), peak lr "
            f"{lr:.4g}, {ctx.steps_per_epoch} steps/epoch, VCR on {len(vcr_names)} layers"
            + (f", resumed at epoch {state.epoch} step {state.step_in_epoch}" if resumed else ""),
            flush=True,
        )

    if spec.method == "supervised":
        loss_fn = supervised_loss(nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing))
    else:
        loss_fn = ssl_loss_fn(spec.method, recipe)
    previous = _install_signal_handlers(ctx)
    try:
        while state.epoch < recipe.epochs:
            sampler.set_epoch(state.epoch, state.step_in_epoch)
            logs = train_one_epoch(ctx, state, train_loader, loss_fn, vcr_on=bool(vcr_names))
            entry = {
                "epoch": state.epoch,
                "step": state.global_step,
                **logs,
                "lr_peak": lr,
                "world_size": info.world_size,
                "batch_per_rank": ctx.batch_per_rank,
            }
            last = state.epoch + 1 == recipe.epochs
            if (
                "val" in eval_loaders
                and spec.method == "supervised"
                and (last or (state.epoch + 1) % max(1, recipe.eval_every) == 0)
            ):
                entry["val_top1"] = evaluate(
                    _eval_model(state, recipe),
                    eval_loaders["val"],
                    dev,
                    num_classes=num_classes,
                    autocast=_autocast(ctx),
                    channels_last=_channels_last(ctx),
                )["top1"]
            state.epoch += 1
            state.step_in_epoch = 0
            if info.is_main:
                _append_log(run_dir, entry)
                print(
                    json.dumps(
                        {k: (round(v, 5) if isinstance(v, float) else v) for k, v in entry.items()}
                    ),
                    flush=True,
                )
            save_checkpoint(ctx, state)
            if vdist.any_flag(bool(ctx.stop_signal), device=dev):
                raise Preempted(ctx.stop_signal)
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
    return _finish(
        spec,
        recipe,
        run_dir,
        info,
        model_without_ddp,
        state,
        eval_loaders,
        t_start,
        epochs_done=recipe.epochs,
        ctx=ctx,
        num_classes=num_classes,
        metric=data.metric,
    )


def _eval_model(state: TrainState, recipe: Recipe) -> nn.Module:
    if state.ema is not None and recipe.ema_for_final:
        return state.ema.module
    return state.model_without_ddp


def _finish(
    spec,
    recipe,
    run_dir,
    info,
    model,
    state,
    eval_loaders,
    t_start,
    *,
    epochs_done,
    ctx=None,
    num_classes=0,
    metric="top1",
):
    """final.json, then LAST the backbone (its presence means the run succeeded)."""
    final = {"val_top1": None, "test_top1": None, "metric": metric}
    final_model = model if state is None else _eval_model(state, recipe)
    if state is not None and spec.method == "supervised":
        for split in ("val", "test"):
            if split in eval_loaders:
                r = evaluate(
                    final_model,
                    eval_loaders[split],
                    ctx.device,
                    num_classes=num_classes,
                    autocast=_autocast(ctx),
                    channels_last=_channels_last(ctx),
                )
                final[f"{split}_top1"] = r[metric] if metric in r else r["top1"]
    if info.is_main:
        final["epochs"] = epochs_done
        final["wall_s"] = time.perf_counter() - t_start
        io.write_json(run_dir / "final.json", final)
        if state is None:  # import-only run: still leave run.json and an (empty) log
            io.write_json(
                run_dir / "run.json",
                {
                    "params": spec.to_dict(),
                    "recipe": recipe.to_dict(),
                    "seed": spec.seed,
                    "code_version": code_version(),
                    "packages": package_versions(),
                    "imported_weights": True,
                },
            )
            (run_dir / LOG).touch()
        from vcr.models import save_backbone

        backbone = vcr_target(final_model)
        save_backbone(
            copy.deepcopy(backbone).cpu(),
            run_dir / BACKBONE,
            arch=spec.arch,
            model_kwargs=dict(recipe.model_kwargs),
            extra={"run": spec.to_dict(), "recipe": recipe.name, "val_top1": final["val_top1"]},
        )
        if not recipe.keep_checkpoint:  # the backbone is the run's result; free the disk
            (run_dir / CHECKPOINT).unlink(missing_ok=True)
    vdist.barrier()
    return final


# =============================================================================================
# CLI
# =============================================================================================
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Pretrain one run (the flags are RunSpec fields).")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--scale", required=True)
    p.add_argument("--method", required=True, choices=("supervised", "simclr", "vicreg"))
    p.add_argument("--arch", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--target", default="default")
    p.add_argument("--recipe", required=True)
    p.add_argument("--placement", default="none")
    p.add_argument("--alpha", type=float, default=0.0)
    p.add_argument("--beta", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=0.0, help="0 = the recipe's lr")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cov-scale", default="eq2", choices=("eq2", "alg1"))
    p.add_argument("--delta", type=float, default=0.0)
    p.add_argument("--manifest", default=None)
    p.add_argument("--init-weights", default=None, help="torchvision state dict (Table 1)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    spec = RunSpec(
        scale=args.scale,
        method=args.method,
        arch=args.arch,
        dataset=args.dataset,
        target=args.target,
        recipe=args.recipe,
        placement=args.placement,
        alpha=args.alpha,
        beta=args.beta,
        lr=args.lr,
        seed=args.seed,
        cov_scale=args.cov_scale,
        delta=args.delta,
    )
    try:
        run(
            spec,
            args.out,
            manifest=args.manifest,
            overrides=parse_overrides(args.set),
            init_weights=args.init_weights,
            device=args.device,
            threads=args.threads,
        )
    except Preempted as p:
        print(f"{args.out}: {p}; resubmit to resume", file=sys.stderr, flush=True)
        return 128 + int(p.signum)
    return 0


if __name__ == "__main__":
    sys.exit(main())
