"""Optimization pieces of the trainer: weight-decay groups, the optimizer (LARS included), the
lr schedule and the EMA of the weights, as torchvision's classification reference and the
SimCLR/VICReg code define them."""

from __future__ import annotations

import math

import torch
from torch import nn

from vcr.errors import ConfigError
from vcr.recipes import Recipe
from vcr.records import RunSpec

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
    """The recipe's optimizer over :func:`param_groups`."""
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


class LARS(torch.optim.Optimizer):
    """LARS (You et al. 2017) as in the VICReg/Barlow Twins code: trust ratio
    eta*||w||/||g + wd*w|| (eta 0.001), momentum 0.9.

    Param groups may set ``lars_exclude=True`` (biases and norms): plain SGD with momentum and
    no weight decay for them.
    """

    def __init__(self, params, lr, weight_decay=0.0, momentum=0.9, eta=0.001):
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta)
        defaults["lars_exclude"] = False
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                dp = p.grad
                if not g["lars_exclude"]:
                    dp = dp.add(p, alpha=g["weight_decay"])
                    param_norm = torch.norm(p)
                    update_norm = torch.norm(dp)
                    one = torch.ones_like(param_norm)
                    q = torch.where(
                        param_norm > 0.0,
                        torch.where(update_norm > 0, (g["eta"] * param_norm / update_norm), one),
                        one,
                    )
                    dp = dp.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])
        return loss


def update_ema(ema, model: nn.Module, recipe: Recipe, *, step_in_epoch: int, epoch: int) -> None:
    """torchvision's EMA update every ``model_ema_steps`` steps, reset during warm-up."""
    if step_in_epoch % recipe.model_ema_steps == 0:
        ema.update_parameters(model)
        if epoch < recipe.warmup_epochs:  # torchvision resets the EMA in warmup
            ema.n_averaged.fill_(0)
