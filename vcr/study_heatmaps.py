"""The study's heatmaps (``vcr.study``): one PNG per (metric, covariance convention), alpha x
beta, the test accuracy of every setting minus the baseline's (mean over seeds), one panel per
architecture, one colour scale per (metric, arch) shared by the conventions so that the two
conventions' maps can be compared by eye."""

from __future__ import annotations

from pathlib import Path

from vcr import io
from vcr.plan.study import PRETRAIN_METRIC
from vcr.study import BASELINE, StudyData


def plot_heatmaps(data: StudyData, settings_rows: list[dict], out_dir) -> list[str]:
    """One PNG per (metric, convention): alpha x beta test difference to the baseline, one
    panel per arch, colour scale per (metric, arch) shared by the conventions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cell = {
        (r["arch"], r["metric"], r["cov_scale"], r["alpha"], r["beta"]): r for r in settings_rows
    }
    paths = []
    for metric in data.metrics:
        limits = {
            arch: max(
                [
                    abs(cell[(arch, metric, c, a, b)]["delta_points"])
                    for c in data.cov_scales
                    for a, b in data.grid()
                ]
                + [0.5]
            )
            for arch in data.archs
        }
        for cov in data.cov_scales:
            fig, axes = plt.subplots(
                1, len(data.archs), figsize=(4.6 * len(data.archs), 3.9), squeeze=False
            )
            for ax, arch in zip(axes[0], data.archs):
                grid = np.array(
                    [
                        [cell[(arch, metric, cov, a, b)]["delta_points"] for b in data.betas]
                        for a in data.alphas
                    ]
                )
                lim = limits[arch]
                im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
                for i, a in enumerate(data.alphas):
                    for j, b in enumerate(data.betas):
                        c = cell[(arch, metric, cov, a, b)]
                        star = (
                            "*"
                            if c["p_vs_baseline"] is not None and c["p_vs_baseline"] < 0.05
                            else ""
                        )
                        ax.text(
                            j, i, f"{grid[i, j]:+.1f}{star}", ha="center", va="center", fontsize=7,
                            color="white" if abs(grid[i, j]) > 0.6 * lim else "black",
                        )  # fmt: skip
                base = cell[(arch, metric, BASELINE, 0.0, 0.0)]
                ax.set_xticks(range(len(data.betas)), [f"{b:g}" for b in data.betas], fontsize=8)
                ax.set_yticks(range(len(data.alphas)), [f"{a:g}" for a in data.alphas], fontsize=8)
                ax.set(xlabel="beta", ylabel="alpha")
                ax.set_title(f"{arch}: baseline {100 * base['test_mean']:.1f} %", fontsize=9)
                fig.colorbar(im, ax=ax, label="test accuracy - baseline (points)", shrink=0.85)
            label = (
                "pretraining (own classifier)" if metric == PRETRAIN_METRIC else f"probe {metric}"
            )
            fig.suptitle(
                f"{label}, {cov}: test accuracy minus the baseline's\n"
                "(points, mean over seeds; * paired p < 0.05)",
                fontsize=9,
            )
            fig.tight_layout()
            path = Path(out_dir) / f"heatmap_{metric}_{cov}.png"
            with io.atomic_path(path) as tmp:
                fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
            plt.close(fig)
            paths.append(str(path))
    return paths
