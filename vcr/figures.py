"""Fig. 2: two-moons decision boundaries per regularizer, and each method's margin.

Input: the files ``workflow_scripts/two_moons.py`` writes (CONTRACT section 7); ``torch.load``
gives ``{"method", "seeds", "grid": {"xs", "ys"}, "logits": (S, G, G) with
logits[s, i, j] = f(xs[j], ys[i]), "margins": (S,), "X": (300, 2), "y": (300,) in ±1 (seed 0's
data), "config"}``.

Each panel shows the logit averaged over seeds (the Gradient Starvation figure's convention,
PAPER_PROTOCOLS.md section 7): filled regions by its sign, the decision boundary (its 0 contour)
and seed 0's points; the title gives the margin as mean ± sample std over seeds (ddof=1; "–" when
one seed), from the per-seed ``margins`` the trainer computed. Panels follow the paper's order
(none, L2, dropout, batch norm, spectral decoupling, VCR); unknown methods come after, by name.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from vcr import io
from vcr.names import TWO_MOONS_METHODS

METHOD_ORDER = TWO_MOONS_METHODS
METHOD_LABELS = {
    "none": "No regularization",
    "l2": "L2",
    "dropout": "Dropout",
    "batchnorm": "Batch norm",
    "sd": "Spectral decoupling",
    "vcr": "VCR",
}
_REQUIRED = ("method", "seeds", "grid", "logits", "margins", "X", "y")


def _np(x):
    import numpy as np

    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=float)


def load_two_moons(path) -> dict:
    """Load and check one two-moons result file; arrays come back as float numpy arrays."""
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"two-moons result {path} not found; make it with "
            "`python workflow_scripts/two_moons.py --method M --seeds 0-9 --out FILE.pt`"
        )
    # weights_only=False: the files are this pipeline's own outputs and may hold numpy arrays
    data = torch.load(path, map_location="cpu", weights_only=False)
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ValueError(f"{path}: two-moons result misses key(s) {missing}")
    xs, ys = _np(data["grid"]["xs"]), _np(data["grid"]["ys"])
    logits, margins = _np(data["logits"]), _np(data["margins"]).reshape(-1)
    X, y = _np(data["X"]), _np(data["y"]).reshape(-1)
    if logits.ndim != 3 or logits.shape[1:] != (len(ys), len(xs)):
        raise ValueError(
            f"{path}: logits shape {logits.shape}, expected (seeds, {len(ys)}, {len(xs)}) "
            "= (S, len(ys), len(xs))"
        )
    if len(margins) != logits.shape[0]:
        raise ValueError(f"{path}: {len(margins)} margins for {logits.shape[0]} seeds")
    if X.ndim != 2 or X.shape[1] != 2 or len(y) != len(X):
        raise ValueError(f"{path}: X shape {X.shape} / y shape {y.shape}, expected (N, 2) / (N,)")
    if not (math.isfinite(logits.sum()) and math.isfinite(margins.sum())):
        raise ValueError(f"{path}: non-finite logits or margins for method {data['method']!r}")
    return {
        "method": str(data["method"]),
        "seeds": list(data["seeds"]),
        "xs": xs,
        "ys": ys,
        "logits": logits,
        "margins": margins,
        "X": X,
        "y": y,
        "config": data.get("config", {}),
        "path": str(path),
    }


def order_results(results: list[dict]) -> list[dict]:
    """Paper order; duplicate methods are an error (two files for one panel)."""
    methods = [r["method"] for r in results]
    dup = sorted({m for m in methods if methods.count(m) > 1})
    if dup:
        raise ValueError(f"two-moons inputs repeat method(s) {dup}; give one file per method")

    def key(r):
        m = r["method"]
        return (METHOD_ORDER.index(m), "") if m in METHOD_ORDER else (len(METHOD_ORDER), m)

    return sorted(results, key=key)


def margin_summary(results: list[dict]) -> list[dict]:
    """One row per method: method, mean, std (sample, ddof=1; None when n=1), n."""
    rows = []
    for r in order_results(results):
        m = [float(v) for v in r["margins"]]
        rows.append(
            {
                "method": r["method"],
                "mean": statistics.fmean(m),
                "std": statistics.stdev(m) if len(m) > 1 else None,
                "n": len(m),
            }
        )
    return rows


def write_margins_csv(rows: list[dict], path) -> None:
    import pandas as pd

    df = pd.DataFrame(rows, columns=["method", "mean", "std", "n"])
    io.write_text(path, df.to_csv(index=False))


def plot_figure2(results: list[dict], out, *, ncols: int = 3, dpi: int = 150) -> list[str]:
    """Draw one panel per method into ``out`` (format from the suffix); return panel titles."""
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes / CI
    import matplotlib.pyplot as plt
    import numpy as np

    results = order_results(results)
    summary = {s["method"]: s for s in margin_summary(results)}
    n = len(results)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.2 * ncols, 3.3 * nrows), squeeze=False, sharex=True, sharey=True
    )
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    titles = []
    for ax, r in zip(axes.flat, results):
        mean_logit = r["logits"].mean(axis=0)
        XX, YY = np.meshgrid(r["xs"], r["ys"])  # XX[i, j] = xs[j], YY[i, j] = ys[i]
        ax.contourf(
            XX, YY, np.sign(mean_logit), levels=[-1.5, 0, 1.5], colors=["#f4c7c3", "#c6dbef"]
        )
        if mean_logit.min() < 0 < mean_logit.max():  # a boundary exists on this grid
            ax.contour(XX, YY, mean_logit, levels=[0.0], colors="k", linewidths=1.5)
        pos = r["y"] > 0
        ax.scatter(*r["X"][pos].T, s=6, c="#2166ac", edgecolors="none", label="+1")
        ax.scatter(*r["X"][~pos].T, s=6, c="#b2182b", edgecolors="none", label="−1")
        s = summary[r["method"]]
        std = "–" if s["std"] is None else f"{s['std']:.3f}"
        titles.append(
            f"{METHOD_LABELS.get(r['method'], r['method'])}\n"
            f"margin {s['mean']:.3f} ± {std} (n={s['n']})"
        )
        ax.set_title(titles[-1], fontsize=9)
        ax.set_xlim(r["xs"].min(), r["xs"].max())
        ax.set_ylim(r["ys"].min(), r["ys"].max())
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
    fig.suptitle(
        "Two moons: seed-averaged logit (blue > 0 = class +1, red < 0 = class −1), boundary at 0",
        fontsize=10,
    )
    fig.tight_layout()
    out = Path(out)
    fmt = out.suffix.lstrip(".") or "png"
    with io.atomic_path(out) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi)
    plt.close(fig)
    return titles


def figure2(inputs, out, margins_csv=None) -> list[dict]:
    """Load the two-moons files, draw Fig. 2 and write the margins CSV; return the summary."""
    results = [load_two_moons(p) for p in inputs]
    if not results:
        raise ValueError("figure2: no two-moons input files given")
    plot_figure2(results, out)
    summary = margin_summary(results)
    if margins_csv is not None:
        write_margins_csv(summary, margins_csv)
    return summary
