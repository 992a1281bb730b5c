"""iNaturalist 2018 with the official ``train2018.json`` / ``val2018.json`` split.

torchvision's ``INaturalist(version="2018")`` ignores the json files and walks
``train_val2018/<supercategory>/<id>/``, which mixes train and val; so this loader reads the
COCO-style json files itself: ``images`` (id, file_name), ``annotations`` (image_id,
category_id), ``categories`` (id, name; or a ``categories.json`` beside them).

Layout under ``data_root/inat2018/``: ``train2018.json``, ``val2018.json`` and the image folder
(``train_val2018/...``) the file names point into.
Splits: ``test`` = official val2018 (24,426; what papers report); ``val`` = a seeded random
hold-out of ``val_size`` (10,000) train images; ``train`` = the remaining official train
(437,513 - 10,000). 8,142 classes = sorted category ids.
"""

from __future__ import annotations

import json
from pathlib import Path

from vcr.data import base

N_TRAIN, N_VAL, N_CLASSES = 437513, 24426, 8142
OBTAIN = (
    "download iNaturalist 2018 (train_val2018.tar.gz, train2018.json.tar.gz, "
    "val2018.json.tar.gz; see github.com/visipedia/inat_comp/tree/master/2018) and extract into "
    "data_root/inat2018/"
)


def _read_json(spec, path: Path) -> dict:
    if not path.exists():
        raise base.missing(spec, f"annotation file {path.name} is missing", path.parent)
    try:
        with open(path, encoding="utf-8") as fh:
            d = json.load(fh)
        d["images"], d["annotations"]  # noqa: B018 (presence check)
    except Exception as e:
        raise base.missing(spec, f"annotation file {path.name} is corrupt ({e!r})", path) from None
    return d


def _pairs(spec, d: dict, root: Path, check_files: bool):
    cat_of = {a["image_id"]: a["category_id"] for a in d["annotations"]}
    files, cats = [], []
    for im in d["images"]:
        if im["id"] not in cat_of:
            raise base.missing(spec, f"image id {im['id']} has no annotation", root)
        files.append(im["file_name"])
        cats.append(cat_of[im["id"]])
    if check_files:
        absent = [f for f in files if not (root / f).exists()]
        if absent:
            raise base.missing(
                spec,
                f"{len(absent)} images listed in the json files are missing (e.g. {absent[:3]})",
                root,
            )
    return files, cats


def _prepare_inat(spec, *, data_root, out_dir, seed, allow_download, opts):
    root = base.dataset_root(spec, data_root, opts)
    if not root.is_dir():
        raise base.missing(spec, "the iNaturalist 2018 folder is missing", root)
    strict = bool(opts.get("strict", True))
    tr = _read_json(spec, root / "train2018.json")
    va = _read_json(spec, root / "val2018.json")
    check_files = bool(opts.get("check_files", True))
    tr_files, tr_cats = _pairs(spec, tr, root, check_files)
    va_files, va_cats = _pairs(spec, va, root, check_files)
    cats = tr.get("categories") or []
    if not cats and (root / "categories.json").exists():
        cats = json.loads((root / "categories.json").read_text())
    names = {c["id"]: str(c.get("name", c["id"])) for c in cats}
    ids = sorted(set(tr_cats) | set(va_cats) | set(names))
    label = {c: i for i, c in enumerate(ids)}
    if strict and (len(tr_files), len(va_files), len(ids)) != (N_TRAIN, N_VAL, N_CLASSES):
        raise base.missing(
            spec,
            f"{len(tr_files)} train / {len(va_files)} val images, "
            f"{len(ids)} classes; expected {N_TRAIN} / {N_VAL} / {N_CLASSES}",
            root,
        )
    n_hold = int(opts.get("val_size", 10000))
    n_hold = min(n_hold, len(tr_files) // 5) if not strict else n_hold
    keep, hold = base.holdout_random(len(tr_files), count=n_hold, seed=seed)

    def entry(files, cs, rows):
        return {
            "files": [files[i] for i in rows],
            "labels": {"default": [label[cs[i]] for i in rows]},
        }

    index = {
        "kind": "files",
        "splits": {
            "train": entry(tr_files, tr_cats, keep),
            "val": entry(tr_files, tr_cats, hold),
            "test": entry(va_files, va_cats, range(len(va_files))),
        },
    }
    classes = {"default": [names.get(c, str(c)) for c in ids]}
    base.check_split_labels(spec, index, classes)
    return {
        "root": str(root),
        "classes": classes,
        "category_ids": ids,
        "index": base.write_index(out_dir, index),
        "split_sizes": base.split_sizes(index),
        "checks": {
            "strict": strict,
            "files_checked": check_files,
            "json_sha256": {
                f: base.file_sha256(root / f) for f in ("train2018.json", "val2018.json")
            },
        },
    }


base.register(
    base.DatasetSpec(
        "inat18",
        "inat",
        _prepare_inat,
        "iNaturalist 2018 (official json split); val = 10,000 seeded train hold-out; test = val2018",
        obtain=OBTAIN,
        subdir="inat2018",
    )
)
