"""The one trainer: supervised, superclass, long-tail and SimCLR/VICReg pretraining, with or
without VCR. Read top to bottom, like facebookresearch/vicreg's ``main_vicreg.py``: the step and
the losses, the epoch loop and ``evaluate``, the model, then ``run`` (which assembles data,
model, optimizer, checkpoint and loops) and ``main`` (the CLI of ``workflow_scripts/pretrain.py``).

The pieces ``run`` assembles live in their own modules: ``vcr.data.loading`` (sampler, batched
arrays, loaders), ``vcr.data.transforms`` (the transform rule), ``vcr.optim`` (weight-decay
groups, optimizer, lr schedule, EMA), ``vcr.checkpoint`` (state and resume),
``vcr.preemption`` (stop signals), ``vcr.runlog`` (run.json, log.jsonl, progress) and
``vcr.models.torchvision_weights`` (Table 1's released weights).

Guarantees and how they are kept:
- Resume is bit-identical (CPU): the data order and augmentation are pure functions of (seed,
  epoch, index) (``vcr.data.loading``); the checkpoint holds every state the loop changes
  (``vcr.checkpoint``), and a resumed epoch skips the batches already done.
- SIGURG (SLURM's pre-timeout signal, ``vcr.preemption``), SIGTERM and SIGUSR1 set a flag; the
  loop writes a checkpoint after the current step and the process exits with 128 + signal
  number, so the job can be requeued and resumes from ``RUN_DIR/checkpoint.pt`` automatically.
- A non-finite loss or VCR statistic raises ``NonFiniteError`` (run dir, step, alpha, beta;
  under DDP on every rank, naming the rank where it began) at the next logging step, read from
  a device-side flag (``vcr.run_checks``: no host sync per step), and always before a
  checkpoint; ``backbone.pt`` is written only after a successful last epoch.
- Every loop adds ``vcr_penalty(model)`` to its loss (zero in value, carries the VCR gradient).
- GPU: bf16 autocast and channels-last; DDP under torchrun or SLURM (``vcr.distributed``) with
  global batch = recipe batch_size split evenly over ranks (lr is not rescaled by the world
  size: the recipe's lr is for its global batch, stated in run.json).
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vcr import distributed as vdist
from vcr import io
from vcr.attach import raise_if_nonfinite
from vcr.checkpoint import CHECKPOINT, TrainState, load_checkpoint, save_checkpoint
from vcr.cli import resolve_device
from vcr.errors import ConfigError, NonFiniteError
from vcr.preemption import Preempted, StopFlag, stop_on_signals
from vcr.recipes import Recipe, get_recipe
from vcr.records import RunSpec
from vcr.regularizer import vcr_penalty
from vcr.run_checks import NonFiniteWatch, check_world_size, warn_below_bf16
from vcr.runlog import (
    LOG,
    EpochLog,
    Progress,
    grad_ratio_summary,
    log_event,
    provenance,
    truncate_log,
    write_run_json,
)
from vcr.scoring import evaluate

BACKBONE = "backbone.pt"


# =============================================================================================
# One step, and the losses of the three methods
# =============================================================================================
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
    watch=None,
):
    """One optimizer step shared by every loop (pretraining, fine-tuning, the two-moons toy).

    ``loss_fn(model, batch) -> (task_loss, logs)``. The loss that is differentiated is
    ``task_loss + vcr_penalty(model)``. Returns the logs as detached tensors (no host sync).

    Non-finite loss: without ``watch``, raises ``NonFiniteError`` (with ``describe()``) before
    the backward, so no weight is touched by a NaN step (one host sync per step). With a
    :class:`NonFiniteWatch` (the trainer) the check stays on the device and is read at logging
    steps and before every checkpoint: the run stops there, and no checkpoint or backbone holds
    the NaN step's weights.
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast if autocast is not None else contextlib.nullcontext():
        task_loss, logs = loss_fn(model, batch)
    loss = task_loss + vcr_penalty(model)
    if inject_nan:
        loss = loss * float("nan")
    if watch is not None:
        watch.update(loss.detach())
        bad = []
    else:
        # every rank learns of a NaN on any rank (one flag all-reduce), so all stop with the
        # message instead of waiting in the backward's all-reduce for the rank that raised
        bad = vdist.ranks_where(not bool(torch.isfinite(loss.detach())), device=loss.device)
    if bad:
        where = describe() if describe else ""
        value = float(loss.detach())
        what = f"on rank(s) {bad} (this rank: {value})" if vdist.world_size() > 1 else value
        raise NonFiniteError(f"non-finite loss {what} {where}".strip())
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
    logs["loss"] = loss.detach()
    return logs


def supervised_loss(criterion):
    def loss_fn(model, batch):
        images, targets = batch
        output = model(images)
        loss = criterion(output, targets)
        logs = {"task_loss": loss.detach()}
        if targets.dim() == 1:  # hard labels: training accuracy is defined
            logs["train_top1"] = (output.argmax(1) == targets).float().mean()
        return loss, logs

    return loss_fn


def ssl_loss_fn(method, recipe):
    from vcr.ssl import ssl_loss

    def loss_fn(model, batch):
        (x1, x2), _ = batch
        z1, z2 = model(x1), model(x2)
        loss, logs = ssl_loss(method, z1, z2, recipe)
        logs["task_loss"] = loss.detach()
        return loss, logs

    return loss_fn


# =============================================================================================
# The loops
# =============================================================================================
@dataclass
class RunContext:
    """Fixed facts of a run the loops need."""

    spec: RunSpec
    recipe: Recipe
    run_dir: Path
    device: torch.device
    dist: vdist.DistInfo
    steps_per_epoch: int = 0
    mixup: Any = None  # callable(images, targets) -> (images, soft targets) or None
    stop: StopFlag = field(default_factory=StopFlag)  # set by a stop signal
    warned_bf16: bool = False

    @property
    def batch_per_rank(self) -> int:
        return self.recipe.batch_size // self.dist.world_size

    @property
    def channels_last(self) -> bool:
        return use_channels_last(self.device, self.recipe)

    def autocast(self):
        cpu_off = self.device.type == "cpu" and not self.recipe.amp_cpu  # amp_cpu: CPU autocast
        if self.recipe.amp_dtype == "none" or cpu_off or self.device.type not in ("cuda", "cpu"):
            return None
        dtype = torch.bfloat16 if self.recipe.amp_dtype == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def to_device(self, images):
        if isinstance(images, list | tuple):
            return [self.to_device(x) for x in images]
        images = images.to(self.device, non_blocking=True)
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def checkpoint(self, state: TrainState) -> None:
        save_checkpoint(self.run_dir, state, spec=self.spec, recipe=self.recipe, dist=self.dist)


def use_channels_last(device: torch.device, recipe: Recipe) -> bool:
    if device.type == "cuda":
        return recipe.channels_last
    return device.type == "cpu" and recipe.channels_last_cpu


def train_one_epoch(ctx: RunContext, state: TrainState, loader, loss_fn, *, vcr_on: bool):
    """Train from ``state.step_in_epoch`` to the end of ``state.epoch``; returns the epoch's
    mean logs. Writes a checkpoint and raises ``Preempted`` if a stop signal arrives.

    The host waits for the device only at logging steps (the first of every ``print_freq``
    steps and the last of the epoch): progress, the VCR statistics (recorded in those steps'
    backwards only) and the non-finite checks are read there, and before a checkpoint."""
    from vcr.attach import set_vcr_recording
    from vcr.optim import update_ema

    recipe, model = ctx.recipe, state.model
    model.train()
    autocast = ctx.autocast()
    if state.step_in_epoch == 0:
        state.sums, state.counts = {}, {}
    sums, counts = state.sums, state.counts
    n_images, t0 = 0, time.perf_counter()
    log_every = max(1, recipe.print_freq)
    progress = Progress(
        enabled=ctx.dist.is_main,
        total=ctx.steps_per_epoch,
        initial=state.step_in_epoch,
        print_freq=log_every,
    )
    watch = NonFiniteWatch(ctx.device, state.global_step)

    def describe(step):
        return (
            f"in run {ctx.run_dir} at step {step} (epoch {state.epoch}), alpha={ctx.spec.alpha}, "
            f"beta={ctx.spec.beta}, placement={ctx.spec.placement}"
        )

    def check_finite():
        watch.check(describe)
        if vcr_on:
            local = None
            try:
                raise_if_nonfinite(state.model_without_ddp)
            except NonFiniteError as err:
                local = err
            ranks = vdist.ranks_where(local is not None, device=ctx.device)  # all ranks stop
            if ranks:
                what = local or f"non-finite VCR statistics on rank(s) {ranks}"
                raise NonFiniteError(f"{what} {describe(state.global_step)}") from local

    for images, targets in loader:
        k = state.step_in_epoch
        logging_step = k % log_every == 0 or k + 1 == ctx.steps_per_epoch
        images, targets = ctx.to_device(images), targets.to(ctx.device, non_blocking=True)
        if ctx.mixup is not None:
            images, targets = ctx.mixup(images, targets)
        if vcr_on:
            set_vcr_recording(vcr_target(state.model_without_ddp), logging_step)
        step = state.global_step
        if step == recipe.inject_error_step and recipe.inject_fault_rank in (-1, ctx.dist.rank):
            raise RuntimeError(f"injected fault at step {step} on rank {ctx.dist.rank} (test hook)")
        logs = training_step(
            model,
            loss_fn,
            (images, targets),
            state.optimizer,
            scaler=state.scaler,
            clip_grad_norm=recipe.clip_grad_norm,
            autocast=autocast,
            describe=lambda step=step: describe(step),
            inject_nan=(
                step == recipe.inject_nan_step and recipe.inject_fault_rank in (-1, ctx.dist.rank)
            ),
            watch=watch,
        )
        logs["lr"] = state.optimizer.param_groups[0]["lr"]
        state.scheduler.step()
        if state.ema is not None:
            update_ema(
                state.ema,
                state.model_without_ddp,
                recipe,
                step_in_epoch=state.step_in_epoch,
                epoch=state.epoch,
            )
        if logging_step:
            check_finite()
            if vcr_on:
                stats = _vcr_stats(state.model_without_ddp)
                warn_below_bf16(ctx, stats)
                logs.update(stats)
        for key, v in logs.items():
            v = v.detach().double() if isinstance(v, torch.Tensor) else v
            sums[key] = sums[key] + v if key in sums else v
            counts[key] = counts.get(key, 0) + 1
        state.step_in_epoch += 1
        state.global_step += 1
        n_images += _batch_len(images) * ctx.dist.world_size
        if logging_step:
            progress.step(state.epoch, state.step_in_epoch, logs)
        if recipe.slow_step_s:
            time.sleep(recipe.slow_step_s)
        # a stop signal is acted on at the next logging step (the host syncs only there)
        if logging_step and vdist.any_flag(bool(ctx.stop), device=ctx.device):
            check_finite()
            _stop(ctx, state)
    progress.close()
    check_finite()
    elapsed = time.perf_counter() - t0
    means = {key: sums[key] / counts[key] for key in sums}
    tensors = [key for key, v in means.items() if isinstance(v, torch.Tensor)]
    if tensors:  # one host sync for the epoch's means
        means.update(zip(tensors, torch.stack([means[key] for key in tensors]).tolist()))
    means["images_per_s"] = n_images / elapsed if elapsed > 0 else float("nan")
    means["train_time_s"] = elapsed
    return means


def _batch_len(images) -> int:
    return len(images[0]) if isinstance(images, list | tuple) else len(images)


# =============================================================================================
# Model
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
        rounding=recipe.vcr_rounding,
        matmul=recipe.vcr_matmul,
        max_samples=recipe.vcr_max_samples or None,
    )


def _vcr_stats(model: nn.Module) -> dict[str, float]:
    from vcr.attach import vcr_stats

    return vcr_stats(vcr_target(model))


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# =============================================================================================
# Run
# =============================================================================================
def run(
    spec: RunSpec,
    out,
    *,
    manifest=None,
    overrides: dict | None = None,
    init_weights=None,
    device: str = "auto",
    threads: int | None = None,
    data=None,
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
    ctx = RunContext(spec=spec, recipe=recipe, run_dir=run_dir, device=dev, dist=info)
    try:
        return _train(
            ctx,
            manifest=manifest,
            init_weights=init_weights,
            data=data,
            model_factory=model_factory,
            transforms=transforms,
        )
    finally:
        vdist.cleanup()


def _stop(ctx: RunContext, state: TrainState):
    """A stop signal reached some rank: checkpoint after this step (every rank), then raise."""
    ctx.checkpoint(state)
    signum = ctx.stop.signum or signal.SIGTERM
    if ctx.dist.is_main:
        at = f"epoch {state.epoch}, step-in-epoch {state.step_in_epoch} of {ctx.steps_per_epoch}"
        log_event(ctx.run_dir, f"stop signal ({ctx.stop.describe()}): checkpoint written at {at} "
                  f"(global step {state.global_step}); exiting {128 + signum} for a retry")  # fmt: skip
    raise Preempted(signum)


def _train(ctx: RunContext, *, manifest, init_weights, data, model_factory, transforms) -> dict:
    from vcr.data.loading import build_data, build_loaders, build_mixup
    from vcr.optim import LRSchedule, build_ema, build_optimizer, resolved_lr

    spec, recipe, dev, info = ctx.spec, ctx.recipe, ctx.device, ctx.dist
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
        from vcr.models.torchvision_weights import load_torchvision_weights

        load_torchvision_weights(vcr_target(model), init_weights, spec.arch)
    model.to(dev)
    if ctx.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if import_only:
        return _finish(ctx, model, t_start=t_start, epochs_done=0, imported=True)
    check_world_size(recipe, info.world_size, dev)
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

    sampler, train_loader, eval_loaders = build_loaders(
        data,
        recipe,
        seed=spec.seed,
        rank=info.rank,
        world_size=info.world_size,
        device=dev,
        train_tf=train_tf,
        eval_tf=eval_tf,
    )
    ctx.steps_per_epoch = sampler.steps
    ctx.mixup = build_mixup(recipe, num_classes) if spec.method == "supervised" else None

    # ---- optimizer, schedule, scaler, DDP, resume
    lr = resolved_lr(spec, recipe)
    optimizer = build_optimizer(model, recipe, lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, LRSchedule(recipe, ctx.steps_per_epoch, lr)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda" and recipe.amp_dtype == "fp16")
    model_without_ddp = model
    if info.distributed:
        model = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[dev.index] if dev.type == "cuda" else None,
            # CPU: never rebuild the gradient buckets (their layout sets gloo's summation order;
            # a resumed process's first step would use the initial one): bit-identical resume
            find_unused_parameters=dev.type == "cpu",
        )
    state = TrainState(model, model_without_ddp, optimizer, scheduler, scaler, ema)
    resumed = load_checkpoint(ctx.run_dir, state, spec=spec, recipe=recipe, rank=info.rank)
    if info.is_main:
        if resumed:
            truncate_log(ctx.run_dir, state.epoch + (1 if state.step_in_epoch else 0))
        write_run_json(
            ctx.run_dir,
            spec,
            recipe,
            device=ctx.device,
            world_size=info.world_size,
            lr=lr,
            steps_per_epoch=ctx.steps_per_epoch,
            vcr_layers=vcr_names,
            resumed_at=(state.epoch, state.step_in_epoch, state.global_step) if resumed else None,
            layout=info.layout,
        )

    # ---- the epochs
    if spec.method == "supervised":
        loss_fn = supervised_loss(nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing))
    else:
        loss_fn = ssl_loss_fn(spec.method, recipe)
    evaluate_split = _split_evaluator(ctx, eval_loaders, num_classes)
    # log.jsonl and its TensorBoard scalars (when tensorboard is installed), main rank only
    epoch_log = EpochLog(
        ctx.run_dir, first_epoch=state.epoch, enabled=info.is_main and state.epoch < recipe.epochs
    )
    with stop_on_signals(ctx.stop), contextlib.closing(epoch_log):
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
                entry["val_top1"] = evaluate_split(_eval_model(state, recipe), "val")["top1"]
            state.epoch += 1
            state.step_in_epoch = 0
            epoch_log.append(entry)
            if info.is_main:
                rounded = {
                    k: (round(v, 5) if isinstance(v, float) else v) for k, v in entry.items()
                }
                print(json.dumps(rounded), flush=True)
            if vdist.any_flag(bool(ctx.stop), device=dev):
                _stop(ctx, state)
            ctx.checkpoint(state)

    # ---- final metrics, then the backbone
    final_model = _eval_model(state, recipe)
    final = {"val_top1": None, "test_top1": None, "metric": data.metric}
    final.update(grad_ratio_summary(ctx.run_dir))
    if spec.method == "supervised":
        for split in ("val", "test"):
            if split in eval_loaders:
                r = evaluate_split(final_model, split)
                final[f"{split}_top1"] = r[data.metric] if data.metric in r else r["top1"]
    return _finish(ctx, final_model, final=final, t_start=t_start, epochs_done=recipe.epochs)


def _split_evaluator(ctx: RunContext, eval_loaders: dict, num_classes: int):
    def evaluate_split(model, split):
        return evaluate(
            model,
            eval_loaders[split],
            ctx.device,
            num_classes=num_classes,
            autocast=ctx.autocast(),
            channels_last=ctx.channels_last,
        )

    return evaluate_split


def _eval_model(state: TrainState, recipe: Recipe) -> nn.Module:
    if state.ema is not None and recipe.ema_for_final:
        return state.ema.module
    return state.model_without_ddp


def _finish(ctx: RunContext, final_model, *, t_start, epochs_done, final=None, imported=False):
    """final.json, then LAST the backbone (its presence means the run succeeded)."""
    spec, recipe, run_dir = ctx.spec, ctx.recipe, ctx.run_dir
    final = final or {"val_top1": None, "test_top1": None, "metric": "top1"}
    if ctx.dist.is_main:
        final["epochs"] = epochs_done
        final["wall_s"] = time.perf_counter() - t_start
        io.write_json(run_dir / "final.json", final)
        if imported:  # import-only run: still leave run.json and an (empty) log
            io.write_json(
                run_dir / "run.json", {**provenance(spec, recipe), "imported_weights": True}
            )
            (run_dir / LOG).touch()
        from vcr.models import save_backbone

        save_backbone(
            copy.deepcopy(vcr_target(final_model)).cpu(),
            run_dir / BACKBONE,
            arch=spec.arch,
            model_kwargs=dict(recipe.model_kwargs),
            extra={"run": spec.to_dict(), "recipe": recipe.name, "val_top1": final["val_top1"]},
        )
        if not recipe.keep_checkpoint:  # the backbone is the run's result; free the disk
            (run_dir / CHECKPOINT).unlink(missing_ok=True)
    vdist.barrier()
    return final
