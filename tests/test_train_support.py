"""Tiny model, tiny in-memory data and a subprocess entry point for the trainer tests.

Run as a script (``python tests/test_train_support.py RUN_DIR [options]``) it trains one tiny
run through ``vcr.train.run`` so that tests can kill it with real signals.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from vcr.attach import VCRSites, register_architecture
from vcr.models import register_model
from vcr.records import RunSpec

NUM_CLASSES = 3
SIDE = 8


class TinyNet(nn.Module):
    """conv stem + GroupNorm, two conv blocks (the VCR sites), dropout, linear head."""

    def __init__(
        self, num_classes=NUM_CLASSES, width=8, dropout=0.1, drop_path_rate=0.0, zero_init_last=True
    ):
        # drop_path_rate / zero_init_last: the recipes' model_kwargs (ConvNeXt-T; torchvision's
        # ResNet-50 recipes), accepted as timm's models do; TinyNet has no use for them
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.GroupNorm(2, width))
        self.blocks = nn.Sequential(
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU()),
        )
        self.drop = nn.Dropout(dropout)
        self.num_features = width
        self.fc = nn.Linear(width, num_classes) if num_classes else nn.Identity()

    def forward(self, x):
        x = self.blocks(torch.relu(self.stem(x)))
        return self.fc(self.drop(x.mean(dim=(2, 3))))


@register_model
def tiny_test_net(num_classes: int = NUM_CLASSES, **kwargs) -> TinyNet:
    return TinyNet(num_classes=num_classes, **kwargs)


@register_architecture("tiny_test_net", lambda m: type(m).__name__ == "TinyNet")
def _tiny_sites(model) -> VCRSites:
    return VCRSites("tiny", ["blocks.0", "blocks.1"], "fc", None)


def tiny_dataset(n: int, seed: int):
    """``n`` images (3, SIDE, SIDE) whose class shows in the mean of one channel."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    x = torch.randn(n, 3, SIDE, SIDE, generator=g) * 0.5
    x[torch.arange(n), y] += 1.0
    return [(x[i], int(y[i])) for i in range(n)]


def augment(x):
    """Random flip + noise from the global RNG (the trainer seeds it per sample)."""
    if torch.rand(()) < 0.5:
        x = x.flip(-1)
    return x + 0.05 * torch.randn_like(x)


class TwoViews:
    def __call__(self, x):
        return [augment(x), augment(x)]


def tiny_bundle(n_train=96, n_eval=30):
    from vcr.data.loading import DataBundle

    return DataBundle(
        train=tiny_dataset(n_train, 0),
        val=tiny_dataset(n_eval, 1),
        test=tiny_dataset(n_eval, 2),
        num_classes=NUM_CLASSES,
    )


def tiny_spec(
    recipe="resnet32_lt",
    method="supervised",
    placement="blocks",
    alpha=0.64,
    beta=0.04,
    seed=0,
    **kw,
) -> RunSpec:
    return RunSpec(
        scale="test",
        method=method,
        arch="tiny_test_net",
        dataset="tiny",
        target="default",
        recipe=recipe,
        placement=placement,
        alpha=alpha,
        beta=beta,
        seed=seed,
        **kw,
    )


BASE_OVERRIDES = {"epochs": 4, "batch_size": 16, "warmup_epochs": 1, "print_freq": 1000}


def run_tiny(out, spec=None, overrides=None, ssl=False):
    from vcr.train import run

    ov = dict(BASE_OVERRIDES)
    ov.update(overrides or {})
    train_tf = TwoViews() if ssl else augment
    return run(
        spec or tiny_spec(),
        out,
        overrides=ov,
        data=tiny_bundle(),
        device="cpu",
        transforms=(train_tf, None),
    )


def backbone_state(run_dir) -> dict:
    return torch.load(Path(run_dir) / "backbone.pt", weights_only=True)["state_dict"]


def read_log(run_dir) -> list[dict]:
    return [json.loads(ln) for ln in (Path(run_dir) / "log.jsonl").read_text().splitlines()]


def _main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--set", nargs="*", default=[])
    p.add_argument("--progress", default=None, help="file to write the global step to")
    p.add_argument("--sleep", type=float, default=0.0, help="seconds per step (to be killed)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    import vcr.train as vt
    from vcr.cli import parse_sets

    inner = vt.training_step
    counter = {"n": 0}

    def slow_step(*a, **k):
        out = inner(*a, **k)
        counter["n"] += 1
        if args.progress:
            Path(args.progress).write_text(str(counter["n"]))
        time.sleep(args.sleep)
        return out

    vt.training_step = slow_step
    try:
        run_tiny(args.out, overrides=parse_sets(args.set))
    except vt.Preempted as err:
        return 128 + int(err.signum)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
