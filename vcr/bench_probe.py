"""Benchmark: the 45-λ L-BFGS probe sweep, torch vs scikit-learn (issue 5).

    python -m vcr.bench_probe                      # 10k x 2048 features, 100 classes, 2 threads
    python -m vcr.bench_probe --sklearn-budget 300 --out bench.json

Synthetic, seeded features: 100 class means in a random 64-d subspace of R^2048 plus isotropic
noise, split 10k train / 2k val / 2k test. Both implementations run the same protocol
(``vcr.probe``: z-scored features, descending warm-started λ path, λ chosen on val, refit on
train+val, one test score) with the same ``max_iter`` and ``tol``. torch runs in float32 (on the
GPU when ``--device cuda``), scikit-learn in float64 (it casts to float64 for lbfgs).

scikit-learn is timed on two λ orders: ``descending`` (the same warm-started path as torch: the
like-for-like comparison) and ``ascending`` (ssl-transfer's order, weak penalty first, where the
ill-conditioned weak-λ fits run to ``max_iter``). A sweep that exceeds ``--sklearn-budget``
seconds is stopped after the λ that crosses it: its time is then reported as a LOWER bound (the
λ timed so far alone), with an extrapolation (mean per λ x 45) for information, and accuracy is
compared at torch's chosen λ (sklearn fit on train for val, refit on train+val for test).

Both wall-clock and CPU time (``time.process_time``, all threads of the process) are reported:
on a shared machine the wall-clock ratio moves with the load of other processes, the CPU-time
ratio much less.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from vcr import io
from vcr.probe import (
    LbfgsConfig,
    accuracy,
    lambda_grid,
    linear_probe_lbfgs,
    sklearn_probe_reference,
)


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


def _sklearn_sweep(data, lams, cfg, budget_s, order: str, metric="top1") -> dict:
    """scikit-learn's warm-started λ path in ``order``, stopped once ``budget_s`` is exceeded;
    then λ chosen on val (or torch's λ* if incomplete), refit on train+val, test once."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    Xtr, ytr, Xval, yval, Xte, yte = (np.asarray(a) for a in data)
    Xtr, Xval, Xte = (a.astype(np.float64) for a in (Xtr, Xval, Xte))
    mu, sd = Xtr.mean(0), np.maximum(Xtr.std(0), 1e-6)
    Ztr, Zval = (Xtr - mu) / sd, (Xval - mu) / sd
    clf = LogisticRegression(solver="lbfgs", max_iter=cfg.max_iter, tol=cfg.tol, warm_start=True)
    idx = np.argsort(-lams) if order == "descending" else np.argsort(lams)
    val_scores, n_iter, coefs = {}, {}, {}
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i in idx:
            clf.set_params(C=1.0 / lams[i])
            clf.fit(Ztr, ytr)
            val_scores[int(i)] = accuracy(clf.predict(Zval), yval, metric)
            n_iter[int(i)] = int(np.max(clf.n_iter_))
            coefs[int(i)] = (clf.coef_.copy(), clf.intercept_.copy())
            if time.perf_counter() - t0 > budget_s:
                break
        sweep_s = time.perf_counter() - t0
        sweep_cpu = time.process_time() - c0
        complete = len(val_scores) == lams.size
        out = {
            "order": order,
            "complete": complete,
            "lambdas_timed": len(val_scores),
            "sweep_seconds": sweep_s,
            "sweep_cpu_seconds": sweep_cpu,
            "lbfgs_iterations": int(sum(n_iter.values())),
        }
        if complete:
            vs = np.array([val_scores[i] for i in range(lams.size)])
            best = int(np.flatnonzero(vs == vs.max())[0])
            out.update(best_lambda=float(lams[best]), val=float(vs[best]))
            clf.coef_, clf.intercept_ = coefs[best]
        else:
            # lower bound on the sweep time; extrapolation for information only
            out["extrapolated_seconds"] = sweep_s / len(val_scores) * lams.size
            out["val_scores_timed"] = {f"{lams[i]:.3g}": v for i, v in val_scores.items()}
            return out
        Xtv = np.concatenate([Xtr, Xval])
        mu2, sd2 = Xtv.mean(0), np.maximum(Xtv.std(0), 1e-6)
        clf.set_params(C=1.0 / lams[best])
        t1, c1 = time.perf_counter(), time.process_time()
        clf.fit((Xtv - mu2) / sd2, np.concatenate([ytr, yval]))
        out["seconds"] = sweep_s + time.perf_counter() - t1
        out["cpu_seconds"] = sweep_cpu + time.process_time() - c1
        out["test"] = accuracy(clf.predict((Xte - mu2) / sd2), yte, metric)
    return out


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
    )
    lams = lambda_grid(cfg.lambda_grid, cfg.num_lambdas)
    # warm-up (first-call allocator/thread-pool cost is not part of the sweep)
    linear_probe_lbfgs(*(a[:256] for a in data), lambdas=lams[-2:], device=args.device, config=cfg)
    c0 = time.process_time()
    t = linear_probe_lbfgs(*data, lambdas=lams, device=args.device, config=cfg)
    t["cpu_seconds"] = time.process_time() - c0
    out = {
        "setup": {
            **{k: v for k, v in vars(args).items() if k != "out"},
            "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__,
        },
        "torch": {
            "seconds": t["seconds"],
            "cpu_seconds": t["cpu_seconds"],
            "val": t["val"],
            "test": t["test"],
            "best_lambda": t["best_lambda"],
            "lbfgs_iterations": int(sum(t["n_iter"]) + t["refit_iter"]),
            "device": t["device"],
        },
        "sklearn": {},
    }
    print(
        f"torch ({t['device']}, float32): {t['seconds']:.1f} s ({t['cpu_seconds']:.1f} CPU s), "
        f"val {t['val']:.4f}, "
        f"test {t['test']:.4f}, λ* {t['best_lambda']:.3g}, "
        f"{out['torch']['lbfgs_iterations']} L-BFGS iterations"
    )
    for order in args.sklearn_orders:
        sk = _sklearn_sweep(data, lams, cfg, args.sklearn_budget, order)
        if not sk["complete"]:
            # accuracy at torch's λ*: sklearn fit on train (val), refit on train+val (test)
            ref = sklearn_probe_reference(*data, lambdas=[t["best_lambda"]], config=cfg)
            sk["val_at_torch_lambda"], sk["test"] = ref["val"], ref["test"]
            sk["seconds_lower_bound"] = sk["sweep_seconds"]
            speed = (
                f">= {sk['sweep_seconds'] / t['seconds']:.1f}x wall, "
                f">= {sk['sweep_cpu_seconds'] / t['cpu_seconds']:.1f}x CPU"
            )
            timing = (
                f">= {sk['sweep_seconds']:.1f} s (stopped after {sk['lambdas_timed']} of "
                f"{lams.size} λ; extrapolated {sk['extrapolated_seconds']:.0f} s)"
            )
            sk["speedup_lower_bound"] = sk["sweep_seconds"] / t["seconds"]
        else:
            speed = (
                f"{sk['seconds'] / t['seconds']:.1f}x wall, "
                f"{sk['cpu_seconds'] / t['cpu_seconds']:.1f}x CPU"
            )
            timing = (
                f"{sk['seconds']:.1f} s ({sk['cpu_seconds']:.1f} CPU s), "
                f"λ* {sk['best_lambda']:.3g}, val {sk['val']:.4f}"
            )
            sk["speedup"] = sk["seconds"] / t["seconds"]
            sk["speedup_cpu"] = sk["cpu_seconds"] / t["cpu_seconds"]
        sk["test_gap_points"] = 100 * (t["test"] - sk["test"])
        out["sklearn"][order] = sk
        print(
            f"sklearn ({order} path, float64): {timing}, test {sk['test']:.4f}, "
            f"{sk['lbfgs_iterations']} L-BFGS iterations -> torch speed-up {speed}, "
            f"test torch - sklearn {sk['test_gap_points']:+.2f} points"
        )
    if args.out:
        io.write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
