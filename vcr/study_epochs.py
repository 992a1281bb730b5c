"""Where does the study's baseline plateau? Validation accuracy of the baseline (no VCR) of each
study architecture against its training length, to choose ``study.recipe_overrides.<arch>.epochs``
in config.yaml (README "The eq. 2 / Algorithm 1 study").

    python -m vcr.study_epochs --out results/study/epochs \\
        [--archs mini_convnext mini_vit] [--epochs 3 6 10 15 20 30 40] [--seeds 0 1 2] \\
        [--set key=value ...]
    python -m vcr.study_epochs --out results/study/baseline_epochs --merge A.csv B.csv

A script that prints figures, not a test. For each (arch, E, seed) it trains the study's
baseline (recipe ``mini_study``, the study's dataset and label set, cosine over E epochs, so the
run at E is exactly the study baseline of length E) in this process and logs the validation
accuracy after every epoch. Writes ``OUT.csv`` (one row per arch, E, seed, epoch: val_top1,
plus the run's CPU seconds on its last row) and ``OUT.png`` (final validation accuracy against
E, mean and range over seeds; and the per-epoch curves of the longest runs). The pretraining
data is prepared under ``--data`` when missing (generated, as the pipeline does).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

from vcr import io
from vcr.cli import add_set_argument, parse_sets


def _manifest(data_root: Path, dataset: str) -> str:
    from vcr.data import prepare_dataset

    path = data_root / dataset / "manifest.json"
    if not path.is_file():
        prepare_dataset(dataset, data_root=None, out_dir=path.parent, seed=0)
    return str(path)


def measure(
    archs, epochs, seeds, *, dataset, target, data_root, threads=1, overrides=None, log=print
):
    """Rows ``{arch, epochs, seed, epoch, val_top1, cpu_s}``, one per trained epoch."""
    import torch

    from vcr.records import RunSpec
    from vcr.train import run

    torch.set_num_threads(threads)
    manifest = _manifest(Path(data_root), dataset)
    rows = []
    for arch in archs:
        for n_epochs in epochs:
            for seed in seeds:
                spec = RunSpec(
                    scale="mini", method="supervised", arch=arch, dataset=dataset,
                    target=target, recipe="mini_study", seed=seed,
                )  # fmt: skip
                with tempfile.TemporaryDirectory() as tmp:
                    t0 = time.process_time()
                    run(
                        spec, tmp, manifest=manifest, device="cpu", threads=threads,
                        overrides={**(overrides or {}), "epochs": n_epochs, "eval_every": 1},
                    )  # fmt: skip
                    cpu = time.process_time() - t0
                    log_rows = [
                        line for line in _read_jsonl(Path(tmp) / "log.jsonl") if "val_top1" in line
                    ]
                for entry in log_rows:
                    rows.append(
                        {
                            "arch": arch,
                            "epochs": n_epochs,
                            "seed": seed,
                            "epoch": entry["epoch"] + 1,
                            "val_top1": entry["val_top1"],
                            "cpu_s": round(cpu, 1) if entry is log_rows[-1] else "",
                        }
                    )
                log(
                    f"{arch} E={n_epochs} seed {seed}: final val {log_rows[-1]['val_top1']:.4f} "
                    f"({cpu:.1f} CPU s)"
                )
    return rows


def _read_jsonl(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _typed(row: dict) -> dict:
    """A CSV row back to :func:`measure`'s types."""
    out = dict(row)
    for k in ("epochs", "seed", "epoch"):
        out[k] = int(out[k])
    out["val_top1"] = float(out["val_top1"])
    return out


def final_table(rows) -> list[dict]:
    """Per (arch, E): mean/min/max final validation accuracy over seeds and mean CPU s."""
    out = {}
    for r in rows:
        if r["epoch"] != r["epochs"]:
            continue
        d = out.setdefault((r["arch"], r["epochs"]), {"vals": [], "cpu": []})
        d["vals"].append(r["val_top1"])
        d["cpu"].append(float(r["cpu_s"]))
    table = []
    for (arch, n), d in sorted(out.items()):
        table.append(
            {
                "arch": arch,
                "epochs": n,
                "seeds": len(d["vals"]),
                "val_mean": sum(d["vals"]) / len(d["vals"]),
                "val_min": min(d["vals"]),
                "val_max": max(d["vals"]),
                "cpu_s_mean": sum(d["cpu"]) / len(d["cpu"]),
            }
        )
    return table


def plot(rows, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = final_table(rows)
    archs = sorted({r["arch"] for r in table})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for arch in archs:
        t = [r for r in table if r["arch"] == arch]
        x = [r["epochs"] for r in t]
        m = [100 * r["val_mean"] for r in t]
        lo = [100 * r["val_min"] for r in t]
        hi = [100 * r["val_max"] for r in t]
        axes[0].plot(x, m, "o-", label=arch)
        axes[0].fill_between(x, lo, hi, alpha=0.2)
        longest = max(x)
        for seed in sorted({r["seed"] for r in rows}):
            curve = [
                r
                for r in rows
                if r["arch"] == arch and r["epochs"] == longest and r["seed"] == seed
            ]
            axes[1].plot(
                [r["epoch"] for r in curve], [100 * r["val_top1"] for r in curve],
                color=axes[0].lines[-1].get_color(), alpha=0.6,
                label=f"{arch} (E={longest})" if seed == 0 else None,
            )  # fmt: skip
    axes[0].set(xlabel="training length E (epochs, cosine over E)", ylabel="final val top-1 (%)")
    axes[0].set_title("baseline after E epochs (mean, min-max over seeds)", fontsize=9)
    axes[1].set(xlabel="epoch", ylabel="val top-1 (%)")
    axes[1].set_title("per-epoch curves of the longest runs", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)


def write_csv(rows, path) -> None:
    with io.atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="prefix of OUT.csv and OUT.png")
    ap.add_argument("--archs", nargs="+", default=["mini_convnext", "mini_vit"])
    ap.add_argument("--epochs", nargs="+", type=int, default=[3, 6, 10, 15, 20, 30, 40])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--dataset", default="mini_objects")
    ap.add_argument("--target", default="super")
    ap.add_argument("--data", default="work/mini/data", help="prepared datasets (manifest dirs)")
    ap.add_argument("--threads", type=int, default=1)
    add_set_argument(ap, help="recipe overrides (vcr.recipes keys) of every run")
    ap.add_argument(
        "--merge", nargs="+", default=None, metavar="CSV",
        help="train nothing: merge OUT.csv files of earlier runs (e.g. one process per arch)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if args.merge:
        rows = []
        for path in args.merge:
            with open(path, newline="") as fh:
                rows += [_typed(r) for r in csv.DictReader(fh)]
    else:
        rows = measure(
            args.archs, args.epochs, args.seeds, dataset=args.dataset, target=args.target,
            data_root=args.data, threads=args.threads, overrides=parse_sets(args.sets),
        )  # fmt: skip
    write_csv(rows, f"{args.out}.csv")
    plot(rows, f"{args.out}.png")
    for r in final_table(rows):
        print(
            f"{r['arch']:14s} E={r['epochs']:3d}: val {100 * r['val_mean']:.1f} % "
            f"[{100 * r['val_min']:.1f}, {100 * r['val_max']:.1f}] over {r['seeds']} seeds, "
            f"{r['cpu_s_mean']:.1f} CPU s a run"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
