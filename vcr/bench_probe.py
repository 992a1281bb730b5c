"""Benchmark: the 45-λ L-BFGS probe sweep, torch vs scikit-learn (issue 5).

    python -m vcr.bench_probe                      # 10k x 2048 features, 100 classes, 2 threads
    python -m vcr.bench_probe --sklearn-budget 300 --out bench.json

Synthetic, seeded features: 100 class means in a random 64-d subspace of R^2048 plus isotropic
noise, split 10k train / 2k val / 2k test. Both implementations run the same protocol
(``vcr.probes.lbfgs``: z-scored features, descending warm-started λ path, λ chosen on val, refit on
train+val, one test score) with the same ``max_iter`` and ``tol`` (max |gradient| of the
mean-scaled objective, sklearn's stopping rule) on the same data. torch runs in float32 (on the
GPU when ``--device cuda``), scikit-learn in float64 (it casts to float64 for lbfgs).

What differs, and is reported separately so that the reader sees what each part buys:

- torch's solver (``vcr.probes.lbfgs_solver.SoftmaxPath``): loss and gradient by hand, a line search on the
  logits (two feature passes per iteration), a feature-covariance preconditioner
  (``--precond-rank``), and the L-BFGS memory kept along the λ path. ``torch_full_sweep`` is
  the same solver on all 45 λ.
- the early stop of the λ path (``--path-patience``, the probe's default): scikit-learn is timed
  on its full descending sweep (what a scikit-learn user runs, the baseline), on its descending
  path with the same early-stop rule (the like-for-like algorithmic comparison), and on the
  ascending order (ssl-transfer's, weak penalty first, where the ill-conditioned weak-λ fits run
  to ``max_iter``).

A scikit-learn sweep that exceeds ``--sklearn-budget`` seconds is stopped after the λ that
crosses it: its time is then reported as a LOWER bound (the λ timed so far alone), with an
extrapolation (mean per λ x 45) for information, and accuracy is compared at torch's chosen λ
(sklearn fit on train for val, refit on train+val for test). scikit-learn's z-scoring is done
before its clock starts; torch's is timed.

Both wall-clock and CPU time (``time.process_time``, all threads of the process) are reported:
on a shared machine the wall-clock ratio moves with the load of other processes (the 1-min load
average at the start is printed), the CPU-time ratio much less.
"""

from __future__ import annotations

import os

# Before torch (and sklearn's OpenMP) load libgomp: its default spin-wait makes a 2-thread torch
# process ~8x slower when other processes load the 2 cores (measured: the probe sweep 39-47 s vs
# 5.6 s at load average 5); passive waiting leaves an unloaded run as fast. Applies to both sides.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vcr import io  # noqa: E402
from vcr.cli import with_overrides  # noqa: E402
from vcr.probes.lbfgs import LbfgsConfig, lambda_grid, linear_probe_lbfgs  # noqa: E402
from vcr.probes.lbfgs_solver import PathSelection  # noqa: E402
from vcr.scoring import accuracy  # noqa: E402


def synthetic_features(
    n_train=10_000, n_val=2_000, n_test=2_000, dim=2048, classes=100, latent=64, sep=0.3, seed=0
):
    """Seeded Gaussian class clusters embedded in a ``latent``-d subspace, plus unit noise."""
    g = np.random.default_rng(seed)
    means = g.normal(size=(classes, latent)) * sep
    basis = g.normal(size=(latent, dim)) / np.sqrt(latent)
    n = n_train + n_val + n_test
    y = g.integers(0, classes, n)
    X = (means[y] + 0.7 * g.normal(size=(n, latent))) @ basis + g.normal(size=(n, dim))
    X = X.astype(np.float32)
    a, b = n_train, n_train + n_val
    return X[:a], y[:a], X[a:b], y[a:b], X[b:], y[b:]


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

    cfg = with_overrides(config or LbfgsConfig(), overrides, where="LbfgsConfig")
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
    select = PathSelection(cfg.path_patience)
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
        "config": dataclasses.asdict(cfg),
    }


def _sklearn_sweep(data, lams, cfg, budget_s, order: str, patience: int = 0, metric="top1"):
    """scikit-learn's warm-started λ path in ``order`` with the early-stop rule of torch's probe
    (``patience`` 0: every λ), stopped once ``budget_s`` is exceeded; then λ chosen on val (or
    torch's λ* if incomplete), refit on train+val, test once."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    Xtr, ytr, Xval, yval, Xte, yte = (np.asarray(a) for a in data)
    Xtr, Xval, Xte = (a.astype(np.float64) for a in (Xtr, Xval, Xte))
    mu, sd = Xtr.mean(0), np.maximum(Xtr.std(0), 1e-6)
    Ztr, Zval = (Xtr - mu) / sd, (Xval - mu) / sd
    clf = LogisticRegression(solver="lbfgs", max_iter=cfg.max_iter, tol=cfg.tol, warm_start=True)
    idx = np.argsort(-lams) if order == "descending" else np.argsort(lams)
    select = PathSelection(patience)
    val_scores, n_iter = {}, {}
    over_budget = False
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for k, i in enumerate(idx):
            clf.set_params(C=1.0 / lams[i])
            clf.fit(Ztr, ytr)
            val_scores[int(i)] = accuracy(clf.predict(Zval), yval, metric)
            n_iter[int(i)] = int(np.max(clf.n_iter_))
            if select.add(int(i), val_scores[int(i)], (clf.coef_.copy(), clf.intercept_.copy())):
                break
            if time.perf_counter() - t0 > budget_s and k + 1 < lams.size:
                over_budget = True
                break
        sweep_s = time.perf_counter() - t0
        sweep_cpu = time.process_time() - c0
        out = {
            "order": order,
            "path_patience": int(patience),
            "complete": not over_budget,
            "lambdas_fitted": len(val_scores),
            "sweep_seconds": sweep_s,
            "sweep_cpu_seconds": sweep_cpu,
            "lbfgs_iterations": int(sum(n_iter.values())),
        }
        if over_budget:
            # lower bound on the sweep time; extrapolation for information only
            out["extrapolated_seconds"] = sweep_s / len(val_scores) * lams.size
            out["val_scores_timed"] = {f"{lams[i]:.3g}": v for i, v in val_scores.items()}
            return out
        best = select.index
        out.update(best_lambda=float(lams[best]), val=float(select.best))
        clf.coef_, clf.intercept_ = select.candidates[best]
        Xtv = np.concatenate([Xtr, Xval])
        mu2, sd2 = Xtv.mean(0), np.maximum(Xtv.std(0), 1e-6)
        clf.set_params(C=1.0 / lams[best])
        t1, c1 = time.perf_counter(), time.process_time()
        clf.fit((Xtv - mu2) / sd2, np.concatenate([ytr, yval]))
        out["refit_iter"] = int(np.max(clf.n_iter_))
        out["seconds"] = sweep_s + time.perf_counter() - t1
        out["cpu_seconds"] = sweep_cpu + time.process_time() - c1
        out["test"] = accuracy(clf.predict((Xte - mu2) / sd2), yte, metric)
    return out


def _torch_run(data, lams, device, cfg) -> dict:
    c0 = time.process_time()
    t = linear_probe_lbfgs(*data, lambdas=lams, device=device, config=cfg)
    return {
        "seconds": t["seconds"],
        "cpu_seconds": time.process_time() - c0,
        "val": t["val"],
        "test": t["test"],
        "best_lambda": t["best_lambda"],
        "lambdas_fitted": t["n_fitted"],
        "lbfgs_iterations": int(sum(t["n_iter"]) + t["refit_iter"]),
        "feature_passes": t["feature_passes"],
        "path_patience": cfg.path_patience,
        "precond_rank": cfg.precond_rank,
        "device": t["device"],
    }


def torch_optim_probe(data, lams, cfg, *, whiten: bool, device="cpu") -> dict:
    """The same protocol solved by ``torch.optim.LBFGS(line_search_fn="strong_wolfe")``: the
    descending warm-started λ path with the probe's early stop, the same ``max_iter``, ``tol``
    (max |gradient| of the mean-scaled objective: ``tolerance_grad``) and history, λ chosen on
    val, refit on train+val from that solution, test once; float32 autograd.

    ``whiten=True`` fits on PCA-whitened z-scored features (what the hand-written solver's
    covariance preconditioner buys, done to the data instead): that changes what the penalty
    ‖W‖² means, so its λ* and accuracy need not equal the probe's.
    """
    Xtr, ytr, Xval, yval, Xte, yte = (torch.as_tensor(np.asarray(a)) for a in data)
    Xtr, Xval, Xte = (a.float().to(device) for a in (Xtr, Xval, Xte))
    ytr, yval, yte = (a.long().to(device) for a in (ytr, yval, yte))
    k = int(max(int(ytr.max()), int(yval.max())) + 1)
    c0, t0 = time.process_time(), time.perf_counter()

    def transform(A):
        std, mean = torch.std_mean(A, 0, correction=0)
        std = std.clamp_min(1e-6)
        if not whiten:
            return lambda B: (B - mean) / std
        Z = (A - mean) / std
        e, V = torch.linalg.eigh((Z.T @ Z / Z.shape[0]).double())
        P = (V / torch.sqrt(e.clamp_min(1e-6 * float(e.max())))).float()
        return lambda B: ((B - mean) / std) @ P

    def fit(Z, y, lam, W, b):
        n = Z.shape[0]
        W, b = W.clone().requires_grad_(True), b.clone().requires_grad_(True)
        opt = torch.optim.LBFGS(
            [W, b], lr=1, max_iter=cfg.max_iter, history_size=cfg.history_size,
            tolerance_grad=cfg.tol, tolerance_change=0.0, line_search_fn="strong_wolfe",
        )  # fmt: skip

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(Z @ W + b, y)
            loss = loss + lam / (2 * n) * W.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        state = opt.state[opt._params[0]]
        return W.detach(), b.detach(), int(state.get("n_iter", 0))

    tf = transform(Xtr)
    Ztr, Zval = tf(Xtr), tf(Xval)
    W = torch.zeros(Ztr.shape[1], k, device=device)
    b = torch.zeros(k, device=device)
    select = PathSelection(cfg.path_patience)
    iters, fitted = 0, 0
    for i in np.argsort(-lams):
        W, b, it = fit(Ztr, ytr, float(lams[i]), W, b)
        iters, fitted = iters + it, fitted + 1
        if select.add(int(i), accuracy((Zval @ W + b).argmax(1), yval), (W, b)):
            break
    best = select.index
    W, b = select.candidates[best]
    Xtv = torch.cat([Xtr, Xval])
    tf2 = transform(Xtv)
    W, b, it = fit(tf2(Xtv), torch.cat([ytr, yval]), float(lams[best]), W, b)
    test = accuracy((tf2(Xte) @ W + b).argmax(1), yte)
    return {
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
        "val": float(select.best),
        "test": float(test),
        "best_lambda": float(lams[best]),
        "lambdas_fitted": fitted,
        "lbfgs_iterations": iters + it,
        "whiten": whiten,
    }


def _ratio(sk: dict, t: dict, key: str) -> float:
    return sk[key] / t[key]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n-train", type=int, default=10_000)
    ap.add_argument("--n-val", type=int, default=2_000)
    ap.add_argument("--n-test", type=int, default=2_000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--num-lambdas", type=int, default=45)
    ap.add_argument("--lambda-grid", default="vcr", choices=["vcr", "simclr"])
    ap.add_argument("--max-iter", type=int, default=LbfgsConfig.max_iter)
    ap.add_argument("--tol", type=float, default=LbfgsConfig.tol)
    ap.add_argument(
        "--path-patience",
        type=int,
        default=LbfgsConfig.path_patience,
        help="early stop of torch's λ path (0: every λ); also run on sklearn's descending path",
    )
    ap.add_argument("--precond-rank", type=int, default=LbfgsConfig.precond_rank)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--sklearn-orders",
        nargs="*",
        default=["descending", "ascending"],
        choices=["descending", "ascending"],
        help="descending: the same path as torch; ascending: ssl-transfer's order",
    )
    ap.add_argument("--sklearn-budget", type=float, default=240.0, help="seconds per sklearn sweep")
    ap.add_argument(
        "--torch-optim",
        action="store_true",
        help="also solve with torch.optim.LBFGS (z-scored and PCA-whitened features)",
    )
    ap.add_argument("--out", default=None, help="optional JSON file for the figures")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    threadpool_limits(args.threads)
    data = synthetic_features(
        args.n_train, args.n_val, args.n_test, args.dim, args.classes, seed=args.seed
    )
    cfg = LbfgsConfig(
        lambda_grid=args.lambda_grid,
        num_lambdas=args.num_lambdas,
        max_iter=args.max_iter,
        tol=args.tol,
        path_patience=args.path_patience,
        precond_rank=args.precond_rank,
    )
    lams = lambda_grid(cfg.lambda_grid, cfg.num_lambdas)
    # warm-up (first-call allocator/thread-pool cost is not part of the sweep)
    linear_probe_lbfgs(*(a[:256] for a in data), lambdas=lams[-2:], device=args.device, config=cfg)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t = _torch_run(data, lams, args.device, cfg)
    runs = {"torch": t}
    if cfg.path_patience:  # the same solver over the full sweep, for reference
        runs["torch_full_sweep"] = _torch_run(
            data, lams, args.device, dataclasses.replace(cfg, path_patience=0)
        )
    out = {
        "setup": {
            **{k: v for k, v in vars(args).items() if k != "out"},
            "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "loadavg_1min_at_start": load,
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        },
        **runs,
        "sklearn": {},
    }
    if load is not None:
        print(
            f"1-min load average at start: {load:.2f} on {os.cpu_count()} CPUs; "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
        )
    for name, r in runs.items():
        print(
            f"{name} ({r['device']}, float32, path_patience={r['path_patience']}, "
            f"precond_rank={r['precond_rank']}): {r['seconds']:.1f} s "
            f"({r['cpu_seconds']:.1f} CPU s), λ* {r['best_lambda']:.3g}, val {r['val']:.4f}, "
            f"test {r['test']:.4f}, {r['lambdas_fitted']} of {lams.size} λ fitted, "
            f"{r['lbfgs_iterations']} L-BFGS iterations, {r['feature_passes']:.0f} feature passes"
        )
    if args.torch_optim:
        for whiten in (False, True):
            r = torch_optim_probe(data, lams, cfg, whiten=whiten, device=args.device)
            name = "torch_optim_lbfgs" + ("_whitened" if whiten else "")
            r["slowdown_vs_torch"] = r["seconds"] / t["seconds"]
            out[name] = r
            print(
                f"{name} (torch.optim.LBFGS strong_wolfe, float32, path_patience="
                f"{cfg.path_patience}): {r['seconds']:.1f} s ({r['cpu_seconds']:.1f} CPU s), "
                f"λ* {r['best_lambda']:.3g}, val {r['val']:.4f}, test {r['test']:.4f}, "
                f"{r['lbfgs_iterations']} iterations -> {r['slowdown_vs_torch']:.1f}x the "
                "hand-written solver's time"
            )
    sk_runs = [(o, 0) for o in args.sklearn_orders]
    if "descending" in args.sklearn_orders and cfg.path_patience:
        sk_runs.insert(1, ("descending", cfg.path_patience))
    for order, patience in sk_runs:
        sk = _sklearn_sweep(data, lams, cfg, args.sklearn_budget, order, patience)
        name = order if not patience else f"{order}_path_patience_{patience}"
        label = f"{order} path, " + (
            "full sweep" if not patience else f"same early stop, path_patience={patience}"
        )
        if not sk["complete"]:
            # accuracy at torch's λ*: sklearn fit on train (val), refit on train+val (test)
            ref = sklearn_probe_reference(
                *data, lambdas=[t["best_lambda"]], config=cfg, path_patience=0
            )
            sk["val_at_torch_lambda"], sk["test"] = ref["val"], ref["test"]
            sk["seconds_lower_bound"] = sk["sweep_seconds"]
            sk["speedup_lower_bound"] = sk["sweep_seconds"] / t["seconds"]
            sk["speedup_cpu_lower_bound"] = sk["sweep_cpu_seconds"] / t["cpu_seconds"]
            speed = (
                f">= {sk['speedup_lower_bound']:.1f}x wall, "
                f">= {sk['speedup_cpu_lower_bound']:.1f}x CPU"
            )
            timing = (
                f">= {sk['sweep_seconds']:.1f} s (>= {sk['sweep_cpu_seconds']:.1f} CPU s; stopped "
                f"after {sk['lambdas_fitted']} of {lams.size} λ by --sklearn-budget; "
                f"extrapolated {sk['extrapolated_seconds']:.0f} s)"
            )
        else:
            sk["speedup"] = _ratio(sk, t, "seconds")
            sk["speedup_cpu"] = _ratio(sk, t, "cpu_seconds")
            speed = f"{sk['speedup']:.1f}x wall, {sk['speedup_cpu']:.1f}x CPU"
            timing = (
                f"{sk['seconds']:.1f} s ({sk['cpu_seconds']:.1f} CPU s), "
                f"λ* {sk['best_lambda']:.3g}, val {sk['val']:.4f}, "
                f"{sk['lambdas_fitted']} of {lams.size} λ fitted"
            )
        sk["test_gap_points"] = 100 * (t["test"] - sk["test"])
        out["sklearn"][name] = sk
        print(
            f"sklearn ({label}, float64): {timing}, test {sk['test']:.4f}, "
            f"{sk['lbfgs_iterations']} L-BFGS iterations -> torch speed-up {speed}, "
            f"test torch - sklearn {sk['test_gap_points']:+.2f} points"
        )
    if args.out:
        io.write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
