"""CIFAR-10/100 from the official python pickles (with CIFAR-100's 20 coarse labels, which
torchvision ignores) and the long-tailed CIFAR-10-LT / CIFAR-100-LT of Cao et al. 2019.

Layout under ``data_root`` (torchvision's): ``cifar-10-batches-py/{data_batch_1..5,test_batch,
batches.meta}`` and ``cifar-100-python/{train,test,meta}``.

Splits
- ``test``: the official balanced test set (10,000 images).
- ``cifar10``/``cifar100``: ``val`` = a class-balanced, seeded 10% hold-out of the official train
  set (``val_fraction``), ``train`` = the rest.
- ``*_lt``: ``train`` = exactly the LDAM-DRW selection (``img_max * ratio**(c/(C-1))`` truncated
  by ``int()``; per class in label order, ``np.random.seed(seed)``-shuffled indices, first n_c
  kept): 12,406 / 10,847 images at ratio 100. ``val`` = a *balanced* set of ``lt_val_per_class``
  images per class drawn (seed+1) from the train images the LT selection did NOT keep, so model
  selection never sees the test set. The formula keeps every image of class 0 (n_0 = img_max),
  so class 0 has no leftovers: by default (``lt_val_head="shared"``) its validation images are
  drawn from its kept training images (train stays exactly the paper's 12,406/10,847; only
  the easiest, largest class is shared). ``lt_val_head="holdout"`` instead removes them from
  train (train = 12,406 - v), for a strictly disjoint validation set.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from vcr.data import base
from vcr.errors import DatasetError

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)

# Official md5s (as listed by torchvision.datasets.CIFAR10/100, which checks the same files).
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
CIFAR100_MD5 = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}
OBTAIN = (
    "download and extract the python version from https://www.cs.toronto.edu/~kriz/cifar.html "
    "(cifar-10-python.tar.gz / cifar-100-python.tar.gz) into data_root, or pass "
    "--allow-download to let torchvision fetch it"
)


# --------------------------------------------------------------------------- pickles
def unpickle(path) -> dict:
    """Read one CIFAR pickle (python-2 era, bytes keys) into a dict with str keys."""
    with open(path, "rb") as fh:
        d = pickle.load(fh, encoding="bytes")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def decode_images(data) -> np.ndarray:
    """(N, 3072) uint8 rows (R plane, G plane, B plane) -> (N, 32, 32, 3) uint8."""
    arr = np.asarray(data, dtype=np.uint8)
    if arr.ndim != 2 or arr.shape[1] % 3:
        raise DatasetError(f"CIFAR pickle: data has shape {arr.shape}, expected (N, 3*H*W)")
    side = int(round((arr.shape[1] // 3) ** 0.5))
    return np.ascontiguousarray(arr.reshape(-1, 3, side, side).transpose(0, 2, 3, 1))


@base.array_reader("cifar_pickle")
def read_pickle_images(path: str) -> np.ndarray:
    return decode_images(unpickle(path)["data"])


def _read_batch(spec, path: Path, label_keys) -> dict:
    if not path.exists():
        raise base.missing(spec, f"file {path.name} is missing", path.parent)
    try:
        d = unpickle(path)
        out = {"n": len(d["data"])}
        for key in label_keys:
            out[key] = np.asarray(d[key], dtype=np.int64)
            if len(out[key]) != out["n"]:
                raise ValueError(f"{key} has {len(out[key])} entries for {out['n']} images")
        decode_images(d["data"][:1])
    except DatasetError:
        raise
    except Exception as e:  # truncated/corrupt pickle, wrong keys
        raise base.missing(
            spec, f"file {path.name} is corrupt or not a CIFAR pickle ({e!r})", path
        ) from None
    return out


def _names(spec, path: Path, key: str) -> list[str]:
    if not path.exists():
        raise base.missing(spec, f"file {path.name} is missing", path.parent)
    try:
        return [n.decode() if isinstance(n, bytes) else str(n) for n in unpickle(path)[key]]
    except Exception as e:
        raise base.missing(spec, f"file {path.name} is corrupt ({e!r})", path) from None


def _verify_md5(spec, folder: Path, table: dict) -> dict:
    checked = {}
    for fname, md5 in table.items():
        got = base.file_md5(folder / fname)
        if got != md5:
            raise base.missing(
                spec,
                f"file {fname} fails its official md5 ({got} != {md5}): corrupt or not the "
                "official release (strict=False skips the official checks)",
                folder / fname,
            )
        checked[fname] = md5
    return checked


def _maybe_download(spec, root: Path, allow_download: bool, folder: str) -> None:
    if (root / folder).exists() or not allow_download:
        return
    import torchvision  # the licence lets anyone download CIFAR; only on request

    cls = torchvision.datasets.CIFAR100 if "100" in folder else torchvision.datasets.CIFAR10
    cls(str(root), train=True, download=True)


# --------------------------------------------------------------------------- long tail
def cao_img_num_per_cls(img_max: float, cls_num: int, imb_factor: float = 0.01) -> list[int]:
    """LDAM-DRW ``get_img_num_per_cls(cls_num, 'exp', imb_factor)``."""
    return [int(img_max * imb_factor ** (c / (cls_num - 1.0))) for c in range(cls_num)]


def cao_select(targets, img_num_per_cls, seed: int = 0) -> np.ndarray:
    """LDAM-DRW ``gen_imbalanced_data``: rows kept, in its order (class by class)."""
    targets = np.asarray(targets)
    rng = np.random.RandomState(seed)  # == np.random.seed(seed) then np.random.shuffle
    keep = []
    for c, n in zip(np.unique(targets), img_num_per_cls):
        idx = np.where(targets == c)[0]
        rng.shuffle(idx)
        keep.append(idx[:n])
    return np.concatenate(keep)


def long_tail_split(
    targets, *, ratio: float = 100.0, seed: int = 0, val_per_class: int, head_rule: str = "shared"
):
    """(train rows, val rows, per-class train counts) for a balanced pool ``targets``."""
    targets = np.asarray(targets)
    classes = np.unique(targets)
    counts = cao_img_num_per_cls(len(targets) / len(classes), len(classes), 1.0 / ratio)
    train = cao_select(targets, counts, seed)
    kept = np.zeros(len(targets), bool)
    kept[train] = True
    rng = np.random.RandomState(seed + 1)
    val, moved = [], []
    for c in classes:
        pool = np.flatnonzero((targets == c) & ~kept)
        rng.shuffle(pool)
        take = list(pool[:val_per_class])
        short = val_per_class - len(take)
        if short > 0:
            if head_rule not in ("shared", "holdout"):
                raise base.ConfigError(f"lt_val_head={head_rule!r}: expected 'shared' or 'holdout'")
            own = np.sort(train[targets[train] == c])
            rng.shuffle(own)
            take += list(own[:short])
            if head_rule == "holdout":
                moved += list(own[:short])
        val += take
    if moved:
        train = train[~np.isin(train, moved)]
    return train, np.sort(np.asarray(val, dtype=np.int64)), counts


# --------------------------------------------------------------------------- prepare


def pickle_index(train_paths, test_paths, train_rows, val_rows, n_test, labels) -> dict:
    """The split index of a dataset stored as CIFAR-style pickles (real CIFAR and the mini data):
    train and val are rows of the train pickles, test is every row of the test pickles.
    ``labels(source, rows)`` gives the per-target label lists of those rows."""
    return {
        "kind": "images",
        "sources": {
            "train": {"kind": "cifar_pickle", "paths": list(train_paths)},
            "test": {"kind": "cifar_pickle", "paths": list(test_paths)},
        },
        "splits": {
            "train": {
                "source": "train",
                "rows": base.to_list(train_rows),
                "labels": labels("train", train_rows),
            },
            "val": {
                "source": "train",
                "rows": base.to_list(val_rows),
                "labels": labels("train", val_rows),
            },
            "test": {
                "source": "test",
                "rows": list(range(n_test)),
                "labels": labels("test", np.arange(n_test)),
            },
        },
    }


def _prepare_cifar(spec, *, data_root, out_dir, seed, allow_download, opts):
    ten = spec.name.startswith("cifar10") and not spec.name.startswith("cifar100")
    root = base.dataset_root(spec, data_root, opts)
    folder_name = "cifar-10-batches-py" if ten else "cifar-100-python"
    _maybe_download(spec, root, allow_download, folder_name)
    folder = root / folder_name
    if not folder.is_dir():
        raise base.missing(spec, f"folder {folder_name}/ is missing", root)
    strict = bool(opts.get("strict", True))
    checks = {"files": "present, unpickled, label lengths match"}
    if ten:
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        test_files = ["test_batch"]
        keys = ("labels",)
        classes = {"default": _names(spec, folder / "batches.meta", "label_names")}
    else:
        train_files, test_files, keys = ["train"], ["test"], ("fine_labels", "coarse_labels")
        fine = _names(spec, folder / "meta", "fine_label_names")
        coarse = _names(spec, folder / "meta", "coarse_label_names")
        classes = {"default": fine, "sub": fine, "super": coarse}
    batches = {f: _read_batch(spec, folder / f, keys) for f in train_files + test_files}

    def labels_of(files):
        return {k: np.concatenate([batches[f][k] for f in files]) for k in keys}

    tr, te = labels_of(train_files), labels_of(test_files)
    n_train, n_test = len(tr[keys[0]]), len(te[keys[0]])
    if strict:
        if (n_train, n_test) != (50000, 10000):
            raise base.missing(
                spec,
                f"found {n_train} train / {n_test} test images, expected 50000 / 10000",
                folder,
            )
        checks["md5"] = _verify_md5(spec, folder, CIFAR10_MD5 if ten else CIFAR100_MD5)

    def tgt(lbl, rows):
        rows = np.asarray(rows)
        if ten:
            return {"default": base.to_list(lbl["labels"][rows])}
        return {
            "default": base.to_list(lbl["fine_labels"][rows]),
            "sub": base.to_list(lbl["fine_labels"][rows]),
            "super": base.to_list(lbl["coarse_labels"][rows]),
        }

    main = tr[keys[0]]
    extra = {}
    if spec.name.endswith("_lt"):
        v = int(opts.get("lt_val_per_class", 200 if ten else 20))
        train_rows, val_rows, counts = long_tail_split(
            main,
            ratio=float(opts.get("imbalance_ratio", 100)),
            seed=seed,
            val_per_class=v,
            head_rule=opts.get("lt_val_head", "shared"),
        )
        extra["lt_counts"] = counts
        extra["lt_rule"] = (
            "LDAM-DRW exp profile, per-class np.random.seed(seed) shuffle; val = "
            f"{v}/class from non-kept train images (seed+1), head rule {opts.get('lt_val_head', 'shared')}"
        )
    else:
        train_rows, val_rows = base.holdout_stratified(
            main, seed=seed, fraction=float(opts.get("val_fraction", 0.1))
        )
    index = pickle_index(
        [f"{folder_name}/{f}" for f in train_files],
        [f"{folder_name}/{f}" for f in test_files],
        train_rows,
        val_rows,
        n_test,
        lambda source, rows: tgt(tr if source == "train" else te, rows),
    )
    base.check_split_labels(spec, index, classes)
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if ten else (CIFAR100_MEAN, CIFAR100_STD)
    return {
        "root": str(root),
        "classes": classes,
        "index": base.write_index(out_dir, index),
        "split_sizes": base.split_sizes(index),
        "image_size": 32,
        "mean": list(mean),
        "std": list(std),
        "checks": {**checks, **extra, "strict": strict},
    }


for _name, _desc in [
    ("cifar10", "CIFAR-10 (official pickles), 10% seeded balanced val hold-out"),
    ("cifar100", "CIFAR-100 with fine (default/sub) and 20 coarse (super) labels"),
    ("cifar10_lt", "CIFAR-10-LT, ratio 100 (Cao et al.), balanced val from non-kept images"),
    ("cifar100_lt", "CIFAR-100-LT, ratio 100 (Cao et al.), balanced val from non-kept images"),
]:
    base.register(base.DatasetSpec(_name, "cifar", _prepare_cifar, _desc, obtain=OBTAIN))
