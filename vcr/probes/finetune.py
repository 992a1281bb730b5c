"""The ``finetune`` probe: ImageNet-1% fine-tuning of backbone + a new linear head (VICReg
protocol), through the trainer's ``training_step`` and ``evaluate`` and the one transform rule
(``vcr.data.transforms.train_transform_kind``)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from vcr.cli import resolve_device, with_overrides


@dataclass
class FinetuneConfig:
    """``finetune`` protocol (VICReg App. B.3 / evaluate.py; VCR gives no values): SGD momentum
    0.9, no weight decay, batch 256, 20 epochs, lr backbone 0.03 / head 0.08, cosine per epoch on
    both; head N(0, 0.01), bias 0. Unlike VICReg's evaluate.py (best val-top1 over epochs, where
    its "val" is the reported ImageNet val), the epoch is chosen on our ``val`` split and the
    test score is of that epoch's weights (kept in memory, scored once at the end)."""

    epochs: int = 20
    lr_backbone: float = 0.03
    lr_head: float = 0.08
    weight_decay: float = 0.0
    momentum: float = 0.9
    batch_size: int = 256
    num_workers: int = -1  # -1: one per available CPU but one, at most 8
    # "auto": the trainer's rule (train_imagenet = RandomResizedCrop + flip, as VICReg, at
    # >= 64 px; train_cifar = pad-4 crop + flip for 32-px images, where an 8%-area crop
    # destroys them); any kind of vcr.data.transforms, or "none" (the eval transform).
    train_transform: str = "auto"
    seed: int = 0


def finetune(
    backbone: nn.Module,
    train_set,
    val_set,
    test_set,
    *,
    num_classes: int,
    feature_dim: int | None = None,
    metric: str = "top1",
    device=None,
    config: FinetuneConfig | None = None,
    **overrides,
) -> dict[str, Any]:
    """Fine-tune ``backbone`` + a new linear head on ``train_set``; pick the epoch on ``val_set``
    (ties: earliest); return that epoch's val and test scores."""
    from vcr.features import auto_workers
    from vcr.scoring import evaluate
    from vcr.train import supervised_loss, training_step

    cfg = with_overrides(config or FinetuneConfig(), overrides, where="FinetuneConfig")
    dev = resolve_device(device)
    torch.manual_seed(int(cfg.seed))
    gen = torch.Generator().manual_seed(int(cfg.seed))
    if feature_dim is None:
        feature_dim = _infer_feature_dim(backbone, train_set)
    head = nn.Linear(int(feature_dim), int(num_classes))
    with torch.no_grad():
        head.weight.normal_(0.0, 0.01, generator=gen)
        head.bias.zero_()
    model = nn.Sequential(backbone, head).to(dev)
    opt = torch.optim.SGD(
        [
            {"params": head.parameters(), "lr": cfg.lr_head},
            {"params": backbone.parameters(), "lr": cfg.lr_backbone},
        ],
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, int(cfg.epochs)))
    loader_kw = {"batch_size": cfg.batch_size, "num_workers": auto_workers(cfg.num_workers)}
    train_loader = torch.utils.data.DataLoader(
        train_set, shuffle=True, drop_last=False, generator=gen, **loader_kw
    )
    val_loader = torch.utils.data.DataLoader(val_set, shuffle=False, **loader_kw)
    loss_fn = supervised_loss(nn.CrossEntropyLoss())

    def score(loader) -> float:
        # float32 counts: every probe record is scored at the probes' precision (vcr.scoring)
        counts = evaluate(model, loader, dev, num_classes=num_classes, count_dtype=torch.float32)
        return counts[metric]

    best = (-1.0, 0, None)
    history = []
    t0 = time.perf_counter()
    for epoch in range(int(cfg.epochs)):
        model.train()
        total, count = 0.0, 0
        for x, y in train_loader:
            x, y = x.to(dev), torch.as_tensor(y).to(dev)
            logs = training_step(
                model,
                loss_fn,
                (x, y),
                opt,
                describe=lambda epoch=epoch: f"(fine-tuning epoch {epoch})",
            )
            total += float(logs["task_loss"]) * y.numel()
            count += y.numel()
        sched.step()
        val = score(val_loader)
        history.append({"epoch": epoch + 1, "train_loss": total / max(1, count), "val": val})
        if val > best[0]:
            state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            best = (val, epoch + 1, state)
    if best[2] is None:  # epochs=0: score the initial weights
        best = (score(val_loader), 0, None)
    else:
        model.load_state_dict(best[2])
    test = score(torch.utils.data.DataLoader(test_set, shuffle=False, **loader_kw))
    return {
        "val": float(best[0]),
        "test": float(test),
        "metric": metric,
        "best_epoch": int(best[1]),
        "history": history,
        "seconds": time.perf_counter() - t0,
        "device": str(dev),
        "config": asdict(cfg),
    }


@torch.no_grad()
def _infer_feature_dim(backbone, dataset) -> int:
    x = dataset[0][0].unsqueeze(0)
    was = backbone.training
    backbone.eval()
    d = int(backbone(x).shape[-1])
    backbone.train(was)
    return d


def finetune_on_dataset(task, cfg: FinetuneConfig) -> dict[str, Any]:
    """The registry entry: load the dataset's splits with the run's transforms and fine-tune the
    run's backbone (``task`` is a ``vcr.probes.run.ProbeTask``)."""
    from vcr.data import build_transform, load_dataset
    from vcr.data.transforms import probe_resize, train_transform_kind
    from vcr.models import load_backbone

    info = task.info
    kind = train_transform_kind(cfg.train_transform, "supervised", int(info["image_size"]))
    norm = {"image_size": info["image_size"], "mean": info["mean"], "std": info["std"]}
    resize = probe_resize(int(info["image_size"]), task.eval_resize)  # 256 before the 224 crop
    train_tf = build_transform(kind, **norm)
    eval_tf = build_transform("eval", resize_size=resize, **norm)
    sets = {
        s: load_dataset(task.dataset, s, manifest=task.manifest, transform=tf, target=task.target)
        for s, tf in (("train", train_tf), ("val", eval_tf), ("test", eval_tf))
    }
    backbone = load_backbone(task.features.backbone_path, map_location="cpu")
    return finetune(
        backbone, sets["train"], sets["val"], sets["test"], num_classes=info["num_classes"],
        metric=info["metric"], device=task.device, config=cfg,
    )  # fmt: skip
