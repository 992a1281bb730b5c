"""The machinery every dataset shares: the registry, manifests, the index, the two Dataset
classes and the fixed hold-out rules.

A *manifest* (``out_dir/manifest.json``, small JSON) says what a prepared dataset is: its name,
where its files are (``root``), its class names per target, split sizes, normalisation, metric,
what was verified (file counts, official checksums) and the sha256 of its *index*.
The *index* (``out_dir/index.json.gz``, deterministic gzip) lists, per split, either image files
relative to ``root`` (file-backed datasets) or row numbers into array sources such as CIFAR
pickles (array-backed datasets), with one label list per target. Loading reads only the manifest
and the index, so nothing downstream touches data that preparation did not verify.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io as _io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from vcr import io
from vcr.errors import ConfigError, DatasetError
from vcr.names import TARGET_LABELS as TARGETS

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test", "trainval")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class DatasetSpec:
    """One dataset by name: how to prepare it and what it is.

    ``prepare(name, root, out_dir, seed, allow_download, opts) -> dict`` verifies (or generates)
    the data, writes the index into ``out_dir`` with :func:`write_index` and returns the manifest
    fields that are specific to the dataset (``classes``, ``root``, ``checks``...).
    """

    name: str
    family: str  # imagenet | subsets | cifar | transfer | inat | places | mini | toy
    prepare: Callable[..., dict]
    description: str
    obtain: str = ""  # how to obtain the data (printed in every DatasetError)
    subdir: str = ""  # default folder below data_root
    defaults: dict = field(default_factory=dict)


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    if spec.name in DATASETS:
        raise ValueError(f"dataset {spec.name!r} registered twice")
    DATASETS[spec.name] = spec
    return spec


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ConfigError(f"dataset={name!r}: unknown dataset; known: {sorted(DATASETS)}")
    return DATASETS[name]


def dataset_root(spec: DatasetSpec, data_root, opts: dict) -> Path:
    """Where a dataset's files are: ``opts['root']`` if given, else ``data_root/<subdir>``."""
    if opts.get("root"):
        return Path(opts["root"]).expanduser().resolve()
    if data_root is None:
        raise ConfigError(f"data_root: required to prepare dataset {spec.name!r}")
    return (Path(data_root).expanduser() / spec.subdir).resolve()


def missing(spec: DatasetSpec, what: str, where) -> DatasetError:
    """A DatasetError that says what is missing, where it was looked for and how to obtain it."""
    return DatasetError(
        f"dataset {spec.name!r}: {what}\n  looked in: {where}\n  how to obtain it: {spec.obtain}"
    )


# --------------------------------------------------------------------------- index files
def _gzip_bytes(payload: bytes) -> bytes:
    # mtime=0 and no file name: the same index gives the same bytes, so the manifest hash is
    # stable and re-preparing unchanged data leaves every file byte-identical.
    buf = _io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as fh:
        fh.write(payload)
    return buf.getvalue()


def write_index(out_dir, index: dict) -> dict:
    """Write ``out_dir/index.json.gz`` atomically (unless identical) and return its pointer."""
    data = _gzip_bytes(json.dumps(index, sort_keys=True, separators=(",", ":")).encode())
    path = Path(out_dir) / "index.json.gz"
    if not (path.exists() and path.read_bytes() == data):
        io.write_bytes(path, data)
    return {"file": "index.json.gz", "sha256": hashlib.sha256(data).hexdigest()}


@lru_cache(maxsize=16)
def _read_index_cached(path: str, sha: str) -> dict:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    return json.loads(raw)


def read_index(manifest: dict) -> dict:
    path = Path(manifest["_dir"]) / manifest["index"]["file"]
    if not path.exists():
        raise DatasetError(
            f"dataset {manifest['name']!r}: index {path} is missing; re-run "
            f"workflow_scripts/prepare_data.py --dataset {manifest['name']}"
        )
    return _read_index_cached(str(path), manifest["index"]["sha256"])


def file_sha256(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def file_md5(path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- manifests
def resolve_manifest(manifest) -> dict:
    """Accept a manifest path (file or its folder) or an already-read manifest dict."""
    if isinstance(manifest, dict):
        if "_dir" not in manifest:
            raise ConfigError("manifest: a dict manifest must come from read_manifest()")
        return manifest
    path = Path(manifest)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.exists():
        raise DatasetError(
            f"manifest {path} does not exist: prepare the dataset first "
            "(python workflow_scripts/prepare_data.py --dataset NAME --data-root DIR --out DIR)"
        )
    m = io.read_json(path)
    if m.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"manifest {path}: format_version {m.get('format_version')} != {FORMAT_VERSION}; "
            "re-run prepare_data.py"
        )
    m["_dir"] = str(path.parent.resolve())
    return m


read_manifest = resolve_manifest


def manifest_root(manifest: dict) -> Path:
    root = manifest["root"]
    return Path(manifest["_dir"]) if root == "." else Path(root)


def split_sizes(index: dict) -> dict:
    sizes = {s: len(index["splits"][s]["labels"]["default"]) for s in ("train", "val", "test")}
    sizes["trainval"] = sizes["train"] + sizes["val"]
    return sizes


def finish_manifest(spec: DatasetSpec, fields: dict, *, seed: int, opts: dict) -> dict:
    """Complete a dataset's manifest fields with what every manifest has."""
    classes = fields["classes"]
    if "default" not in classes:
        raise AssertionError(f"{spec.name}: prepare() returned no default classes")
    m = {
        "format_version": FORMAT_VERSION,
        "name": spec.name,
        "family": spec.family,
        "description": spec.description,
        "seed": int(seed),
        "opts": {k: v for k, v in sorted(opts.items()) if k != "root"},
        "num_classes": {t: len(c) for t, c in classes.items()},
        "metric": "top1",
        "image_size": 224,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
    }
    m.update(fields)
    return m


def check_split_labels(spec: DatasetSpec, index: dict, classes: dict) -> None:
    """Every split present, non-empty, labels in range: a malformed index never gets a manifest."""
    for split in ("train", "val", "test"):
        entry = index["splits"].get(split)
        if entry is None or not entry["labels"].get("default"):
            raise DatasetError(f"dataset {spec.name!r}: split {split!r} is empty after preparation")
        for target, labels in entry["labels"].items():
            k = len(classes[target])
            if labels and (min(labels) < 0 or max(labels) >= k):
                raise DatasetError(
                    f"dataset {spec.name!r}: split {split!r} target {target!r} has labels outside "
                    f"0..{k - 1}"
                )
        n = len(entry["labels"]["default"])
        for key in ("files", "rows"):
            if key in entry and len(entry[key]) != n:
                raise DatasetError(f"dataset {spec.name!r}: split {split!r} {key}/labels differ")


def prepare_dataset(
    name: str, *, data_root=None, out_dir, seed: int = 0, allow_download: bool = False, **opts
) -> Path:
    """Verify (or, for mini datasets, generate) dataset ``name`` and write ``out_dir/manifest.json``.

    Raises :class:`DatasetError` (what is missing, where it was looked for, how to obtain it)
    and leaves no manifest when anything is missing or corrupt. Re-running on unchanged data
    rewrites nothing (same bytes), so Snakemake sees the manifest as up to date.
    """
    spec = get_spec(name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "manifest.json"
    opts = {**spec.defaults, **opts}
    try:
        fields = spec.prepare(
            spec,
            data_root=data_root,
            out_dir=out_dir,
            seed=seed,
            allow_download=allow_download,
            opts=opts,
        )
        manifest = finish_manifest(spec, fields, seed=seed, opts=opts)
    except BaseException:
        # A stale manifest from an earlier success must not vouch for data that is now gone.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(manifest_path)
        raise
    text = json.dumps(manifest, indent=2, sort_keys=True, default=io._json_default) + "\n"
    if not (manifest_path.exists() and manifest_path.read_text() == text):
        io.write_text(manifest_path, text)
    return manifest_path


def dataset_info(manifest, target: str = "default") -> dict:
    """``num_classes``, ``image_size``, ``mean``, ``std``, ``split_sizes``, ``metric`` (+ names)."""
    m = resolve_manifest(manifest)
    target = _check_target(m, target)
    return {
        "name": m["name"],
        "num_classes": m["num_classes"][target],
        "class_names": m["classes"][target],
        "image_size": m["image_size"],
        "mean": tuple(m["mean"]),
        "std": tuple(m["std"]),
        "split_sizes": dict(m["split_sizes"]),
        "metric": m["metric"],
    }


def _check_target(m: dict, target: str) -> str:
    if target not in TARGETS:
        raise ConfigError(f"target={target!r}: expected one of {TARGETS}")
    if target not in m["classes"]:
        raise ConfigError(
            f"target={target!r}: dataset {m['name']!r} has targets {sorted(m['classes'])}"
        )
    return target


# --------------------------------------------------------------------------- datasets
class ImageFileDataset:
    """Images on disk (any PIL-readable file) with integer labels; a torch-style Dataset."""

    def __init__(self, root, files, labels, transform=None):
        self.root = Path(root)
        self.files = list(files)
        self.targets = np.asarray(labels, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.root / self.files[i]) as im:
            img = im.convert("RGB")
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[i])


class ArrayImageDataset:
    """Decoded uint8 images (N, H, W, 3) kept in memory with integer labels.

    ``images``/``targets`` are public so that fast CPU loops (the mini pipeline) can batch the
    whole array with tensor ops instead of going through PIL one image at a time.
    """

    def __init__(self, images: np.ndarray, labels, transform=None):
        self.images = images
        self.targets = np.asarray(labels, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        from PIL import Image

        img = Image.fromarray(self.images[i])
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[i])


class ArrayDataset:
    """Plain feature vectors (two-moons): returns (float32 tensor, label)."""

    def __init__(self, x: np.ndarray, labels, transform=None):
        self.x = np.asarray(x, dtype=np.float32)
        self.targets = np.asarray(labels, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        import torch

        x = torch.from_numpy(self.x[i])
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.targets[i])


ARRAY_READERS: dict[str, Callable[[str], np.ndarray]] = {}


def array_reader(kind: str):
    def deco(fn):
        ARRAY_READERS[kind] = fn
        return fn

    return deco


@lru_cache(maxsize=32)
def _load_array_source(kind: str, path: str, stamp: tuple) -> np.ndarray:
    # Decoded once per process and kept: loading a mini split is an in-memory slice.
    return ARRAY_READERS[kind](path)


def _array(manifest: dict, source: dict) -> np.ndarray:
    """A source is one or more files of one kind, concatenated in order (CIFAR-10's batches)."""
    keys = []
    for rel in source["paths"]:
        path = manifest_root(manifest) / rel
        if not path.exists():
            raise DatasetError(
                f"dataset {manifest['name']!r}: source {path} listed in the manifest is missing; "
                "re-run prepare_data.py"
            )
        st = path.stat()
        keys.append((source["kind"], str(path), (st.st_size, st.st_mtime_ns)))
    if len(keys) == 1:
        return _load_array_source(*keys[0])
    return _concat_sources(tuple(keys))


@lru_cache(maxsize=4)
def _concat_sources(keys: tuple) -> np.ndarray:
    # CIFAR-10's five batches are concatenated once per process, not once per split load.
    return np.concatenate([_load_array_source(*k) for k in keys])


def _split_entries(index: dict, split: str) -> list[dict]:
    if split not in SPLITS:
        raise ConfigError(f"split={split!r}: expected one of {SPLITS}")
    if split == "trainval":
        return [index["splits"]["train"], index["splits"]["val"]]
    return [index["splits"][split]]


def load_dataset(name: str, split: str, *, manifest, transform=None, target: str = "default"):
    """The ``split`` of dataset ``name`` as a Dataset of ``(image, label)`` for ``target``.

    Images are PIL images when ``transform`` is None (torchvision convention), else whatever
    the transform returns. ``trainval`` = ``train`` followed by ``val``.
    """
    m = resolve_manifest(manifest)
    if m["name"] != name:
        raise ConfigError(f"dataset={name!r}: the manifest given is for {m['name']!r}")
    target = _check_target(m, target)
    index = read_index(m)
    entries = _split_entries(index, split)
    labels = [y for e in entries for y in e["labels"][target]]
    kind = index["kind"]
    if kind == "files":
        files = [f for e in entries for f in e["files"]]
        return ImageFileDataset(manifest_root(m), files, labels, transform)
    if kind in ("images", "vectors"):
        parts = []
        for e in entries:
            arr = _array(m, index["sources"][e["source"]])
            parts.append(arr[np.asarray(e["rows"], dtype=np.int64)])
        data = np.concatenate(parts) if len(parts) > 1 else parts[0]
        cls = ArrayImageDataset if kind == "images" else ArrayDataset
        return cls(data, labels, transform)
    raise DatasetError(f"dataset {name!r}: unknown index kind {kind!r}")


# --------------------------------------------------------------------------- hold-out rules
def holdout_fraction_ssl_transfer(n: int, valid_size: float = 0.2, seed: int = 0):
    """ssl-transfer's validation split: shuffle ``range(n)`` with ``np.random.seed(seed)`` and
    take the first ``floor(valid_size * n)`` as validation. Returns sorted (train, val) rows."""
    indices = np.arange(n)
    np.random.RandomState(seed).shuffle(indices)
    split = int(np.floor(valid_size * n))
    return np.sort(indices[split:]), np.sort(indices[:split])


def holdout_stratified(labels, *, seed: int, per_class: int | None = None, fraction=None):
    """A class-balanced hold-out: per class, a seeded permutation's first ``per_class`` rows
    (or ``round(fraction * n_c)``) go to validation. Returns sorted (train, val) rows."""
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    val = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        k = per_class if per_class is not None else int(round(fraction * len(idx)))
        if k >= len(idx):
            raise DatasetError(
                f"class {int(c)} has {len(idx)} training images: too few to hold out {k} for "
                "validation"
            )
        val.append(idx[:k])
    val = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


def holdout_random(n: int, *, count: int, seed: int):
    """A seeded random hold-out of ``count`` rows (for datasets with thousands of classes)."""
    perm = np.random.RandomState(seed).permutation(n)
    return np.sort(perm[count:]), np.sort(perm[:count])


def to_list(a) -> list[int]:
    return [int(v) for v in np.asarray(a).tolist()]


def image_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    x = images.reshape(-1, 3).astype(np.float64) / 255.0
    return [round(float(v), 4) for v in x.mean(0)], [round(float(v), 4) for v in x.std(0)]


def as_jsonable(obj: Any):
    return json.loads(json.dumps(obj, default=io._json_default))
