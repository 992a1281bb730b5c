"""Places205 (there is no torchvision class for it; Places365 is a different dataset).

Layout under ``data_root/places205/``: the official list files
``trainvalsplit_places205/train_places205.csv`` and ``val_places205.csv`` (lines
"``a/abbey/gsun_....jpg 0``": a path relative to the image folder and a label 0..204), and the
image folder ``images256/`` (or the release's ``data/vision/torralba/deeplearning/images256/``;
``images_dir=`` overrides). Class names are the folder part of the paths ("a/abbey" -> abbey).
Splits: ``test`` = the official val list (100 per class); ``val`` = a seeded random hold-out of
``val_size`` (10,000) train images; ``train`` = the rest of the official train list.
Strict preparation checks 205 classes and 100 val images per class (the official train size
is not verified here, so it is not checked).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from vcr.data import base

OBTAIN = (
    "download Places205 (imagesPlaces205_resize.tar and trainvalsplit_places205.tar.gz from "
    "the MIT Places205 release) and extract both into data_root/places205/"
)
IMAGE_DIRS = ("images256", "data/vision/torralba/deeplearning/images256")


def _read_list(spec, path: Path):
    if not path.exists():
        raise base.missing(spec, f"list file {path.name} is missing", path.parent)
    files, labels = [], []
    with open(path, encoding="utf-8") as fh:
        for k, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise base.missing(spec, f"{path.name} line {k} is malformed: {line!r}", path)
            files.append(parts[0])
            labels.append(int(parts[1]))
    return files, labels


def _prepare_places(spec, *, data_root, out_dir, seed, allow_download, opts):
    root = base.dataset_root(spec, data_root, opts)
    if not root.is_dir():
        raise base.missing(spec, "the Places205 folder is missing", root)
    strict = bool(opts.get("strict", True))
    lists = root / opts.get("list_dir", "trainvalsplit_places205")
    tr_files, tr_labels = _read_list(spec, lists / "train_places205.csv")
    te_files, te_labels = _read_list(spec, lists / "val_places205.csv")
    cands = [opts["images_dir"]] if opts.get("images_dir") else list(IMAGE_DIRS)
    img_dir = next((root / c for c in cands if (root / c).is_dir()), None)
    if img_dir is None:
        raise base.missing(spec, f"image folder missing (tried {cands})", root)
    if bool(opts.get("check_files", True)):
        absent = [f for f in tr_files + te_files if not (img_dir / f).exists()]
        if absent:
            raise base.missing(
                spec, f"{len(absent)} listed images are missing (e.g. {absent[:3]})", img_dir
            )
    names: dict[int, str] = {}
    for f, y in zip(tr_files + te_files, tr_labels + te_labels):
        names.setdefault(y, Path(f).parent.name)
    k = max(names) + 1
    if sorted(names) != list(range(k)):
        raise base.missing(spec, "labels are not 0..K-1", lists)
    if strict:
        per = Counter(te_labels)
        if k != 205 or set(per.values()) != {100}:
            raise base.missing(
                spec,
                f"{k} classes, val per class {sorted(set(per.values()))}; "
                "expected 205 classes x 100",
                lists,
            )
    n_hold = int(opts.get("val_size", 10000))
    n_hold = n_hold if strict else min(n_hold, len(tr_files) // 5)
    keep, hold = base.holdout_random(len(tr_files), count=n_hold, seed=seed)
    rel = img_dir.relative_to(root)

    def entry(files, labels, rows):
        return {
            "files": [str(rel / files[i]) for i in rows],
            "labels": {"default": [labels[i] for i in rows]},
        }

    index = {
        "kind": "files",
        "splits": {
            "train": entry(tr_files, tr_labels, keep),
            "val": entry(tr_files, tr_labels, hold),
            "test": entry(te_files, te_labels, range(len(te_files))),
        },
    }
    classes = {"default": [names[i] for i in range(k)]}
    base.check_split_labels(spec, index, classes)
    return {
        "root": str(root),
        "classes": classes,
        "index": base.write_index(out_dir, index),
        "split_sizes": base.split_sizes(index),
        "checks": {
            "strict": strict,
            "list_sha256": {
                p.name: base.file_sha256(p)
                for p in (lists / "train_places205.csv", lists / "val_places205.csv")
            },
        },
    }


base.register(
    base.DatasetSpec(
        "places205",
        "places",
        _prepare_places,
        "Places205 (official lists); val = 10,000 seeded train hold-out; test = official val",
        obtain=OBTAIN,
        subdir="places205",
    )
)
