"""Memory of the SGD probe and of feature extraction at a scaled Places205 size, extrapolated to
the full train split (a benchmark: prints figures, asserts nothing).

    python -m vcr.bench_memory [--rows 240000] [--dim 2048] [--classes 205] [--device cpu]

Each measurement runs in a fresh process, so its peak resident set (``VmHWM``) is its own:

- ``sgd``: ``linear_probe_sgd`` (one epoch) on rows x dim float32 train features held in host
  memory, as the probe gets them from the feature cache; val/test 10,000 / 20,500 rows.
- ``extraction``: ``extract_features`` over a dataset of rows tiny images through DataLoader
  workers (``--workers``) and a stand-in backbone (a linear map to ``dim`` features: the
  backbone's own memory is not what scales with the rows), written to a cache file.

Host bytes per feature row = (peak - the process's resident set just before the train features
existed: torch, the backbone, val/test) / rows; the full-size figure is that times ``--full-rows`` plus the same baseline. Device bytes:
``torch.cuda.max_memory_allocated`` when ``--device cuda``; on CPU there is no device to measure
(the SGD probe puts only the head, one batch and one scoring chunk there, not the features).
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
        linear_probe_sgd(X, y, Xv, yv, Xt, yt, epochs=1, device=dev, eval_dataset="places205")
    else:
        from vcr.features import extract_features

        class Images(torch.utils.data.Dataset):
            def __len__(self):
                return args.rows

            def __getitem__(self, i):
                g = torch.Generator().manual_seed(i)
                return torch.rand(3, 8, 8, generator=g), i % args.classes

        backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, args.dim))
        base = _status_kb("VmRSS") * 1024
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            X, _ = extract_features(
                backbone, Images(), batch_size=256, device=dev, num_workers=args.workers,
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
    for what in args.what:
        given = sys.argv[1:] if argv is None else list(argv)
        cmd = [sys.executable, "-m", "vcr.bench_memory", *given, "--child", what]
        r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        per_row = (r["peak_host_bytes"] - r["baseline_bytes"]) / r["rows"]
        full = r["baseline_bytes"] + per_row * args.full_rows
        dev = r["peak_device_bytes"]
        dev_txt = (
            f"peak device {dev / GB:.2f} GB ({dev / r['rows']:.0f} B/row)"
            if dev is not None
            else "device: not measured (CPU run)"
        )
        print(
            f"{what:>10}: {r['seconds']:.1f} s; peak host {r['peak_host_bytes'] / GB:.2f} GB = "
            f"baseline {r['baseline_bytes'] / GB:.2f} GB + {per_row:,.0f} B/feature row "
            f"({per_row / (4 * args.dim):.2f} x the row's {4 * args.dim:,} B); {dev_txt}; "
            f"at {args.full_rows:,} rows: host {full / GB:.1f} GB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
