"""Accuracy, defined once: top-1 and mean per-class accuracy from per-class counts.

The trainer's :func:`evaluate` sums per-class counts over DDP ranks and calls
:func:`accuracy_from_counts`; the probes score predictions with :func:`accuracy`. Both are fractions in [0, 1].

Precision: the counts' dtype is the arithmetic's. The probes count in float32 (every probe
record has been scored so since the first release, and the counts are exact integers below
2^24); the trainer counts in float64 (it sums over ranks and whole validation sets).
"""

from __future__ import annotations

import contextlib

import torch

from vcr import distributed as vdist
from vcr.errors import ConfigError

METRICS = ("top1", "mean_per_class")


def class_counts(pred, y, num_classes: int, dtype=torch.float64):
    """``(correct, total)`` per class, each of shape (num_classes,)."""
    correct = torch.zeros(num_classes, dtype=dtype, device=y.device)
    total = torch.zeros(num_classes, dtype=dtype, device=y.device)
    total.index_add_(0, y, torch.ones_like(y, dtype=dtype))
    correct.index_add_(0, y, (pred == y).to(dtype))
    return correct, total


def accuracy_from_counts(correct, total, metric: str = "top1") -> float:
    """``top1``: fraction correct. ``mean_per_class``: mean over the classes present of the
    fraction of that class predicted correctly (Aircraft, Pets, Flowers; SimCLR App. B.8)."""
    if metric == "top1":
        return float(correct.sum() / total.sum().clamp_min(1))
    if metric == "mean_per_class":
        seen = total > 0
        return float((correct[seen] / total[seen]).mean()) if seen.any() else float("nan")
    raise ConfigError(f"metric={metric!r}: expected one of {METRICS}")


def accuracy(pred, y, metric: str = "top1") -> float:
    """Accuracy of predicted labels ``pred`` against ``y`` (float32 counts, see the module doc)."""
    pred = torch.as_tensor(pred).reshape(-1).long().cpu()
    y = torch.as_tensor(y).reshape(-1).long().cpu()
    if pred.shape != y.shape:
        raise ValueError(f"accuracy: {pred.shape[0]} predictions for {y.shape[0]} labels")
    if y.numel() == 0:
        raise ValueError("accuracy: empty split")
    if metric not in METRICS:
        raise ConfigError(f"metric={metric!r}: expected one of {METRICS}")
    k = int(max(int(y.max()), int(pred.max())) + 1)
    return accuracy_from_counts(*class_counts(pred, y, k, torch.float32), metric)


@torch.no_grad()
def evaluate(
    model, loader, device, *, num_classes, autocast=None, channels_last=False, count_dtype=None
):
    """Top-1 and mean per-class accuracy (fractions) over this rank's share, counts summed over
    ranks (``vcr.scoring``). ``count_dtype``: float64 (default) or the probes' float32."""
    model.eval()
    dtype = count_dtype or torch.float64
    correct = torch.zeros(num_classes, dtype=dtype, device=device)
    total = torch.zeros(num_classes, dtype=dtype, device=device)
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        if channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = torch.as_tensor(targets).to(device, non_blocking=True)
        with autocast if autocast is not None else contextlib.nullcontext():
            pred = model(images).argmax(1)
        total.index_add_(0, targets, torch.ones_like(targets, dtype=dtype))
        correct.index_add_(0, targets, (pred == targets).to(dtype))
    vdist.all_reduce_sum(correct)
    vdist.all_reduce_sum(total)
    return {
        "top1": accuracy_from_counts(correct, total, "top1"),
        "mean_per_class": accuracy_from_counts(correct, total, "mean_per_class"),
        "n": int(total.sum()),
    }
