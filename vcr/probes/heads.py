"""Mini-batch linear heads on cached features: the ``sgd`` probe (iNat18 / Places205, the
VICReg-paper linear evaluation) and the ``adamw`` probe (Table 2's subclass probe). The reported
numbers are those of the last epoch; nothing is early-stopped."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from vcr.cli import resolve_device, with_overrides
from vcr.errors import ConfigError
from vcr.probes.common import (
    CHUNK_ROWS,
    Standardizer,
    as_float,
    as_labels,
    check_finite,
    num_classes_of,
)
from vcr.scoring import accuracy

# VICReg paper App. B.3 (PAPER_PROTOCOLS.md §5). VISSL's own defaults differ (Places: 14 epochs,
# wd 5e-4, lr 0.01); the paper's numbers are used.
SGD_SCHEDULES = {
    "places205": {"lr": 0.003, "weight_decay": 1e-4, "epochs": 28, "milestones": (4, 8, 12)},
    "inat18": {"lr": 0.005, "weight_decay": 1e-4, "epochs": 84, "milestones": (24, 48, 72)},
}


@dataclass
class SgdConfig:
    """``sgd`` protocol. ``schedule="auto"`` picks ``inat18`` for the iNat18 dataset and
    ``places205`` otherwise; lr/weight_decay/epochs/milestones left at None come from the
    schedule. When ``epochs`` is overridden (mini scale) and ``milestones`` is not, the
    milestones are scaled by epochs/full_epochs so the step shape is kept.

    Trained on cached (un-augmented) center-crop features: the VICReg/VISSL linear evaluation
    uses RandomResizedCrop+flip on images, which would need a backbone pass per epoch (84 epochs
    of iNat18); frozen features make it one pass. ``standardize`` plays the role of VISSL's
    BatchNorm before the linear head (frozen train statistics instead of running ones).
    The reported numbers are those of the last epoch; nothing is early-stopped.
    """

    schedule: str = "auto"
    lr: float | None = None
    weight_decay: float | None = None
    epochs: int | None = None
    milestones: tuple[int, ...] | None = None
    momentum: float = 0.9
    batch_size: int = 256
    standardize: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.milestones is not None:
            self.milestones = tuple(int(m) for m in self.milestones)


@dataclass
class AdamwConfig:
    """``adamw`` protocol, the Table 2 subclass probe (VCR App. B.2): AdamW, lr 0.016 with a
    per-step cosine decay to 0 and no warm-up (none stated), wd 0.05, 100 epochs, batch 256, on
    cached features. The base lr is used as-is for batch 256 (no scaling rule is stated)."""

    lr: float = 0.016
    weight_decay: float = 0.05
    epochs: int = 100
    batch_size: int = 256
    standardize: bool = True
    seed: int = 0


def _train_linear_head(
    Xtr, ytr, Xval, yval, Xtest, ytest, *, num_classes, make_opt, make_sched, epochs, batch_size,
    standardize, seed, metric, device,
) -> dict[str, Any]:  # fmt: skip
    """The features stay where they are (host memory, one copy: Places205's 2.4M x 2048 train
    features are 20 GB); each batch is gathered there, moved to the device and standardised
    there, with the train split's statistics. Scoring walks val/test in chunks of CHUNK_ROWS.
    The numbers are those of standardising the whole matrices first (same elementwise ops)."""
    dev = resolve_device(device)
    Xtr, Xval, Xte = (as_float(a, "cpu") for a in (Xtr, Xval, Xtest))  # no copy of a float32
    ytr, yval, yte = (as_labels(a, "cpu") for a in (ytr, yval, ytest))
    for name, A in (("train features", Xtr), ("val features", Xval), ("test features", Xte)):
        check_finite(name, A)
    k = num_classes_of(num_classes, ytr, yval)
    std = Standardizer.fit(Xtr, standardize).to(dev)
    gen = torch.Generator().manual_seed(int(seed))
    head = torch.nn.Linear(Xtr.shape[1], k).to(dev)
    with torch.no_grad():  # VICReg evaluate.py: N(0, 0.01) weights, zero bias
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.01)
        head.bias.zero_()
    opt = make_opt(head.parameters())
    steps_per_epoch = max(1, math.ceil(Xtr.shape[0] / batch_size))
    sched = make_sched(opt, steps_per_epoch)

    def batch(X, y, idx):
        return std(X[idx].to(dev, non_blocking=True)), y[idx].to(dev, non_blocking=True)

    @torch.no_grad()
    def score(X, y):
        chunks = (X[i : i + CHUNK_ROWS].to(dev) for i in range(0, len(X), CHUNK_ROWS))
        pred = [head(std(c)).argmax(1).cpu() for c in chunks]
        return accuracy(torch.cat(pred) if pred else torch.zeros(0, dtype=torch.long), y, metric)

    history = []
    t0 = time.perf_counter()
    for epoch in range(int(epochs)):
        perm = torch.randperm(Xtr.shape[0], generator=gen)
        total = 0.0
        for s in range(steps_per_epoch):
            idx = perm[s * batch_size : (s + 1) * batch_size]
            xb, yb = batch(Xtr, ytr, idx)
            loss = F.cross_entropy(head(xb), yb)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"linear probe loss is {float(loss)} at epoch {epoch}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step_batch()
            total += loss.item() * idx.numel()
        sched.step_epoch()
        val = score(Xval, yval)
        history.append({"epoch": epoch + 1, "train_loss": total / Xtr.shape[0], "val": val})
    val = score(Xval, yval)
    test = score(Xte, yte)  # scored once, after training
    return {
        "val": val,
        "test": test,
        "metric": metric,
        "epochs": int(epochs),
        "history": history,
        "seconds": time.perf_counter() - t0,
        "device": str(dev),
    }


class _Sched:
    """Per-epoch (MultiStep) or per-step (cosine) learning-rate schedule behind one interface."""

    def __init__(self, sched, per_step: bool):
        self.sched, self.per_step = sched, per_step

    def step_batch(self):
        if self.per_step:
            self.sched.step()

    def step_epoch(self):
        if not self.per_step:
            self.sched.step()


def _sgd_settings(cfg: SgdConfig, eval_dataset: str | None) -> dict[str, Any]:
    name = cfg.schedule
    if name == "auto":
        name = "inat18" if (eval_dataset or "").startswith("inat") else "places205"
    if name not in SGD_SCHEDULES:
        raise ConfigError(f"schedule={cfg.schedule!r}: expected auto | {' | '.join(SGD_SCHEDULES)}")
    base = SGD_SCHEDULES[name]
    epochs = int(cfg.epochs if cfg.epochs is not None else base["epochs"])
    if cfg.milestones is not None:
        milestones = [int(m) for m in cfg.milestones]
    else:
        scale = epochs / base["epochs"]
        milestones = sorted({max(1, round(m * scale)) for m in base["milestones"]})
    return {
        "schedule": name,
        "lr": float(cfg.lr if cfg.lr is not None else base["lr"]),
        "weight_decay": float(
            cfg.weight_decay if cfg.weight_decay is not None else base["weight_decay"]
        ),
        "epochs": epochs,
        "milestones": milestones,
    }


def linear_probe_sgd(
    Xtr, ytr, Xval, yval, Xtest, ytest, *, metric="top1", num_classes=None, device=None,
    eval_dataset: str | None = None, config: SgdConfig | None = None, **overrides,
) -> dict[str, Any]:  # fmt: skip
    """iNat18 / Places205 linear evaluation (VICReg App. B.3): SGD momentum 0.9, batch 256,
    lr ÷10 at the schedule's milestones; see ``SgdConfig``."""
    cfg = with_overrides(config or SgdConfig(), overrides, where="SgdConfig")
    s = _sgd_settings(cfg, eval_dataset)

    def make_opt(params):
        return torch.optim.SGD(
            params, lr=s["lr"], momentum=cfg.momentum, weight_decay=s["weight_decay"]
        )

    def make_sched(opt, _steps):
        ms = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=s["milestones"], gamma=0.1)
        return _Sched(ms, per_step=False)

    out = _train_linear_head(
        Xtr, ytr, Xval, yval, Xtest, ytest, num_classes=num_classes, make_opt=make_opt,
        make_sched=make_sched, epochs=s["epochs"], batch_size=cfg.batch_size,
        standardize=cfg.standardize, seed=cfg.seed, metric=metric, device=device,
    )  # fmt: skip
    out["config"] = {**asdict(cfg), **s}
    return out


def linear_probe_adamw(
    Xtr, ytr, Xval, yval, Xtest, ytest, *, metric="top1", num_classes=None, device=None,
    config: AdamwConfig | None = None, **overrides,
) -> dict[str, Any]:  # fmt: skip
    """Table 2 subclass probe (VCR App. B.2); see ``AdamwConfig``."""
    cfg = with_overrides(config or AdamwConfig(), overrides, where="AdamwConfig")

    def make_opt(params):
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def make_sched(opt, steps):
        total = max(1, int(cfg.epochs) * steps)
        return _Sched(torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total), per_step=True)

    out = _train_linear_head(
        Xtr, ytr, Xval, yval, Xtest, ytest, num_classes=num_classes, make_opt=make_opt,
        make_sched=make_sched, epochs=cfg.epochs, batch_size=cfg.batch_size,
        standardize=cfg.standardize, seed=cfg.seed, metric=metric, device=device,
    )  # fmt: skip
    out["config"] = asdict(cfg)
    return out
