"""Probes on frozen features: the paper's transfer protocols (PAPER_PROTOCOLS.md §4, §5, B.2).

Protocols (registry ``PROTOCOLS``, each with a config dataclass whose fields are the ``--set`` keys
of ``workflow_scripts/probe.py``):

- ``lbfgs``: Kornblith/SimCLR linear evaluation (Table 1/4/6 transfer columns): L2-regularised
  multinomial logistic regression by full-batch L-BFGS on cached features, 45 log-spaced λ
  (a warm-started path from strong to weak penalty, stopped a decade past the val peak:
  ``path_patience``), λ chosen on the validation split only, refit on train+val, scored once on
  test.
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
        std, mean = torch.std_mean(X, 0, correction=0)
        return cls(mean, std.clamp_min(eps))

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
    # Early stop of the λ path: stop once `path_patience` consecutive λ scored strictly below the
    # best val score so far (a tie counts as no worse, so a flat stretch never stops the path and
    # the smallest-λ tie rule can still act); 0 fits every λ of the grid (the full sweep). 5 is
    # about one decade of the 45-λ grid (4.4 λ per decade): the val accuracy of an L2 probe
    # against log λ rises to one peak and then falls or flattens as the penalty weakens, and the
    # weak-λ fits past the peak are the slow, ill-conditioned ones; a full decade of λ all worse
    # than the best is taken as the far side of the peak. Unfitted λ have val score None.
    path_patience: int = 5
    # Rank of the feature-covariance preconditioner of L-BFGS (exact covariance when d <= 4 x rank;
    # 0: plain L-BFGS with a scalar initial Hessian, as torch.optim.LBFGS and scipy). It changes
    # the path to the minimum, not the minimum nor the stopping rule.
    precond_rank: int = 128
    dtype: str = "float32"  # float32 is exact enough for selection and ~2.5x faster than float64


def _cubic_min(x1, f1, g1, x2, f2, g2, lo, hi) -> float:
    """Minimiser of the cubic through (x1, f1, f1'=g1), (x2, f2, g2), clamped to [lo, hi] (the
    interpolation of ``torch.optim.lbfgs``, on Python floats)."""
    d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2)
    d2_sq = d1 * d1 - g1 * g2
    if d2_sq < 0:
        return (lo + hi) / 2.0
    d2 = math.sqrt(d2_sq)
    if x1 <= x2:
        t = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2))
    else:
        t = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2))
    return min(max(t, lo), hi) if math.isfinite(t) else (lo + hi) / 2.0


def _strong_wolfe_1d(phi, f0, g0, t, *, c1=1e-4, c2=0.9, max_ls=25) -> float:
    """Step ``t`` along a descent direction satisfying the strong Wolfe conditions, with the
    bracketing/zoom logic of ``torch.optim.lbfgs._strong_wolfe``, but on the 1-D restriction
    ``phi(t) -> (f, f')``: here each trial costs O(n·k), no pass over the features.
    Returns the best step found (0.0 when none decreased f)."""
    f_prev, g_prev, t_prev = f0, g0, 0.0
    f_new, g_new = phi(t)
    n = 1
    bracket = None
    while n <= max_ls:
        if f_new > f0 + c1 * t * g0 or (n > 2 and f_new >= f_prev):
            bracket = [(t_prev, f_prev, g_prev), (t, f_new, g_new)]
            break
        if abs(g_new) <= -c2 * g0:
            return t
        if g_new >= 0:
            bracket = [(t_prev, f_prev, g_prev), (t, f_new, g_new)]
            break
        t_next = _cubic_min(
            t_prev, f_prev, g_prev, t, f_new, g_new, t + 0.01 * (t - t_prev), 10 * t
        )
        t_prev, f_prev, g_prev, t = t, f_new, g_new, t_next
        f_new, g_new = phi(t)
        n += 1
    if bracket is None:  # max_ls extrapolations without a bracket: keep the last point
        return t if f_new < f0 else 0.0
    # zoom: bracket[lo] is the point with the lower f
    lo, hi = (0, 1) if bracket[0][1] <= bracket[1][1] else (1, 0)
    insuf = False
    while n <= max_ls:
        (a, fa, ga), (b, fb, gb) = bracket
        width = abs(b - a)
        if width < 1e-12 * max(1.0, abs(a), abs(b)):
            break
        t = _cubic_min(a, fa, ga, b, fb, gb, min(a, b), max(a, b))
        eps = 0.1 * width
        if min(max(a, b) - t, t - min(a, b)) < eps:
            if insuf or t >= max(a, b) or t <= min(a, b):
                t = max(a, b) - eps if abs(t - max(a, b)) < abs(t - min(a, b)) else min(a, b) + eps
                insuf = False
            else:
                insuf = True
        else:
            insuf = False
        f_new, g_new = phi(t)
        n += 1
        if f_new > f0 + c1 * t * g0 or f_new >= bracket[lo][1]:
            bracket[hi] = (t, f_new, g_new)
            lo, hi = (0, 1) if bracket[0][1] <= bracket[1][1] else (1, 0)
        else:
            if abs(g_new) <= -c2 * g0:
                return t
            if g_new * (bracket[hi][0] - bracket[lo][0]) >= 0:
                bracket[hi] = bracket[lo]
            bracket[lo] = (t, f_new, g_new)
    t, f = bracket[lo][0], bracket[lo][1]
    return t if f < f0 else 0.0


class _FeaturePreconditioner:
    """``M ≈ (a·C + (λ/n) I)⁻¹`` on the W block and ``1/a`` on the bias, the initial inverse
    Hessian of the L-BFGS two-loop recursion, where ``C = XᵀX/n`` is the feature (co)variance and
    ``a = 1/k`` the curvature of the softmax at uniform predictions (``diag(p) - ppᵀ``). The
    cross-entropy Hessian is roughly ``C ⊗ (diag(p) - ppᵀ)``: its spread over feature directions
    is the spread of C's spectrum, which L-BFGS with a scalar initial Hessian has to learn from
    ten curvature pairs. C is taken exactly (eigh) when d ≤ 4·rank, else as its top-``rank``
    eigenpairs by a seeded randomised range finder with one power iteration (four products of X
    with d x rank matrices), the other eigenvalues set to their mean (trace known).
    Any symmetric positive-definite M leaves the minimiser, and the stopping rule, unchanged."""

    def __init__(self, X, rank: int, num_classes: int):
        n, d = X.shape
        self.a = 1.0 / num_classes
        self.cost = 0.0  # in passes over X with k columns
        dt = X.dtype
        if d <= 4 * rank:
            C = X.t() @ X / n
            self.cost += d / num_classes
            e, V = torch.linalg.eigh(C.double())
            self.rest = None
        else:
            g = torch.Generator(device=X.device).manual_seed(0)
            omega = torch.randn(d, rank, generator=g, device=X.device, dtype=dt)
            Q = torch.linalg.qr(X.t() @ (X @ omega)).Q
            CQ = X.t() @ (X @ Q) / n
            self.cost += 4 * rank / num_classes
            e, U = torch.linalg.eigh((Q.t() @ CQ).double())
            V = Q.double() @ U
            trace = float(X.pow(2).sum(dtype=torch.float64)) / n
            self.rest = max(trace - float(e.sum()), 0.0) / (d - rank)
        e = e.clamp_min(0.0)
        floor = 1e-6 * float(e.max()) if e.numel() else 1e-6
        if self.rest is not None:
            self.rest = max(self.rest, floor)
        self.e, self.V = e.clamp_min(floor).to(dt), V.to(dt)

    def __call__(self, qW: torch.Tensor, qb: torch.Tensor, reg: float):
        inv = 1.0 / (self.a * self.e + reg)
        c = self.V.t() @ qW
        if self.rest is None:
            outW = self.V @ (c * inv.unsqueeze(1))
        else:
            inv_rest = 1.0 / (self.a * self.rest + reg)
            outW = qW * inv_rest + self.V @ (c * (inv - inv_rest).unsqueeze(1))
        return outW, qb / self.a


class _SoftmaxPath:
    """Full-batch L-BFGS for ``(1/n)[Σ CE(W x_i + b, y_i) + (λ/2)‖W‖²]`` along a λ path.

    Written by hand for this one objective, because its cost is the passes over the n x d
    feature matrix and everything else is O(n·k) or O(d·k):

    - loss and gradient without autograd: logits ``Z = X W + b``, residual ``R = (softmax(Z) -
      onehot(y)) / n``, gradient ``(Xᵀ R + (λ/n) W, Σ_i R_i)``.
    - the line search works on the logits: along a direction ``(dW, db)`` the logits are
      ``Z + t·D`` with ``D = X dW + db`` (one GEMM), so every trial step costs O(n·k) and an
      iteration costs exactly two GEMMs (``D``, then ``Xᵀ R`` at the accepted step) however many
      trials the strong-Wolfe search makes. ``Z`` is updated as ``Z + t·D`` and recomputed from
      (W, b) every ``refresh`` iterations against float32 drift.
    - preconditioned: the two-loop recursion's initial inverse Hessian is ``γ·M`` with M a
      feature-covariance preconditioner (``_FeaturePreconditioner``; ``precond_rank=0``: the
      classical ``γ·I``) and γ = sᵀy / yᵀMy from the newest pair.
    - the data term does not depend on λ: moving to the next λ of the path costs no pass (the
      data gradient at the warm start is the one already known), and the L-BFGS memory is kept
      across λ with its curvature pairs corrected exactly for the new penalty (``y = y_data +
      (λ/n) s_W``), so a warm-started fit starts with the previous fit's curvature.

    The stopping rule is sklearn's, untouched: max |gradient| ≤ ``tol``, at most ``max_iter``
    iterations per λ.
    """

    def __init__(
        self, X, y, num_classes, theta=None, *, history_size=10, precond_rank=128,
        preconditioner=None, refresh=32,
    ):  # fmt: skip
        self.X, self.y, self.k = X, y, int(num_classes)
        self.n, self.d = X.shape
        self.dk = self.d * self.k
        self.rows = torch.arange(self.n, device=X.device)
        self.history_size, self.refresh = int(history_size), int(refresh)
        self.passes = 0.0  # products with the n x d features, in units of k columns
        self.pre = preconditioner
        if self.pre is None and precond_rank > 0:
            self.pre = _FeaturePreconditioner(X, int(precond_rank), self.k)
            self.passes += self.pre.cost
        # curvature pairs (s, y of the data term, y of the objective at the current λ, 1/yᵀs)
        self.memory: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]] = []
        self._reg = 0.0
        if theta is None:  # W = 0, b = 0: logits are zero, no pass needed
            self.theta = X.new_zeros(self.dk + self.k)
            self.Z = X.new_zeros(self.n, self.k)
        else:
            self.theta = theta.clone()
            self.Z = self._forward(self.theta)
        self.P = torch.softmax(self.Z, 1)
        self.g_data = self._data_grad(self.P)
        self._since_exact = 0

    def W(self, v=None):
        return (self.theta if v is None else v)[: self.dk].view(self.d, self.k)

    def b(self, v=None):
        return (self.theta if v is None else v)[self.dk :]

    def _forward(self, v) -> torch.Tensor:
        self.passes += 1
        return torch.addmm(self.b(v), self.X, self.W(v))

    def _residual(self, P):
        """(softmax - onehot) / n: the gradient of the mean data loss with respect to the logits."""
        R = P.clone()
        R[self.rows, self.y] -= 1.0
        return R.div_(self.n)

    def _data_grad(self, P) -> torch.Tensor:
        R = self._residual(P)
        self.passes += 1
        g = R.new_empty(self.dk + self.k)
        torch.mm(self.X.t(), R, out=self.W(g))
        torch.sum(R, 0, out=self.b(g))
        return g

    def _plus_penalty(self, v_data, v, reg):
        """``v_data + reg·v`` on the W part, ``v_data`` on the bias part (the penalised
        gradient from the data gradient, or a curvature pair's y from its data-term y)."""
        out = v_data.clone()
        out[: self.dk].add_(v[: self.dk], alpha=reg)
        return out

    def _set_reg(self, reg):
        """Correct the kept curvature pairs for the penalty ``reg = λ/n`` (exact: the penalty's
        Hessian is reg·I on W); drop the pairs without positive curvature."""
        kept = []
        for s, yd, *_ in self.memory:
            y = self._plus_penalty(yd, s, reg)
            ys = float(y.dot(s))
            if ys > 1e-10:
                kept.append((s, yd, y, 1.0 / ys))
        self.memory, self._reg = kept, reg

    def _H0(self, q, reg):
        if self.pre is None:
            return q.clone()
        out = torch.empty_like(q)
        W, b = self.pre(self.W(q), self.b(q), reg)
        self.W(out).copy_(W)
        self.b(out).copy_(b)
        return out

    def _direction(self, g, reg):
        """-H g by the two-loop recursion over the kept pairs."""
        q = -g
        alphas = []
        for s, _, y, rho in reversed(self.memory):
            a = rho * float(s.dot(q))
            q.add_(y, alpha=-a)
            alphas.append(a)
        q = self._H0(q, reg)
        if self.memory:
            s, _, y, rho = self.memory[-1]
            q.mul_((1.0 / rho) / float(y.dot(self._H0(y, reg))))  # γ = sᵀy / yᵀMy
        for (s, _, y, rho), a in zip(self.memory, reversed(alphas)):
            q.add_(s, alpha=a - rho * float(y.dot(q)))
        return q, bool(self.memory)

    def _restriction(self, D, reg, wd, dd):
        """The objective along the direction whose logits change is ``D``:
        ``phi(t) = (f(θ + t·d) - f(θ), d/dt of it)``, O(n·k) per call. The data-term difference is
        summed per sample as ``log Σ_k p_k exp(t·D_k) - t·D_y`` by log1p/expm1 for small steps:
        near the optimum it is far below float32's resolution of f itself, and the line search's
        sufficient-decrease test needs it."""
        Z, P0 = self.Z, self.P
        Dy = float(D[self.rows, self.y].sum(dtype=torch.float64))

        def phi(t):
            tD = D * t
            P = torch.softmax(Z + tD, 1)
            if float(tD.abs().max()) <= 1.0:
                dl = torch.log1p((P0 * torch.expm1(tD)).sum(1))
            else:
                dl = torch.logsumexp(Z + tD, 1) - torch.logsumexp(Z, 1)
            df = (float(dl.sum(dtype=torch.float64)) - t * Dy) / self.n
            fp = (float((P * D).sum(dtype=torch.float64)) - Dy) / self.n
            return df + reg * (t * wd + 0.5 * t * t * dd), fp + reg * (wd + t * dd)

        return phi

    def fit(self, lam: float, *, max_iter: int, tol: float) -> int:
        """Minimise at ``lam`` from the current point; returns the number of iterations."""
        reg = float(lam) / self.n
        self._set_reg(reg)
        g = self._plus_penalty(self.g_data, self.theta, reg)
        it = 0
        while float(g.abs().max()) > tol and it < max_iter:
            d, quasi_newton = self._direction(g, reg)
            gtd = float(g.dot(d))
            if not gtd < 0:  # not a descent direction (float noise): forget the pairs
                self.memory.clear()
                d, quasi_newton = self._H0(-g, reg), False
                gtd = float(g.dot(d))
            # first step without curvature pairs: torch.optim.LBFGS's, unless preconditioned
            t0 = 1.0 if quasi_newton or self.pre else min(1.0, 1.0 / float(g.abs().sum()))
            D = self._forward(d)
            W, dW = self.W(), self.W(d)
            wd, dd = float((W * dW).sum()), float(dW.pow(2).sum())
            Z = self.Z
            phi = self._restriction(D, reg, wd, dd)
            t = _strong_wolfe_1d(phi, 0.0, gtd, t0)
            if t == 0.0:  # no decrease along d: converged to float precision
                break
            s = d.mul_(t)
            self.theta.add_(s)
            self._since_exact += 1
            if self._since_exact >= self.refresh:
                self.Z = self._forward(self.theta)
                self._since_exact = 0
            else:
                self.Z = Z.add_(D, alpha=t)
            self.P = torch.softmax(self.Z, 1)
            g_data = self._data_grad(self.P)
            yd = g_data - self.g_data
            y = self._plus_penalty(yd, s, reg)
            ys = float(y.dot(s))
            if ys > 1e-10:
                self.memory.append((s, yd, y, 1.0 / ys))
                del self.memory[: -self.history_size]
            self.g_data = g_data
            g = self._plus_penalty(g_data, self.theta, reg)
            it += 1
        return it

    def solution(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.W().clone(), self.b().clone()


class _PathSelection:
    """Choice of λ along the path, on val only: the best val score, ties to the smallest λ, and
    the early stop of ``LbfgsConfig.path_patience`` (stop once ``patience`` consecutive λ scored
    strictly below the best so far; 0: never stop)."""

    def __init__(self, patience: int):
        if int(patience) < 0:
            raise ConfigError(f"path_patience={patience}: expected >= 0 (0: every λ)")
        self.patience = int(patience)
        self.best = -math.inf
        self.worse = 0
        self.candidates: dict[int, Any] = {}  # λ index -> solution, for the best score so far

    def add(self, i: int, val: float, solution) -> bool:
        """Record λ number ``i``'s val score; True when the path should stop here."""
        if val >= self.best:
            if val > self.best:
                self.candidates.clear()
            self.best, self.worse = val, 0
            self.candidates[int(i)] = solution
        else:
            self.worse += 1
        return self.patience > 0 and self.worse >= self.patience

    @property
    def index(self) -> int:
        return min(self.candidates)  # λ sorted ascending: the smallest λ among ties


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
    ``val`` (best val score), ``test``, ``best_lambda``, ``best_index``, ``lambdas`` (ascending),
    ``val_scores`` (per λ; None for the λ the early stop left unfitted), ``n_iter`` (per λ; 0
    when unfitted), ``fitted`` (per λ), ``n_fitted``, ``refit_iter``, ``feature_passes``
    (products with the n x d feature matrix, in units of k columns: the cost), ``seconds``.
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
    if cfg.path not in ("descending", "ascending"):
        raise ConfigError(f"path={cfg.path!r}: expected descending | ascending")
    order = np.argsort(-lams) if cfg.path == "descending" else np.argsort(lams)
    val_scores: list[float | None] = [None] * lams.size
    n_iters = [0] * lams.size
    solver = _SoftmaxPath(Ztr, ytr, k, history_size=cfg.history_size, precond_rank=cfg.precond_rank)
    select = _PathSelection(cfg.path_patience)
    for i in order:
        i = int(i)
        n_iters[i] = solver.fit(lams[i], max_iter=cfg.max_iter, tol=cfg.tol)
        W, b = solver.solution()
        val_scores[i] = accuracy((Zval @ W + b).argmax(1), yval, metric)
        if select.add(i, val_scores[i], (W, b)):
            break
    best = select.index

    # 2) refit on train+val at the chosen λ, warm-started from its train solution re-expressed
    #    in the train+val standardisation (same logits), 3) score test once
    Xtv = torch.cat([Xtr, Xval])
    ytv = torch.cat([ytr, yval])
    std_tv = Standardizer.fit(Xtv, cfg.standardize)
    W, b = select.candidates[best]
    b = b + ((std_tv.mean - std.mean) / std.std) @ W
    W = W * (std_tv.std / std.std).unsqueeze(1)
    # (the train preconditioner is reused: C barely moves from train to train+val, and any
    # positive-definite preconditioner leaves the refit's minimiser unchanged)
    refit = _SoftmaxPath(
        std_tv(Xtv), ytv, k, torch.cat([W.reshape(-1), b]), history_size=cfg.history_size,
        preconditioner=solver.pre,
    )  # fmt: skip
    refit_iter = refit.fit(lams[best], max_iter=cfg.max_iter, tol=cfg.tol)
    W, b = refit.solution()
    passes = solver.passes + refit.passes
    del solver, refit
    Xte = _as_float(Xtest, dev, dtype)
    _check_finite("test features", Xte)
    test = accuracy((std_tv(Xte) @ W + b).argmax(1), _as_labels(ytest, dev), metric)
    fitted = [v is not None for v in val_scores]
    return {
        "val": float(select.best),
        "test": float(test),
        "metric": metric,
        "best_lambda": float(lams[best]),
        "best_index": best,
        "lambdas": lams.tolist(),
        "val_scores": val_scores,
        "n_iter": n_iters,
        "fitted": fitted,
        "n_fitted": int(sum(fitted)),
        "refit_iter": int(refit_iter),
        "feature_passes": round(float(passes), 1),
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
    warm start along the same λ path, same standardisation, same tie rule and ``path_patience``
    early stop), float64: the reference the torch probe is tested and benchmarked against."""
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
    val_scores: list[float | None] = [None] * lams.size
    n_iters = [0] * lams.size
    select = _PathSelection(cfg.path_patience)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i in order:
            clf.set_params(C=1.0 / lams[i])
            clf.fit(Ztr, ytr)
            n_iters[i] = int(np.max(clf.n_iter_))
            val_scores[i] = accuracy(clf.predict(Zval), yval, metric)
            if select.add(i, val_scores[i], (clf.coef_.copy(), clf.intercept_.copy())):
                break
        best = select.index
        coefs = select.candidates
        Xtv = np.concatenate([Xtr, Xval])
        ytv = np.concatenate([ytr, yval])
        ztv = zscore(Xtv)
        clf.coef_, clf.intercept_ = coefs[best]
        clf.set_params(C=1.0 / lams[best])
        clf.fit(ztv(Xtv), ytv)
    test = accuracy(clf.predict(ztv(Xtest)), ytest, metric)
    fitted = [v is not None for v in val_scores]
    return {
        "val": float(val_scores[best]),
        "test": float(test),
        "metric": metric,
        "best_lambda": float(lams[best]),
        "best_index": best,
        "lambdas": lams.tolist(),
        "val_scores": val_scores,
        "n_iter": n_iters,
        "fitted": fitted,
        "n_fitted": int(sum(fitted)),
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
