"""ImageNet-1k and the SimCLR ImageNet-1% subset, from the standard folder layout.

Layout under ``data_root/imagenet/`` (``root=`` overrides): ``train/<wnid>/*.JPEG`` (1000
folders, 1,281,167 images) and ``val/<wnid>/*.JPEG`` (50,000 images; the flat official val must
first be sorted into wnid folders, e.g. with the usual ``valprep.sh``). The hierarchy files that
the robustness subsets need, ``wordnet.is_a.txt`` and ``words.txt``, sit beside ``train/``.

Splits: ``test`` = the official val set (what the paper reports); ``val`` = a fixed hold-out of
``val_per_class`` (10) train images per class, drawn per class with
``RandomState([seed, crc32(wnid)])`` so that every ImageNet-derived dataset (1%, the robustness
subsets) holds out the very same images; ``train`` = the rest.

ImageNet-1%: SimCLR's ``imagenet_subsets/1percent.txt`` (12,811 file names, 811 classes x 13 +
189 x 12). The list is looked for at ``opts['subset_file']``, then ``vcr/data/imagenet_1pct.txt``
(shipped when available), then ``<root>/1percent.txt``; strict preparation checks its official
sha256 (from TFDS's checksums.tsv for that URL). ``train`` = the listed images; ``val`` = the
same 10/class hold-out (never overlapping the list); ``test`` = official val.
"""

from __future__ import annotations

import os
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from vcr.data import base

N_TRAIN, N_VAL, N_CLASSES = 1281167, 50000, 1000
ONE_PCT_SHA256 = "71e82a48ba78252683ae334c4d019ebd5c6e855b9599c1389fbe83eb9549cf17"
ONE_PCT_LINES = 12811
SHIPPED_1PCT = Path(__file__).with_name("imagenet_1pct.txt")
OBTAIN = (
    "register at https://image-net.org, download ILSVRC2012 train and val, extract them to "
    "data_root/imagenet/train/<wnid>/ and data_root/imagenet/val/<wnid>/ (sort val into wnid "
    "folders with valprep.sh); nothing can be downloaded automatically (licence)"
)
OBTAIN_1PCT = (
    "the ImageNet-1% list is google-research/simclr imagenet_subsets/1percent.txt (12,811 "
    "lines); put it at vcr/data/imagenet_1pct.txt or data_root/imagenet/1percent.txt or pass "
    "--set subset_file=PATH. " + OBTAIN
)
IMG_EXT = (".jpeg", ".jpg", ".png")


def _list_images(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_file() and e.name.lower().endswith(IMG_EXT))


def scan(spec, root: Path, *, strict: bool) -> dict:
    """wnids (sorted = class index order) and the train/val files of every class."""
    train, val = root / "train", root / "val"
    for d in (train, val):
        if not d.is_dir():
            raise base.missing(spec, f"folder {d.name}/ is missing", root)
    wnids = sorted(e.name for e in os.scandir(train) if e.is_dir())
    if not wnids:
        raise base.missing(spec, "train/ has no class folders", train)
    val_wnids = sorted(e.name for e in os.scandir(val) if e.is_dir())
    if not val_wnids:
        raise base.missing(
            spec,
            "val/ has no wnid folders (the official val is flat: sort it into "
            "val/<wnid>/ first, e.g. with valprep.sh)",
            val,
        )
    if val_wnids != wnids:
        extra = sorted(set(val_wnids) ^ set(wnids))[:5]
        raise base.missing(spec, f"train/ and val/ class folders differ (e.g. {extra})", root)
    files = {"train": {}, "val": {}}
    for w in wnids:
        for part, d in (("train", train), ("val", val)):
            names = _list_images(d / w)
            if not names:
                raise base.missing(spec, f"class folder {part}/{w} has no images", d / w)
            files[part][w] = names
    n_tr = sum(map(len, files["train"].values()))
    n_va = sum(map(len, files["val"].values()))
    if strict and (len(wnids), n_tr, n_va) != (N_CLASSES, N_TRAIN, N_VAL):
        raise base.missing(
            spec,
            f"found {len(wnids)} classes, {n_tr} train and {n_va} val images; expected "
            f"{N_CLASSES}, {N_TRAIN}, {N_VAL} (strict=False accepts a partial copy)",
            root,
        )
    return {"wnids": wnids, "files": files, "counts": {"train": n_tr, "val": n_va}}


def read_words(path: Path) -> dict[str, str]:
    names = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if "\t" in line:
                w, n = line.rstrip("\n").split("\t", 1)
                names[w] = n
    return names


def class_names(root: Path, wnids) -> list[str]:
    words = root / "words.txt"
    table = read_words(words) if words.exists() else {}
    return [table.get(w, w).split(",")[0].strip() for w in wnids]


def holdout(wnid: str, names: list[str], per_class: int, seed: int, exclude=()) -> set[str]:
    """The fixed validation images of one class (seeded by the wnid, independent of subsets)."""
    pool = [n for n in names if n not in exclude]
    rng = np.random.RandomState([seed, zlib.crc32(wnid.encode())])
    if per_class >= len(pool):
        raise base.DatasetError(
            f"class {wnid} has {len(pool)} usable train images: too few to hold out {per_class}"
        )
    return {pool[i] for i in rng.permutation(len(pool))[:per_class]}


def build_splits(
    scanned: dict,
    class_rows: dict[str, dict],
    *,
    seed: int,
    per_class: int,
    train_lists: dict[str, list[str]] | None = None,
) -> dict:
    """Index splits for the classes in ``class_rows`` (wnid -> {target: label}).

    ``train_lists`` (wnid -> file names) restricts ``train`` (the 1% list); the validation
    hold-out never contains a listed file.
    """
    splits = {s: {"files": [], "labels": {}} for s in ("train", "val", "test")}
    targets = next(iter(class_rows.values())).keys()
    for s in splits:
        splits[s]["labels"] = {t: [] for t in targets}

    def add(split, rel_files, labels):
        splits[split]["files"] += rel_files
        for t, y in labels.items():
            splits[split]["labels"][t] += [y] * len(rel_files)

    for w, labels in class_rows.items():
        names = scanned["files"]["train"][w]
        listed = set(train_lists.get(w, [])) if train_lists is not None else set()
        val = holdout(w, names, per_class, seed, exclude=listed)
        train = sorted(listed) if train_lists is not None else [n for n in names if n not in val]
        add("train", [f"train/{w}/{n}" for n in train], labels)
        add("val", [f"train/{w}/{n}" for n in sorted(val)], labels)
        add("test", [f"val/{w}/{n}" for n in scanned["files"]["val"][w]], labels)
    return splits


def file_index(splits: dict) -> dict:
    return {"kind": "files", "splits": splits}


def _prepare_imagenet(spec, *, data_root, out_dir, seed, allow_download, opts):
    root = base.dataset_root(spec, data_root, opts)
    if not root.is_dir():
        raise base.missing(spec, "the ImageNet folder is missing", root)
    strict = bool(opts.get("strict", True))
    if spec.name == "imagenet_1pct":  # the cheap check first: the list, before the big scan
        one_pct = load_1pct_list(spec, root, opts, strict)
    scanned = scan(spec, root, strict=strict)
    wnids = scanned["wnids"]
    names = class_names(root, wnids)
    per_class = int(opts.get("val_per_class", 10))
    rows = {w: {"default": i} for i, w in enumerate(wnids)}
    checks = {"strict": strict, "counts": scanned["counts"], "classes": len(wnids)}
    lists = None
    if spec.name == "imagenet_1pct":
        lists = match_1pct(spec, root, one_pct[0], scanned)
        checks["subset"] = one_pct[1]
        rows = {w: rows[w] for w in wnids if w in lists}
    index = file_index(
        build_splits(scanned, rows, seed=seed, per_class=per_class, train_lists=lists)
    )
    classes = {"default": names}
    base.check_split_labels(spec, index, classes)
    return {
        "root": str(root),
        "classes": classes,
        "wnids": wnids,
        "index": base.write_index(out_dir, index),
        "split_sizes": base.split_sizes(index),
        "checks": checks,
    }


def find_1pct_file(root: Path, opts: dict) -> Path | None:
    for cand in (opts.get("subset_file"), SHIPPED_1PCT, root / "1percent.txt"):
        if cand and Path(cand).exists():
            return Path(cand)
    return None


def load_1pct_list(spec, root: Path, opts: dict, strict: bool):
    """(file names, info) of the 1% list; strict: SimCLR's exact file (sha256, 811x13+189x12)."""
    path = find_1pct_file(root, opts)
    if path is None:
        looked = [opts.get("subset_file"), SHIPPED_1PCT, root / "1percent.txt"]
        raise base.DatasetError(
            f"dataset {spec.name!r}: the ImageNet-1% list is missing\n  looked in: "
            f"{[str(p) for p in looked if p]}\n  how to obtain it: {OBTAIN_1PCT}"
        )
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    sha = base.file_sha256(path)
    per_class = Counter(ln.split("_")[0] for ln in lines)
    if strict:
        if sha != ONE_PCT_SHA256:
            raise base.DatasetError(
                f"dataset {spec.name!r}: {path} is not SimCLR's 1percent.txt (sha256 {sha} != "
                f"{ONE_PCT_SHA256}; strict=False accepts another list)\n  how to obtain it: "
                f"{OBTAIN_1PCT}"
            )
        hist = Counter(per_class.values())
        if len(lines) != ONE_PCT_LINES or hist != Counter({13: 811, 12: 189}):
            raise base.DatasetError(f"dataset {spec.name!r}: {path} has unexpected counts {hist}")
    info = {"file": str(path), "sha256": sha, "lines": len(lines), "classes": len(per_class)}
    return lines, info


def match_1pct(spec, root: Path, lines: list[str], scanned: dict) -> dict[str, list[str]]:
    """wnid -> listed file names; every listed file must be in train/."""
    lists: dict[str, list[str]] = {}
    train_files = scanned["files"]["train"]
    missing = []
    for ln in lines:
        w = ln.split("_")[0]
        if w not in train_files or ln not in set_cache(train_files, w):
            missing.append(ln)
        else:
            lists.setdefault(w, []).append(ln)
    if missing:
        raise base.missing(
            spec,
            f"{len(missing)} images of the 1% list are not in train/ (e.g. {missing[:3]})",
            root / "train",
        )
    return lists


_SETS: dict = {}


def set_cache(train_files: dict, w: str) -> set:
    key = (id(train_files), w)
    if key not in _SETS:
        _SETS[key] = set(train_files[w])
    return _SETS[key]


base.register(
    base.DatasetSpec(
        "imagenet",
        "imagenet",
        _prepare_imagenet,
        "ImageNet-1k: train minus 10/class val hold-out; test = official val",
        obtain=OBTAIN,
        subdir="imagenet",
    )
)
base.register(
    base.DatasetSpec(
        "imagenet_1pct",
        "imagenet",
        _prepare_imagenet,
        "SimCLR ImageNet-1% (12,811 labelled train images); val = 10/class hold-out; test = val",
        obtain=OBTAIN_1PCT,
        subdir="imagenet",
    )
)
