"""Memory of the SGD probe and of feature extraction at a scaled Places205 size, extrapolated to
the full train split (a benchmark: prints figures, asserts nothing).

    python -m vcr.bench_memory [--rows 240000] [--dim 2048] [--classes 205] [--device cpu]

Each measurement runs in a fresh process, so its peak resident set (``VmHWM``) is its own:

- ``sgd``: ``linear_probe_sgd``, one epoch at ``--batch`` (8192: fewer steps, the same
  features), on rows x dim float32 train features held in host memory, as the probe gets them
  from the feature cache; val/test 10,000 / 20,500 rows.
- ``extraction``: ``extract_features`` over a dataset of rows tiny images through DataLoader
  workers (``--workers``) and a stand-in backbone (a linear map to ``dim`` features: the
  backbone's own memory is not what scales with the rows), written to a cache file.

Each is measured at ``--rows`` and half of it: bytes per feature row = the difference of the two
peaks / the difference of the rows, and the rest of the peak is what does not grow with the rows
(torch, the backbone, val/test, a batch, a scoring chunk); the full-size figure is that plus
``--full-rows`` times the per-row bytes. Device bytes: ``torch.cuda.max_memory_allocated``
when ``--device cuda``; on CPU there is no device to measure (the SGD probe puts only the head,
one batch and one scoring chunk there, not the features).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

PLACES205_TRAIN = 2_440_000  # ~2.44M train images (official 2,448,873 minus the 10k held out)
GB = 1e9


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _child(args) -> dict:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    t0 = time.perf_counter()
    if args.child == "sgd":
        from vcr.probes.heads import linear_probe_sgd

        # val/test (Places205: 10,000 held out, 20,500 official val) do not grow with the rows
        Xv, yv = torch.randn(10_000, args.dim), torch.randint(0, args.classes, (10_000,))
        Xt, yt = torch.randn(20_500, args.dim), torch.randint(0, args.classes, (20_500,))
        base = _status_kb("VmRSS") * 1024
        X = torch.randn(args.rows, args.dim)
        y = torch.randint(0, args.classes, (args.rows,))
        features = X.numel() * X.element_size()
        linear_probe_sgd(
            X, y, Xv, yv, Xt, yt, epochs=1, device=dev, eval_dataset="places205",
            batch_size=args.batch,
        )  # fmt: skip
    else:
        from vcr.features import extract_features

        class Images(torch.utils.data.Dataset):
            def __len__(self):
                return args.rows

            def __getitem__(self, i):
                return torch.full((3, 8, 8), (i % 97) / 97.0), i % args.classes

        backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, args.dim))
        base = _status_kb("VmRSS") * 1024
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            X, _ = extract_features(
                backbone, Images(), batch_size=args.batch, device=dev, num_workers=args.workers,
                cache=os.path.join(tmp, "train.pt"),
            )  # fmt: skip
            features = X.numel() * X.element_size()
    out = {
        "what": args.child,
        "rows": args.rows,
        "dim": args.dim,
        "seconds": time.perf_counter() - t0,
        "baseline_bytes": base,
        "feature_bytes": features,
        "peak_host_bytes": _status_kb("VmHWM") * 1024,
        "peak_device_bytes": (torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None),
    }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=240_000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=205)
    ap.add_argument("--full-rows", type=int, default=PLACES205_TRAIN)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    # a batch is batch x dim x 4 bytes (33 MB at 4096): larger batches only shorten the run
    ap.add_argument("--batch", type=int, default=8192, help="probe / extraction batch size")
    ap.add_argument("--workers", type=int, default=2, help="extraction DataLoader workers")
    ap.add_argument("--tmp", default=None, help="folder for the extraction's cache file")
    ap.add_argument("--what", nargs="*", default=["sgd", "extraction"])
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return 0
    print(
        f"{args.rows:,} x {args.dim} float32 features ({args.rows * args.dim * 4 / GB:.2f} GB), "
        f"device {args.device}; extrapolated to {args.full_rows:,} rows "
        f"({args.full_rows * args.dim * 4 / GB:.1f} GB of features)"
    )
    given = sys.argv[1:] if argv is None else list(argv)
    for what in args.what:
        # two sizes: the slope is what each feature row costs, the intercept what does not grow
        runs = {}
        for rows in (args.rows // 2, args.rows):
            cmd = [sys.executable, "-m", "vcr.bench_memory", *given, "--rows", str(rows)]
            out = subprocess.run(
                [*cmd, "--child", what], capture_output=True, text=True, check=True
            ).stdout
            runs[rows] = json.loads(out)
        (n1, r1), (n2, r2) = sorted(runs.items())
        per_row = (r2["peak_host_bytes"] - r1["peak_host_bytes"]) / (n2 - n1)
        fixed = r2["peak_host_bytes"] - per_row * n2
        full = fixed + per_row * args.full_rows
        dev = r2["peak_device_bytes"]
        dev_txt = (
            f"peak device {dev / GB:.2f} GB at {n2:,} rows"
            if dev is not None
            else "device: not measured (CPU run)"
        )
        print(
            f"{what:>10}: peak host {r1['peak_host_bytes'] / GB:.2f} GB at {n1:,} rows, "
            f"{r2['peak_host_bytes'] / GB:.2f} GB at {n2:,} rows ({r2['seconds']:.0f} s) -> "
            f"{per_row:,.0f} B per feature row ({per_row / (4 * args.dim):.2f} x its "
            f"{4 * args.dim:,} B) + {fixed / GB:.2f} GB fixed; {dev_txt}; at "
            f"{args.full_rows:,} rows: host {full / GB:.1f} GB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
