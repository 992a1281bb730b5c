"""Variance-Covariance Regularization (VCR): the loss (eq. 1-3) and the fast gradient-injection op.

Two implementations of the same regularizer:

* ``vcr_loss`` / ``vcr_terms``: plain autograd on one block output. The reference, and what the
  benchmark calls "VCR as an autograd loss".
* ``VCRLayer``: the fast op of the paper's Algorithm 1, corrected as in ``VCR_MATH.md``. It
  changes nothing in the forward pass; its backward adds the exact gradient of ``vcr_loss`` to
  the block output's gradient, at 4*n*d^2 FLOPs instead of ~6*n*d^2 for autograd.

Notation (VCR_MATH.md): H is the (n, d) matrix of one block output (every spatial position or
token is a sample, channels are features), X = H - mean over rows, C = X^T X / (n-1),
sigma_j = sqrt(C_jj + eps), Ctil = C with a zero diagonal.

    l_var = (1/d) sum_j max(0, 1 - sigma_j)
    l_cov = 1/(d(d-1)) sum_{i!=j} C_ij^2      (or the continuous Huber form when delta is set)
    grad_H = (1/(n-1)) X ( -(alpha/d) D + 4 beta/(d(d-1)) clamp(Ctil, -delta, delta) ),
    D = diag(1[sigma_j < 1] / sigma_j)

Choices where the paper is ambiguous (each one argument away):

* ``eps=1e-4`` inside the square root (VICReg's value). Eq. 1 has no eps; with eps=0 a dead
  channel has an infinite derivative. ``eps=0.0`` gives eq. 1 exactly (the fast op still maps a
  dead channel to a zero gradient).
* ``cov_scale="eq2"`` (default) is eq. 2; ``"alg1"`` reproduces Algorithm 1's constant, which
  lacks the 1/(n-1) of the covariance gradient, i.e. the covariance term times (n-1).
* ``delta=None``: squared covariances (eq. 2). With a delta, the smooth-L1 of eq. 6-7 in its
  continuous Huber form (2*delta*|x| - delta^2 outside): same gradient as the paper's piecewise
  form, whose value jumps by delta^2 at |x| = delta.
* The batch demean of App. A is done inside the loss / inside the backward on the saved input,
  never as a forward op, so "VCR does not affect the forward pass" holds bit for bit.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vcr import fast_op_kernels as kernels
from vcr.errors import ConfigError, NonFiniteError, VCRError
from vcr.fast_op_kernels import LAYOUTS, as_samples
from vcr.names import COV_SCALES
from vcr.names import VCR_MATMULS as MATMULS
from vcr.names import VCR_ROUNDINGS as ROUNDINGS

__all__ = [
    "VCRLayer",
    "vcr_loss",
    "vcr_penalty",
    "vcr_terms",
]


# An unconsumed zero scalar per layer is normal between a forward and its loss (e.g. two SSL
# views through one backbone); this many means vcr_penalty is never being called.
_MAX_PENDING = 16


def _check_config(alpha, beta, eps, delta, cov_scale):
    if cov_scale not in COV_SCALES:
        raise ConfigError(f"vcr cov_scale={cov_scale!r} is not one of {COV_SCALES}")
    if eps < 0:
        raise ConfigError(f"vcr eps={eps} must be >= 0")
    if delta is not None and not delta > 0:
        raise ConfigError(f"vcr delta={delta} must be > 0 (or None for squared covariances)")
    for key, v in (("alpha", alpha), ("beta", beta)):
        if not math.isfinite(float(v)) or float(v) < 0:
            raise ConfigError(f"vcr {key}={v} must be a finite number >= 0")


# --------------------------------------------------------------------------------------------
# the loss, with autograd
# --------------------------------------------------------------------------------------------
def _huber(x: torch.Tensor, delta: float | None) -> torch.Tensor:
    if delta is None:
        return x.square()
    a = x.abs()
    return torch.where(a <= delta, x.square(), 2.0 * delta * a - delta * delta)


def vcr_terms(
    h: torch.Tensor,
    *,
    eps: float = 1e-4,
    delta: float | None = None,
    cov_scale: str = "eq2",
    layout: str = "auto",
) -> dict[str, torch.Tensor]:
    """The VCR terms of one block output, differentiable by autograd.

    Returns ``l_var`` (eq. 1), ``l_cov`` (eq. 2, or eq. 6 when ``delta`` is set; times (n-1) when
    ``cov_scale="alg1"``) and ``std_mean`` (mean over features of sqrt(C_jj), without eps).
    Computed in at least float32.
    """
    _check_config(0.0, 0.0, eps, delta, cov_scale)
    x = as_samples(h, layout)
    x = x.to(kernels.compute_dtype(x.dtype))
    n, d = x.shape
    if n < 2:
        raise ValueError(f"vcr needs at least 2 samples (rows of the (n, d) matrix), got n={n}")
    x = x - x.mean(dim=0, keepdim=True)
    cov = x.t() @ x / (n - 1)
    var = torch.diagonal(cov)
    std = torch.sqrt(var + eps)
    l_var = torch.relu(1.0 - std).mean()
    if d > 1:
        off = cov - torch.diag_embed(var)
        l_cov = _huber(off, delta).sum() / (d * (d - 1))
        if cov_scale == "alg1":
            l_cov = l_cov * (n - 1)
    else:
        l_cov = cov.new_zeros(())
    std_mean = torch.sqrt(var.detach().clamp_min(0)).mean()
    return {"l_var": l_var, "l_cov": l_cov, "std_mean": std_mean}


def vcr_loss(
    h: torch.Tensor,
    alpha: float,
    beta: float,
    *,
    eps: float = 1e-4,
    delta: float | None = None,
    cov_scale: str = "eq2",
    layout: str = "auto",
) -> torch.Tensor:
    """alpha * l_var + beta * l_cov of one block output (eq. 3), by autograd."""
    t = vcr_terms(h, eps=eps, delta=delta, cov_scale=cov_scale, layout=layout)
    return alpha * t["l_var"] + beta * t["l_cov"]


# --------------------------------------------------------------------------------------------
# the fast op
# --------------------------------------------------------------------------------------------
class _Pending:
    """One training forward of one VCRLayer whose zero scalar has not reached a backward yet.

    ``injection``: the VCR gradient computed in the zero scalar's backward and not yet added to
    the task gradient by the block output's hook (low-precision outputs)."""

    __slots__ = ("zero", "consumed", "injection", "recorded")

    def __init__(self):
        self.zero = None
        self.consumed = False
        self.injection = None
        self.recorded = None  # the summed-by-autograd injection, kept for the ratio record


class _VCRFunction(torch.autograd.Function):
    """zero = f(H) with f == 0 in value and d zero/dH = grad_H l_vcr.

    The forward returns a zero scalar (VCR_MATH.md point 5). The caller adds it to the loss; the
    gradient g it receives is whatever multiplies the loss (AMP loss scale, 1/k for gradient
    accumulation, 1 otherwise), and the backward computes g * grad_H l_vcr. H itself is not
    touched: the block output stays the same tensor object, so the forward is bit-identical and
    the op adds no aliasing view (in-place ops after it behave as without VCR).

    Where the VCR gradient meets the task gradient: for an fp32/fp64 output this backward
    returns it (in the approximate mode a dense tensor, zero outside the K drawn rows) and
    autograd sums the two. For a bf16/fp16 output (mixed precision) it returns nothing; the
    output's gradient hook adds it to the task gradient
    in fp32 and rounds the sum once (``VCRLayer.rounding``), since autograd would round the VCR
    part to the output's dtype before summing and erase whatever lies below half a step of the
    task gradient. The zero scalar's backward always runs before that hook: H is one of its
    inputs, so H's gradient is complete only after it.
    """

    @staticmethod
    def forward(ctx, h, layer, pending):
        # H is usually saved anyway by the next layer: saving it here costs no memory.
        ctx.save_for_backward(h)
        ctx.layer = layer
        ctx.pending = pending
        return torch.zeros((), dtype=kernels.compute_dtype(h.dtype), device=h.device)

    @staticmethod
    def backward(ctx, g):
        (h,) = ctx.saved_tensors
        ctx.pending.consumed = True
        injection = ctx.layer._injection(h, g)
        if isinstance(injection, torch.Tensor) and injection.dtype == h.dtype:
            if ctx.layer.record:
                ctx.pending.recorded = injection
            return injection, None, None
        ctx.pending.injection = injection
        # a zero that costs no memory: it makes H's gradient exist (hence the hook run) even
        # when no task gradient reaches H; autograd adds the task gradient to it
        return torch.zeros((), dtype=h.dtype, device=h.device).expand_as(h), None, None


class VCRLayer(nn.Module):
    """Fast VCR on one block output: identity in forward, the exact VCR gradient in backward.

    ``layer(h)`` returns ``h`` itself. In training mode with grad enabled it also records a zero
    scalar (see ``_VCRFunction``) that ``vcr_penalty(model)`` collects; training loops must add
    it to their loss: ``loss = task_loss + vcr_penalty(model)``. If a backward reaches ``h``
    without the zero scalar (the loop forgot ``vcr_penalty``) a ``VCRError`` is raised then,
    so a run never trains silently without its regularizer.

    In eval mode, under ``torch.no_grad()`` or when ``h`` does not require grad it does nothing.

    ``last``: dict of detached tensors ``l_var``, ``l_cov``, ``std_mean`` from the latest backward,
    plus ``grad_ratio`` (||g_vcr|| / ||g_task|| at this output) when ``record`` is on (no host
    sync in the hot path; ``vcr.attach.vcr_stats`` turns them into floats).

    ``global_stats=True`` (under an initialised ``torch.distributed``): the column sums, n, and
    X^T X are all-reduced, so every rank uses the statistics of the global batch. The gradient
    injected into the local rows is then multiplied by the world size W, because DDP averages the
    ranks' parameter gradients (divides by W) while the global VCR loss is one function of all
    rows whose full gradient is the *sum* over ranks: the averaged result equals the
    single-process full-batch gradient. With local statistics (the default, as the paper's
    per-GPU Algorithm 1 implies; like BatchNorm, not SyncBatchNorm) DDP's average gives the
    gradient of the *mean over ranks* of the per-rank VCR losses, (1/W) sum_r l_vcr(H_r), which
    differs from the full-batch l_vcr(H) (each rank's C is its own local covariance).
    The all-reduce runs inside backward; every rank must run the same backward order (true for
    DDP), or the collectives would mismatch.

    ``product``: how X Ctil is formed. ``"features"``: through the (d, d) covariance, 4 n d^2
    FLOPs (Algorithm 1). ``"samples"``: through the (n, d) -> (n, n) sample Gram K = X X^T,
    X C = K X / (n-1), 4 n^2 d FLOPs. ``"auto"`` (default) takes ``"samples"`` for 2-D inputs
    with 2n <= d (e.g. 2048-d pooled features at 128 per GPU: 16x fewer FLOPs), no delta and
    local statistics. Both are exact; in fp32 the sample form subtracts the diagonal part
    (X C - X diag(C)), which loses ~eps_fp32 * |C_jj| / |Ctil| relative accuracy when features
    are already nearly decorrelated.

    ``rounding`` (bf16 outputs): how the fp32 sum of task and VCR gradients becomes the bf16
    gradient that flows on. ``"stochastic"`` (default): unbiased stochastic rounding, so a VCR
    part below half a bf16 step of the task gradient survives in expectation (the measured share
    in README "Precision"); ``"nearest"``: round to nearest, which erases such a part. fp16
    outputs always round to nearest (with a GradScaler; fp16 has 3 more mantissa bits).
    Stochastic rounding draws from the device's default generator (seeded and checkpointed by
    the trainer: resume stays bit-identical).

    ``matmul``: the precision of the two (d, d)-sized products of the backward (X^T X and X M).
    ``"fp32"`` (default): fp32 in, fp32 out. ``"bf16"``: bf16 inputs (the centred X and M,
    rounded once) with fp32 accumulation and output, i.e. tensor cores on a GPU
    (``torch.mm(..., out_dtype=torch.float32)``; on a CPU the same arithmetic is emulated in
    fp32). Its error against the float64 gradient is bounded in ``tests/test_precision.py``:
    relative error of the injected gradient <= 1e-2 at ResNet-50's four stage shapes (measured
    1.3e-3 to 3.4e-3; fp32: 1e-7 to 5e-7).

    ``max_samples=K`` (approximate VCR, off by default): when an output has n > K sample rows,
    K rows drawn at random each backward (uniformly, with replacement, from the device's default
    generator: seeded, reproducible, checkpointed; a row drawn twice counts twice) estimate the
    statistics (mean, covariance, standard deviations), and the gradient is injected into those K rows only, scaled by n/K so
    that its sum over rows, and so the parameter gradients, are unbiased for the gradient of the
    estimated loss. It approximates the exact op in two ways: the statistics are K-row estimates
    (with the Algorithm-1 scaling still using the full n), and the injected gradient is a sparse
    unbiased estimate instead of the dense exact one. Cost 4*K*d^2 instead of 4*n*d^2.

    ``check_finite``: non-finite statistics set a flag on the device (no host sync);
    ``vcr.attach.raise_if_nonfinite(model)`` (the trainer, at logging and checkpoint time) reads
    all flags at once and raises ``NonFiniteError`` naming the layer. ``"sync"`` raises at once
    inside the backward (a host sync per layer); ``False`` skips the check.

    Not compatible with activation checkpointing of the regularized blocks (the recomputed
    forward would record new zero scalars inside backward).

    Why the op returns ``h`` itself rather than a view from a custom Function (Algorithm 1):
    such a view makes a following in-place op (``relu_``, ``+=``) raise, and the zero scalar is
    needed anyway to carry the loss scale; attaching the gradient to the zero scalar alone leaves
    the forward graph untouched.
    """

    def __init__(
        self,
        alpha: float,
        beta: float,
        *,
        eps: float = 1e-4,
        delta: float | None = None,
        cov_scale: str = "eq2",
        layout: str = "auto",
        name: str = "",
        global_stats: bool = False,
        check_finite: bool | str = True,
        product: str = "auto",
        rounding: str = "stochastic",
        matmul: str = "fp32",
        max_samples: int | None = None,
    ):
        super().__init__()
        if product not in ("auto", "features", "samples"):
            raise ConfigError(f"vcr product={product!r} is not 'auto', 'features' or 'samples'")
        if rounding not in ROUNDINGS:
            raise ConfigError(f"vcr rounding={rounding!r} is not one of {ROUNDINGS}")
        if matmul not in MATMULS:
            raise ConfigError(f"vcr matmul={matmul!r} is not one of {MATMULS}")
        if max_samples is not None and int(max_samples) < 2:
            raise ConfigError(f"vcr max_samples={max_samples} must be >= 2 (or None: exact)")
        if check_finite not in (True, False, "sync"):
            raise ConfigError(f"vcr check_finite={check_finite!r} is not True, False or 'sync'")
        self.product = product
        _check_config(alpha, beta, eps, delta, cov_scale)
        if layout not in LAYOUTS:
            raise ConfigError(f"vcr layout={layout!r} is not one of {LAYOUTS}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.eps = float(eps)
        self.delta = None if delta is None else float(delta)
        self.cov_scale = cov_scale
        self.layout = layout
        self.name = name
        self.global_stats = bool(global_stats)
        self.check_finite = check_finite
        self.rounding = rounding
        self.matmul = matmul
        self.max_samples = None if max_samples is None else int(max_samples)
        self.record = False  # also record ||g_vcr|| / ||g_task|| (set at logging steps)
        self.last: dict[str, torch.Tensor] | None = None
        self.nonfinite: torch.Tensor | None = None  # count of non-finite backwards (device)
        self._pending: list[_Pending] = []

    def extra_repr(self) -> str:
        s = f"alpha={self.alpha}, beta={self.beta}, eps={self.eps}, cov_scale={self.cov_scale!r}"
        if self.delta is not None:
            s += f", delta={self.delta}"
        if self.layout != "auto":
            s += f", layout={self.layout!r}"
        if self.global_stats:
            s += ", global_stats=True"
        if self.max_samples:
            s += f", max_samples={self.max_samples}"
        if self.matmul != "fp32":
            s += f", matmul={self.matmul!r}"
        return s

    def _describe(self) -> str:
        return f"VCR layer {self.name or '<unnamed>'!r} (alpha={self.alpha}, beta={self.beta})"

    # -- forward --------------------------------------------------------------------------
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.is_grad_enabled() and h.requires_grad):
            return h
        layout = kernels.resolve_layout(h, self.layout)
        n = h.numel() // h.shape[1 if layout == "nchw" else -1] if h.numel() else 0
        if n < 2:
            raise VCRError(
                f"{self._describe()}: needs at least 2 samples, got shape {tuple(h.shape)}"
            )
        if len(self._pending) >= _MAX_PENDING:
            self._pending.clear()
            raise VCRError(
                f"{self._describe()}: {_MAX_PENDING} training forwards without vcr_penalty(model) "
                "collecting their zero scalars. Add it to the loss (loss = task_loss + "
                "vcr_penalty(model)), or run forwards that need no backward under torch.no_grad()."
            )
        entry = _Pending()
        entry.zero = _VCRFunction.apply(h, self, entry)
        self._pending.append(entry)
        h.register_hook(self._make_output_hook(entry, layout))
        return h

    def _make_output_hook(self, entry: _Pending, layout: str):
        describe = self._describe

        def hook(grad):
            # Runs once the full gradient of h is known; by then the zero scalar's backward has
            # run if the zero scalar was part of this backward at all.
            if not entry.consumed:
                raise VCRError(
                    f"{describe()}: a backward reached its block output without its VCR term: "
                    "the loss did not include vcr_penalty(model). Use "
                    "loss = task_loss + vcr_penalty(model)."
                )
            injection, entry.injection = entry.injection, None
            if injection is None:  # already summed by autograd (fp32 output, exact mode)
                if entry.recorded is not None:
                    inj, entry.recorded = entry.recorded, None
                    self._record_ratio(inj, grad - inj)
                return None
            return self._combine(grad, injection, layout)

        return hook

    def pop_penalty(self) -> list[torch.Tensor]:
        zeros = [e.zero for e in self._pending]
        for e in self._pending:
            # the zero's graph node holds the entry (ctx.pending): entry -> zero -> node ->
            # entry is a cycle through autograd that Python's GC cannot see, and it kept every
            # step's saved block output alive (~1.4 MB a step on the two-moons MLP)
            e.zero = None
        self._pending.clear()
        return zeros

    # -- backward -------------------------------------------------------------------------
    def _injection(self, h: torch.Tensor, g: torch.Tensor):
        """The VCR gradient of ``h``: a dense tensor shaped like ``h`` (in ``h``'s dtype when
        autograd may sum it, else in the compute dtype), or ``(rows, values)`` for the K rows
        of the approximate mode."""
        layout = kernels.resolve_layout(h, self.layout)
        with torch.autocast(device_type=h.device.type, enabled=False):
            x, n, d = kernels.sample_matrix(h, layout)
            cdtype = kernels.compute_dtype(h.dtype)
            k = self.max_samples
            if k is not None and n > k and not self.global_stats:
                return self._sampled_injection(h, layout, n, d, k, g.to(cdtype), cdtype)
            colsum = kernels.colsum(x, cdtype)
            world = 1
            if self.global_stats:
                colsum, n, world = self._all_reduce_sums(colsum, n)
            # centred copy in the compute dtype, one pass (the subtraction promotes bf16/fp16)
            x = kernels.center(x, colsum / n, cdtype)
            if self._use_sample_gram(x, n, d):
                grad = self._grad_by_sample_gram(x, n, d, g.to(cdtype), h)
            else:
                gram = kernels.gram(x, self.matmul)
                if self.global_stats:
                    import torch.distributed as dist

                    dist.all_reduce(gram)
                cov = gram.div_(n - 1)
                self._check_finite(cov, h)
                m = self._grad_matrix(cov, n, d)
                # one (d, d) scale carries 1/(n-1), the loss scale g and the DDP world size
                m.mul_(g.to(cdtype) * (world / (n - 1)))
                grad = kernels.apply_m(x, m, self.matmul)
        # fp32/fp64 output: autograd sums it with the task gradient; low precision: the compute
        # dtype, summed with the task gradient by the output hook
        return kernels.restore(grad, h, layout)

    def _sampled_injection(self, h, layout, n, d, k, g, cdtype):
        """The approximate mode: statistics and injected gradient on K random sample rows.
        Returns the dense gradient when autograd may sum it (fp32/fp64 output), else
        ``(pos, (K, d) values)`` for the output hook."""
        # with replacement: O(K) to draw (randperm is O(n): 1.7 ms of a 131k-row map on a CPU,
        # as much as the rest of the op); duplicates (~K^2/2n) are summed, so the n/K scaling
        # stays unbiased
        pos = torch.randint(n, (k,), device=h.device)
        src = kernels.dense(h)
        xs = (
            kernels.flat(src)
            .index_select(0, kernels.row_offsets(src, layout, pos))
            .view(k, d)
            .to(cdtype)
        )
        xs = xs - xs.mean(dim=0, keepdim=True)
        cov = kernels.gram(xs, self.matmul).div_(k - 1)
        self._check_finite(cov, h)
        m = self._grad_matrix(cov, n, d)  # the Algorithm-1 scaling uses the full n
        # (1/(n-1)) X M on the K rows, times n/K: an unbiased estimate of the dense sum
        m.mul_(g * ((n / k) / (n - 1)))
        vals = kernels.apply_m(xs, m, self.matmul)
        if cdtype != h.dtype:
            return pos, vals
        return kernels.add_rows(torch.zeros_like(src), layout, pos, vals)

    def _combine(self, grad: torch.Tensor, injection, layout: str) -> torch.Tensor:
        """task gradient + VCR gradient, summed in the compute dtype, rounded once."""
        cdtype = kernels.compute_dtype(grad.dtype)
        if isinstance(injection, torch.Tensor):
            if self.record:
                self._record_ratio(injection, grad)
            total = grad.to(cdtype) + injection
        else:
            pos, vals = injection
            if self.record:
                self._record_ratio(vals, grad)
            # the copy keeps a dense gradient's strides and makes any other one contiguous
            total = kernels.add_rows(grad.to(cdtype, copy=True), layout, pos, vals.to(cdtype))
        if total.dtype == grad.dtype:
            return total
        if grad.dtype == torch.bfloat16 and self.rounding == "stochastic":
            return kernels.round_stochastic_bf16(total)
        return total.to(grad.dtype)

    def _record_ratio(self, vcr_grad: torch.Tensor, task_grad: torch.Tensor) -> None:
        ratio = vcr_grad.float().norm() / task_grad.float().norm().clamp_min(1e-30)
        if self.last is not None:
            self.last["grad_ratio"] = ratio.detach()

    def _check_finite(self, stat: torch.Tensor, h: torch.Tensor) -> None:
        if not self.check_finite:
            return
        bad = (~torch.isfinite(stat.sum())).to(torch.int32)
        if self.check_finite == "sync" and bool(bad):
            raise NonFiniteError(self._nonfinite_message(h))
        self.nonfinite = bad if self.nonfinite is None else self.nonfinite + bad
        self._shape = (tuple(h.shape), h.dtype)

    def _nonfinite_message(self, h=None) -> str:
        shape, dtype = (tuple(h.shape), h.dtype) if h is not None else self._shape
        return (
            f"{self._describe()}: non-finite values (NaN/inf) in its input of shape {shape} "
            f"(dtype {dtype}); the covariance is not finite."
        )

    def _variance_part(self, var: torch.Tensor, n: int, d: int, offdiag_sq_sum):
        """dvec = 1[std<1]/std, the covariance coefficient, and the ``last`` record."""
        std = torch.sqrt(var + self.eps)
        # clamp: with eps=0 a dead channel has std 0; its column of X is 0, so the product is
        # 0 instead of inf * 0 = NaN.
        dvec = torch.where(std < 1.0, 1.0 / std.clamp_min(1e-30), torch.zeros_like(std))
        if d > 1:
            l_cov = offdiag_sq_sum / (d * (d - 1))
            cov_coef = 4.0 * self.beta / (d * (d - 1))
            if self.cov_scale == "alg1":
                l_cov = l_cov * (n - 1)
                cov_coef = cov_coef * (n - 1)
        else:
            l_cov = var.new_zeros(())
            cov_coef = 0.0
        self.last = {
            "l_var": torch.relu(1.0 - std).mean().detach(),
            "l_cov": l_cov.detach(),
            "std_mean": torch.sqrt(var.clamp_min(0)).mean().detach(),
        }
        return dvec, cov_coef

    def _use_sample_gram(self, x: torch.Tensor, n: int, d: int) -> bool:
        # X Ctil via the (n, n) sample Gram K = X X^T costs 4 n^2 d instead of 4 n d^2: a win
        # for wide features and small batches (final placement, projectors). Not with a delta
        # (the clamp needs C itself) nor global statistics (K is per rank).
        if self.product == "features" or x.dim() != 2 or self.global_stats:
            return False
        if self.delta is not None:
            if self.product == "samples":
                raise ConfigError("vcr product='samples' cannot be combined with delta")
            return False
        return self.product == "samples" or 2 * n <= d

    def _grad_by_sample_gram(self, x, n: int, d: int, g, h) -> torch.Tensor:
        k = kernels.mm(x, x.t(), self.matmul)  # (n, n)
        self._check_finite(k, h)
        var = x.square().sum(dim=0) / (n - 1)
        # ||Ctil||_F^2 = ||C||_F^2 - sum_j C_jj^2, ||C||_F = ||K||_F / (n-1)
        offdiag_sq = (k.square().sum() / (n - 1) ** 2 - var.square().sum()).clamp_min(0)
        dvec, cov_coef = self._variance_part(var, n, d, offdiag_sq)
        # X M = coef * (X C - X diag(C)) - (alpha/d) X diag(dvec),  X C = K X / (n-1)
        col = var * (-cov_coef) - dvec * (self.alpha / d)
        scale = g * (1.0 / (n - 1))
        grad = kernels.mm(k, x, self.matmul).mul_(cov_coef / (n - 1)).addcmul_(x, col)
        return grad.mul_(scale)

    def _grad_matrix(self, cov: torch.Tensor, n: int, d: int) -> torch.Tensor:
        """M with grad_H l_vcr = X M / (n-1); records ``last`` on the way."""
        var = torch.diagonal(cov).clone()
        m = cov  # reused in place: becomes M
        m.diagonal().zero_()
        offdiag_sq = _huber(m, self.delta).sum() if d > 1 else None
        dvec, cov_coef = self._variance_part(var, n, d, offdiag_sq)
        if self.delta is not None:
            m.clamp_(-self.delta, self.delta)
        m.mul_(cov_coef)
        m.diagonal().copy_(dvec * (-self.alpha / d))
        return m

    def _all_reduce_sums(self, colsum: torch.Tensor, n: int):
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise VCRError(
                f"{self._describe()}: global_stats=True needs an initialised torch.distributed "
                "process group (torch.distributed.init_process_group)."
            )
        # column sums and n in one all-reduce; X^T X is then reduced after centring with the
        # global mean (more accurate than X^T X - n m m^T).
        buf = torch.cat([colsum, colsum.new_full((1,), float(n))])
        dist.all_reduce(buf)
        return buf[:-1], int(round(float(buf[-1]))), dist.get_world_size()


def _collect_layers(model) -> list[VCRLayer]:
    if isinstance(model, VCRLayer):
        return [model]
    layers: list[VCRLayer] = []
    seen: set[int] = set()
    mods = model.modules() if isinstance(model, nn.Module) else iter(model)
    for m in mods:
        found = [m] if isinstance(m, VCRLayer) else []
        attached = m.__dict__.get("_vcr_layers") if isinstance(m, nn.Module) else None
        if attached:
            found.extend(attached.values())
        for layer in found:
            if id(layer) not in seen:
                seen.add(id(layer))
                layers.append(layer)
    return layers


def vcr_penalty(model) -> torch.Tensor:
    """Sum of the zero scalars of every VCRLayer of ``model`` since the last call (then cleared).

    Exactly 0 in value; add it to the loss so that the VCR gradient is injected and carries the
    loss's scale (AMP GradScaler, gradient accumulation). Returns a 0 tensor when no VCR layer is
    attached or none ran, so training loops call it unconditionally. ``model`` may be a module
    (attached layers are found through ``vcr.attach``'s registry and as submodules, also inside a
    DDP wrapper), a VCRLayer, or an iterable of VCRLayers.
    """
    zeros: list[torch.Tensor] = []
    for layer in _collect_layers(model):
        zeros.extend(layer.pop_penalty())
    if not zeros:
        return torch.zeros(())
    if len(zeros) == 1:
        return zeros[0]
    dtype = zeros[0].dtype
    for z in zeros[1:]:
        dtype = torch.promote_types(dtype, z.dtype)
    return torch.stack([z.to(dtype) for z in zeros]).sum()
