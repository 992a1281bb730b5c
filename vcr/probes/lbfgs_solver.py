"""The full-batch L-BFGS solver of the ``lbfgs`` probe: the softmax objective along a λ path.

Written by hand for this one objective (see ``_SoftmaxPath``): its cost is the passes over the
n x d feature matrix, and everything else is O(n·k) or O(d·k). The line search runs on the
logits, the initial inverse Hessian is a feature-covariance preconditioner, and the curvature
pairs are carried along the λ path. The stopping rule is scikit-learn's.

Why it is kept instead of ``torch.optim.LBFGS``, measured (``python -m vcr.bench_probe
--sklearn-orders --torch-optim``: 10k x 2048 synthetic features, 100 classes, the 45-λ grid,
descending warm-started path with the same early stop, ``max_iter`` 100, ``tol`` 1e-4, 2 threads,
idle 2-core machine, 2026-12-01):

=====================================================  ======  =========  =========  ======
solver                                                 wall s  λ*         val        test
=====================================================  ======  =========  =========  ======
this solver (precond_rank 128)                            4.2  1.52e3     0.6875     0.6890
torch.optim.LBFGS(line_search_fn="strong_wolfe")         16.1  1.52e3     0.6875     0.6885
torch.optim.LBFGS on PCA-whitened features               16.0  316        0.1850     0.2205
=====================================================  ======  =========  =========  ======

``torch.optim.LBFGS`` reaches the same λ and accuracy 3.8x slower (149 iterations against 47,
each with autograd and several feature passes in the line search). Whitening the features
instead of preconditioning is no faster (the eigendecomposition and a dense whitening product)
and changes what the penalty ‖W‖² means: another λ, far worse accuracy. The faster one that gives
the same λ and accuracy is this one.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from vcr.errors import ConfigError


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


def strong_wolfe_1d(phi, f0, g0, t, *, c1=1e-4, c2=0.9, max_ls=25) -> float:
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


class FeaturePreconditioner:
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


class SoftmaxPath:
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
      feature-covariance preconditioner (``FeaturePreconditioner``; ``precond_rank=0``: the
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
            self.pre = FeaturePreconditioner(X, int(precond_rank), self.k)
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
            t = strong_wolfe_1d(phi, 0.0, gtd, t0)
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


class PathSelection:
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
