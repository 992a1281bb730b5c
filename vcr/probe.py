"""Probes on frozen features: the paper's transfer protocols (PAPER_PROTOCOLS.md §4, §5, B.2).

Protocols (registry ``PROTOCOLS``, each with a config dataclass whose fields are the ``--set`` keys
of ``workflow_scripts/probe.py``):

- ``lbfgs``: Kornblith/SimCLR linear evaluation (Table 1/4/6 transfer columns): L2-regularised
  multinomial logistic regression by full-batch L-BFGS on cached features, 45 log-spaced λ,
  λ chosen on the validation split only, refit on train+val, scored once on test.
- ``sgd``: VICReg-paper linear evaluation for iNat18 / Places205 (SGD + step schedule).
- ``adamw``: the Table 2 subclass probe (AdamW, cosine, 100 epochs).
- ``finetune``: ImageNet-1% fine-tuning of backbone + head (VICReg protocol).

Conventions shared by every probe:

- Accuracies are fractions in [0, 1]. ``metric`` is ``top1`` or ``mean_per_class`` (mean of the
  per-class recalls over the classes present in the scored split), as ``vcr.data.dataset_info``
  says for the dataset.
- Nothing is ever chosen on test: hyper-parameters (λ) and epochs are chosen on ``val``; the test
  split is scored once, after every choice is made. ``tests/test_probe.py`` proves it for λ.
- Feature standardisation (``standardize=True``, default): features are z-scored with the mean
  and std of the split the classifier is fitted on (train for the sweep, train+val for the refit);
  val/test reuse those statistics. Why: the λ grid is a penalty on ‖W‖², so its meaning depends
  on the feature scale; z-scoring makes one grid comparable across ResNet/ConvNeXt/ViT features
  (whose scales differ by orders of magnitude) and conditions L-BFGS far better. The alternative
  (raw features, as ``linusericsson/ssl-transfer``) is ``standardize=False``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vcr.errors import ConfigError

# --------------------------------------------------------------------------------------------
# scoring


METRICS = ("top1", "mean_per_class")


def accuracy(pred, y, metric: str = "top1") -> float:
    """``top1``: fraction correct. ``mean_per_class``: mean over classes present in ``y`` of the
    fraction of that class predicted correctly (Aircraft, Pets, Flowers; SimCLR App. B.8)."""
    pred = torch.as_tensor(pred).reshape(-1).long().cpu()
    y = torch.as_tensor(y).reshape(-1).long().cpu()
    if pred.shape != y.shape:
        raise ValueError(f"accuracy: {pred.shape[0]} predictions for {y.shape[0]} labels")
    if y.numel() == 0:
        raise ValueError("accuracy: empty split")
    correct = (pred == y).float()
    if metric == "top1":
        return float(correct.mean())
    if metric == "mean_per_class":
        classes = torch.unique(y)
        per_class = torch.stack([correct[y == c].mean() for c in classes])
        return float(per_class.mean())
    raise ConfigError(f"metric={metric!r}: expected one of {METRICS}")


def _resolve_device(device) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _as_float(X, device, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(X).to(device=device, dtype=dtype)


def _as_labels(y, device) -> torch.Tensor:
    return torch.as_tensor(y).reshape(-1).to(device=device, dtype=torch.long)


def _num_classes(num_classes, *ys) -> int:
    if num_classes is not None:
        return int(num_classes)
    return int(max(int(torch.as_tensor(y).max()) for y in ys if len(y)) + 1)


@dataclass
class Standardizer:
    """z-scoring with statistics of the fitting split only (std floored so constant features
    stay finite)."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, X: torch.Tensor, enabled: bool = True, eps: float = 1e-6) -> Standardizer:
        if not enabled:
            d = X.shape[1]
            return cls(X.new_zeros(d), X.new_ones(d))
        mean = X.mean(0)
        std = X.std(0, unbiased=False).clamp_min(eps)
        return cls(mean, std)

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        return (X - self.mean) / self.std


def _check_finite(name: str, X: torch.Tensor) -> None:
    if not torch.isfinite(X).all():
        bad = int((~torch.isfinite(X)).sum())
        raise ValueError(
            f"{name} holds {bad} non-finite values (NaN/inf features from the backbone?)"
        )


# --------------------------------------------------------------------------------------------
# L-BFGS logistic-regression probe (Kornblith / SimCLR protocol)

# 45 log-spaced λ. VCR App. B.1 says 1e-5..1e5; SimCLR App. B.8 and ssl-transfer use 1e-6..1e5.
LAMBDA_GRIDS = {"vcr": (-5.0, 5.0), "simclr": (-6.0, 5.0)}


def lambda_grid(name: str = "vcr", num: int = 45) -> np.ndarray:
    """Ascending λ values of the named grid (``vcr``: the paper's, default; ``simclr``)."""
    if name not in LAMBDA_GRIDS:
        raise ConfigError(f"lambda_grid={name!r}: expected one of {sorted(LAMBDA_GRIDS)}")
    lo, hi = LAMBDA_GRIDS[name]
    return np.logspace(lo, hi, int(num))


@dataclass
class LbfgsConfig:
    """Settings of the L-BFGS probe (``--set`` keys of the ``lbfgs`` protocol).

    Penalty convention (as sklearn/ssl-transfer, C = 1/λ): the objective for a given λ is
    ``Σ_i CE(W x_i + b, y_i) + (λ/2)‖W‖²`` (the sum, not the mean, of the losses; the bias is not
    penalised). It is minimised in the equivalent mean-scaled form (divide by N), so ``tol`` is
    sklearn's ``tol`` (max |gradient| of the mean-scaled objective; scipy ``gtol``).
    """

    lambda_grid: str = "vcr"  # vcr: 1e-5..1e5 (paper, default) | simclr: 1e-6..1e5
    num_lambdas: int = 45
    max_iter: int = 100  # L-BFGS iterations per λ: sklearn's default, what ssl-transfer ran
    tol: float = 1e-4  # max |grad| of the mean-scaled objective (sklearn's default tol)
    history_size: int = 10  # L-BFGS memory (scipy's maxcor default)
    standardize: bool = True  # z-score features with the fitting split's statistics
    # Order of the warm-started λ path. "descending" (strong → weak penalty, as glmnet): each
    # solution is a good start for the next, weaker-penalty problem. ssl-transfer goes ascending.
    path: str = "descending"
    dtype: str = "float32"  # float32 is exact enough for selection and ~2.5x faster than float64


def _fit_softmax_lbfgs(
    X: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    lam: float,
    *,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_iter: int = 1000,
    tol: float = 1e-4,
    history_size: int = 10,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Minimise (1/N)[Σ CE + (λ/2)‖W‖²] over (W, b) with full-batch L-BFGS (strong Wolfe)."""
    n, d = X.shape
    if init is None:
        W = X.new_zeros(d, num_classes)
        b = X.new_zeros(num_classes)
    else:
        W, b = (t.detach().clone() for t in init)
    W.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS(
        [W, b],
        lr=1.0,
        max_iter=max_iter,
        max_eval=int(max_iter * 1.25) + 1,
        tolerance_grad=tol,
        tolerance_change=0.0,  # stop on the gradient criterion (sklearn's), not on f changes
        history_size=history_size,
        line_search_fn="strong_wolfe",
    )
    reg = 0.5 * float(lam) / n

    def closure():
        opt.zero_grad(set_to_none=False)
        loss = F.cross_entropy(X @ W + b, y, reduction="mean") + reg * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    n_iter = int(opt.state[opt._params[0]].get("n_iter", 0))
    return W.detach(), b.detach(), n_iter


def linear_probe_lbfgs(
    Xtr,
    ytr,
    Xval,
    yval,
    Xtest,
    ytest,
    *,
    lambdas=None,
    metric: str = "top1",
    num_classes: int | None = None,
    device=None,
    config: LbfgsConfig | None = None,
    **overrides,
) -> dict[str, Any]:
    """Kornblith/SimCLR linear probe. λ is chosen on (Xval, yval) only; then the classifier is
    refit on train+val at that λ and scored once on test.

    ``lambdas`` (ascending or not) overrides the config grid. Ties in val score go to the
    smallest λ (as ssl-transfer's strict ``>`` over an ascending grid). Returns a dict with
    ``val`` (best val score), ``test``, ``best_lambda``, ``lambdas``, ``val_scores``,
    ``n_iter`` (per λ), ``refit_iter``, ``seconds``.
    """
    cfg = _with_overrides(config or LbfgsConfig(), overrides)
    if metric not in METRICS:
        raise ConfigError(f"metric={metric!r}: expected one of {METRICS}")
    dev = _resolve_device(device)
    dtype = {"float32": torch.float32, "float64": torch.float64}[cfg.dtype]
    lams = np.sort(
        np.asarray(
            lambdas if lambdas is not None else lambda_grid(cfg.lambda_grid, cfg.num_lambdas), float
        )
    )
    if lams.size == 0 or (lams <= 0).any():
        raise ConfigError(f"lambdas must be positive, got {lams.tolist()}")
    t0 = time.perf_counter()
    Xtr, Xval = _as_float(Xtr, dev, dtype), _as_float(Xval, dev, dtype)
    ytr, yval = _as_labels(ytr, dev), _as_labels(yval, dev)
    _check_finite("train features", Xtr)
    _check_finite("val features", Xval)
    k = _num_classes(num_classes, ytr, yval)

    # 1) the λ path on train, scored on val
    std = Standardizer.fit(Xtr, cfg.standardize)
    Ztr, Zval = std(Xtr), std(Xval)
    order = np.argsort(-lams) if cfg.path == "descending" else np.argsort(lams)
    if cfg.path not in ("descending", "ascending"):
        raise ConfigError(f"path={cfg.path!r}: expected descending | ascending")
    val_scores = np.full(lams.size, np.nan)
    n_iters = np.zeros(lams.size, dtype=int)
    solutions: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    init = None
    for i in order:
        W, b, it = _fit_softmax_lbfgs(
            Ztr, ytr, k, lams[i], init=init, max_iter=cfg.max_iter, tol=cfg.tol,
            history_size=cfg.history_size,
        )  # fmt: skip
        init = (W, b)
        solutions[int(i)] = init
        n_iters[i] = it
        val_scores[i] = accuracy((Zval @ W + b).argmax(1), yval, metric)
    best = int(np.flatnonzero(val_scores == val_scores.max())[0])  # smallest λ among ties

    # 2) refit on train+val at the chosen λ (warm start from its train solution), 3) score test
    Xtv = torch.cat([Xtr, Xval])
    ytv = torch.cat([ytr, yval])
    std_tv = Standardizer.fit(Xtv, cfg.standardize)
    W, b, refit_iter = _fit_softmax_lbfgs(
        std_tv(Xtv), ytv, k, lams[best], init=solutions[best], max_iter=cfg.max_iter,
        tol=cfg.tol, history_size=cfg.history_size,
    )  # fmt: skip
    Xte = _as_float(Xtest, dev, dtype)
    _check_finite("test features", Xte)
    test = accuracy((std_tv(Xte) @ W + b).argmax(1), _as_labels(ytest, dev), metric)
    return {
        "val": float(val_scores[best]),
        "test": float(test),
        "metric": metric,
        "best_lambda": float(lams[best]),
        "best_index": best,
        "lambdas": lams.tolist(),
        "val_scores": val_scores.tolist(),
        "n_iter": n_iters.tolist(),
        "refit_iter": int(refit_iter),
        "seconds": time.perf_counter() - t0,
        "device": str(dev),
        "config": asdict(cfg),
    }


def sklearn_probe_reference(
    Xtr,
    ytr,
    Xval,
    yval,
    Xtest,
    ytest,
    *,
    lambdas=None,
    metric: str = "top1",
    config: LbfgsConfig | None = None,
    **overrides,
) -> dict[str, Any]:
    """The same protocol with scikit-learn's ``LogisticRegression(solver="lbfgs")`` (C = 1/λ,
    warm start along the same λ path, same standardisation, same tie rule), float64: the reference
    the torch probe is tested and benchmarked against."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    cfg = _with_overrides(config or LbfgsConfig(), overrides)
    lams = np.sort(
        np.asarray(
            lambdas if lambdas is not None else lambda_grid(cfg.lambda_grid, cfg.num_lambdas), float
        )
    )
    t0 = time.perf_counter()
    Xtr, Xval, Xtest = (np.asarray(torch.as_tensor(a).double().cpu()) for a in (Xtr, Xval, Xtest))
    ytr, yval, ytest = (
        np.asarray(torch.as_tensor(a).long().cpu()).reshape(-1) for a in (ytr, yval, ytest)
    )

    def zscore(A):
        if not cfg.standardize:
            return lambda B: B
        mu, sd = A.mean(0), np.maximum(A.std(0), 1e-6)
        return lambda B: (B - mu) / sd

    z = zscore(Xtr)
    Ztr, Zval = z(Xtr), z(Xval)
    order = np.argsort(-lams) if cfg.path == "descending" else np.argsort(lams)
    clf = LogisticRegression(solver="lbfgs", max_iter=cfg.max_iter, tol=cfg.tol, warm_start=True)
    val_scores = np.full(lams.size, np.nan)
    n_iters = np.zeros(lams.size, dtype=int)
    coefs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i in order:
            clf.set_params(C=1.0 / lams[i])
            clf.fit(Ztr, ytr)
            n_iters[i] = int(np.max(clf.n_iter_))
            coefs[int(i)] = (clf.coef_.copy(), clf.intercept_.copy())
            val_scores[i] = accuracy(clf.predict(Zval), yval, metric)
        best = int(np.flatnonzero(val_scores == val_scores.max())[0])
        Xtv = np.concatenate([Xtr, Xval])
        ytv = np.concatenate([ytr, yval])
        ztv = zscore(Xtv)
        clf.coef_, clf.intercept_ = coefs[best]
        clf.set_params(C=1.0 / lams[best])
        clf.fit(ztv(Xtv), ytv)
    test = accuracy(clf.predict(ztv(Xtest)), ytest, metric)
    return {
        "val": float(val_scores[best]),
        "test": float(test),
        "metric": metric,
        "best_lambda": float(lams[best]),
        "best_index": best,
        "lambdas": lams.tolist(),
        "val_scores": val_scores.tolist(),
        "n_iter": n_iters.tolist(),
        "seconds": time.perf_counter() - t0,
        "config": asdict(cfg),
    }


# --------------------------------------------------------------------------------------------
# mini-batch linear heads on cached features (SGD: iNat18/Places205; AdamW: Table 2)

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
    dev = _resolve_device(device)
    Xtr, Xval, Xte = (_as_float(a, dev) for a in (Xtr, Xval, Xtest))
    ytr, yval, yte = (_as_labels(a, dev) for a in (ytr, yval, ytest))
    for name, A in (("train features", Xtr), ("val features", Xval), ("test features", Xte)):
        _check_finite(name, A)
    k = _num_classes(num_classes, ytr, yval)
    std = Standardizer.fit(Xtr, standardize)
    Xtr, Xval, Xte = std(Xtr), std(Xval), std(Xte)
    gen = torch.Generator().manual_seed(int(seed))
    head = torch.nn.Linear(Xtr.shape[1], k).to(dev)
    with torch.no_grad():  # VICReg evaluate.py: N(0, 0.01) weights, zero bias
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.01)
        head.bias.zero_()
    opt = make_opt(head.parameters())
    steps_per_epoch = max(1, math.ceil(Xtr.shape[0] / batch_size))
    sched = make_sched(opt, steps_per_epoch)
    history = []
    t0 = time.perf_counter()
    for epoch in range(int(epochs)):
        perm = torch.randperm(Xtr.shape[0], generator=gen).to(dev)
        total = 0.0
        for s in range(steps_per_epoch):
            idx = perm[s * batch_size : (s + 1) * batch_size]
            loss = F.cross_entropy(head(Xtr[idx]), ytr[idx])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"linear probe loss is {float(loss)} at epoch {epoch}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step_batch()
            total += loss.item() * idx.numel()
        sched.step_epoch()
        with torch.no_grad():
            val = accuracy(head(Xval).argmax(1), yval, metric)
        history.append({"epoch": epoch + 1, "train_loss": total / Xtr.shape[0], "val": val})
    with torch.no_grad():
        val = accuracy(head(Xval).argmax(1), yval, metric)
        test = accuracy(head(Xte).argmax(1), yte, metric)  # scored once, after training
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
    cfg = _with_overrides(config or SgdConfig(), overrides)
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
    cfg = _with_overrides(config or AdamwConfig(), overrides)

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


# --------------------------------------------------------------------------------------------
# ImageNet-1% fine-tuning (VICReg protocol)


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
    # "auto": train_imagenet (RandomResizedCrop + flip, as VICReg) at >=64 px inputs, train_cifar
    # (pad-4 crop + flip) for the 32-px mini/CIFAR images where an 8%-area crop destroys them.
    train_transform: str = "auto"
    seed: int = 0


@torch.no_grad()
def _evaluate(model, loader, device, metric) -> float:
    model.eval()
    preds, ys = [], []
    for x, y in loader:
        preds.append(model(x.to(device)).argmax(1).cpu())
        ys.append(torch.as_tensor(y))
    return accuracy(torch.cat(preds), torch.cat(ys), metric)


def finetune(
    backbone: torch.nn.Module,
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
    cfg = _with_overrides(config or FinetuneConfig(), overrides)
    dev = _resolve_device(device)
    torch.manual_seed(int(cfg.seed))
    gen = torch.Generator().manual_seed(int(cfg.seed))
    if feature_dim is None:
        feature_dim = _infer_feature_dim(backbone, train_set)
    head = torch.nn.Linear(int(feature_dim), int(num_classes))
    with torch.no_grad():
        head.weight.normal_(0.0, 0.01, generator=gen)
        head.bias.zero_()
    model = torch.nn.Sequential(backbone, head).to(dev)
    opt = torch.optim.SGD(
        [
            {"params": head.parameters(), "lr": cfg.lr_head},
            {"params": backbone.parameters(), "lr": cfg.lr_backbone},
        ],
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, int(cfg.epochs)))
    from vcr.features import auto_workers

    loader_kw = {"batch_size": cfg.batch_size, "num_workers": auto_workers(cfg.num_workers)}
    train_loader = torch.utils.data.DataLoader(
        train_set, shuffle=True, drop_last=False, generator=gen, **loader_kw
    )
    val_loader = torch.utils.data.DataLoader(val_set, shuffle=False, **loader_kw)
    best = (-1.0, 0, None)
    history = []
    t0 = time.perf_counter()
    for epoch in range(int(cfg.epochs)):
        model.train()
        total, count = 0.0, 0
        for x, y in train_loader:
            x, y = x.to(dev), torch.as_tensor(y).to(dev)
            loss = F.cross_entropy(model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"fine-tuning loss is {float(loss)} at epoch {epoch}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * y.numel()
            count += y.numel()
        sched.step()
        val = _evaluate(model, val_loader, dev, metric)
        history.append({"epoch": epoch + 1, "train_loss": total / max(1, count), "val": val})
        if val > best[0]:
            state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            best = (val, epoch + 1, state)
    if best[2] is None:  # epochs=0: score the initial weights
        best = (_evaluate(model, val_loader, dev, metric), 0, None)
    else:
        model.load_state_dict(best[2])
    test_loader = torch.utils.data.DataLoader(test_set, shuffle=False, **loader_kw)
    test = _evaluate(model, test_loader, dev, metric)
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


# --------------------------------------------------------------------------------------------
# registry and config overrides


PROTOCOLS: dict[str, type] = {
    "lbfgs": LbfgsConfig,
    "sgd": SgdConfig,
    "adamw": AdamwConfig,
    "finetune": FinetuneConfig,
}


def _with_overrides(cfg, overrides: dict):
    if not overrides:
        return cfg
    names = {f.name for f in fields(cfg)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(
            f"unknown {type(cfg).__name__} key(s) {unknown}; expected some of {sorted(names)}"
        )
    return type(cfg)(**{**asdict(cfg), **overrides})


def make_config(protocol: str, overrides: dict | None = None):
    """The protocol's config with ``--set`` overrides applied; unknown keys raise ConfigError."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol {protocol!r}: expected one of {sorted(PROTOCOLS)}")
    cfg = PROTOCOLS[protocol]()
    return _with_overrides(cfg, dict(overrides or {}))


def _coerce(key: str, value, like):
    """A ``--set`` value (already YAML-parsed) in the type of the field's default."""
    try:
        if like is None or value is None:
            return value
        if isinstance(like, bool):
            if isinstance(value, bool):
                return value
            raise TypeError
        if isinstance(like, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError
            return value
        if isinstance(like, float):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if isinstance(like, tuple):
            return tuple(value) if isinstance(value, list | tuple) else (value,)
        if isinstance(like, str):
            return str(value)
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise ConfigError(f"--set {key}={value!r}: expected a {type(like).__name__}")


def parse_sets(items) -> dict[str, Any]:
    """``["epochs=3", "lambda_grid=simclr"]`` -> ``{"epochs": 3, "lambda_grid": "simclr"}``
    (values parsed as YAML scalars/lists)."""
    import yaml

    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v) if v.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: cannot parse the value: {err}") from None
    return out


def split_config(cfg_cls, sets: dict, *, common: dict) -> tuple[Any, dict]:
    """Split ``--set`` values into (protocol config, common settings); unknown keys raise
    ConfigError naming them and the accepted keys."""
    names = {f.name: f for f in fields(cfg_cls)}
    base = cfg_cls()
    proto, com = {}, dict(common)
    for k, v in sets.items():
        if k in names:
            proto[k] = _coerce(k, v, getattr(base, k))
        elif k in common:
            com[k] = _coerce(k, v, common[k])
        else:
            raise ConfigError(
                f"--set {k}: unknown key for {cfg_cls.__name__}; expected one of "
                f"{sorted(names) + sorted(common)}"
            )
    return _with_overrides(base, proto), com


# Settings every protocol accepts through --set besides its own config keys.
COMMON_SETTINGS = {
    "target": "default",  # label set probed (Table 2: sub); the plan passes target=sub
    "extract_batch_size": 256,  # backbone batch size for feature extraction
    "extract_workers": -1,  # DataLoader workers for extraction; -1: CPUs - 1, at most 8
    "cache_dtype": "float32",  # feature cache dtype (float32 | float16)
}


def evaluate_run(
    run_dir,
    protocol: str,
    eval_datasets: list[str],
    manifests: list,
    *,
    feature_cache=None,
    sets: dict | None = None,
    device=None,
    log=print,
) -> list[dict]:
    """Probe one run's backbone on each eval dataset; one metric record per dataset.

    The run's parameters are ``RUN_DIR/run.json["params"]``; the backbone ``RUN_DIR/backbone.pt``.
    Everything cheap is checked (protocol, keys, files, manifests, label sets) before any
    feature is extracted.
    """
    from pathlib import Path

    from vcr import io
    from vcr.records import RunSpec, make_record

    run_dir = Path(run_dir)
    if protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol {protocol!r}: expected one of {sorted(PROTOCOLS)}")
    if len(eval_datasets) != len(manifests):
        raise ConfigError(
            f"{len(eval_datasets)} --eval-dataset names but {len(manifests)} --manifest files: "
            "give one manifest per eval dataset, in the same order"
        )
    cfg, com = split_config(PROTOCOLS[protocol], dict(sets or {}), common=COMMON_SETTINGS)
    run_json = run_dir / "run.json"
    if not run_json.is_file():
        raise FileNotFoundError(f"{run_json} is missing: is {run_dir} a finished pretraining run?")
    params = RunSpec.from_dict(io.read_json(run_json)["params"]).to_dict()
    if not (run_dir / "backbone.pt").is_file():
        raise FileNotFoundError(
            f"{run_dir / 'backbone.pt'} is missing: the pretraining run has not finished "
            "(workflow_scripts/pretrain.py writes it last)"
        )
    from vcr.data import dataset_info

    target = com["target"]
    infos = []
    for name, m in zip(eval_datasets, manifests):
        if not Path(m).is_file():
            raise FileNotFoundError(
                f"manifest {m} for eval dataset {name!r} is missing: run workflow_scripts/"
                f"prepare_data.py --dataset {name} --out {Path(m).parent}"
            )
        infos.append(dataset_info(m, target))

    from vcr.features import RunFeatures

    feats = RunFeatures(
        run_dir,
        cache_dir=feature_cache,
        device=device,
        batch_size=com["extract_batch_size"],
        num_workers=com["extract_workers"],
        cache_dtype=com["cache_dtype"],
    )
    records = []
    for name, m, info in zip(eval_datasets, manifests, infos):
        t0 = time.perf_counter()
        metric, k = info["metric"], info["num_classes"]
        if protocol == "finetune":
            res = _finetune_run(feats, name, m, info, target, cfg, device)
        else:
            splits = {s: feats.get(name, s, manifest=m, target=target) for s in SPLITS}
            args = [t for s in SPLITS for t in splits[s]]
            if protocol == "lbfgs":
                res = linear_probe_lbfgs(
                    *args, metric=metric, num_classes=k, device=device, config=cfg
                )
            elif protocol == "sgd":
                res = linear_probe_sgd(
                    *args, metric=metric, num_classes=k, device=device, eval_dataset=name,
                    config=cfg,
                )  # fmt: skip
            else:
                res = linear_probe_adamw(
                    *args, metric=metric, num_classes=k, device=device, config=cfg
                )
        summary = {
            key: res[key]
            for key in ("best_lambda", "best_index", "val_scores", "refit_iter", "best_epoch")
            if key in res
        }
        extra = {
            "target": target,
            "num_classes": k,
            "config": res.get("config", asdict(cfg)),
            "seconds": time.perf_counter() - t0,
            "device": res.get("device"),
            **summary,
        }
        records.append(
            make_record(
                params,
                eval_dataset=name,
                protocol=protocol,
                metric=metric,
                val=res["val"],
                test=res["test"],
                extra=extra,
            )
        )
        log(
            f"{protocol} {name} ({target}): val {res['val']:.4f} test {res['test']:.4f} "
            f"[{metric}] in {extra['seconds']:.1f} s"
        )
    return records


SPLITS = ("train", "val", "test")


def _finetune_run(feats, name, manifest, info, target, cfg: FinetuneConfig, device):
    from vcr.data import build_transform, load_dataset
    from vcr.models import load_backbone

    kind = cfg.train_transform
    if kind == "auto":
        kind = "train_imagenet" if info["image_size"] >= 64 else "train_cifar"
    norm = {"image_size": info["image_size"], "mean": info["mean"], "std": info["std"]}
    train_tf, eval_tf = build_transform(kind, **norm), build_transform("eval", **norm)
    sets = {
        s: load_dataset(name, s, manifest=manifest, transform=tf, target=target)
        for s, tf in (("train", train_tf), ("val", eval_tf), ("test", eval_tf))
    }
    backbone = load_backbone(feats.backbone_path, map_location="cpu")
    return finetune(
        backbone, sets["train"], sets["val"], sets["test"], num_classes=info["num_classes"],
        metric=info["metric"], device=device, config=cfg,
    )  # fmt: skip
