"""Frozen-backbone features, extracted once per (run, dataset, label set, split) and cached.

Every probe and every λ of the L-BFGS sweep reads the same cache file, so a backbone pass over a
split happens once. What is cached: ``backbone(x)`` for the eval transform of the dataset, i.e.
``vcr.models.load_backbone`` output = the penultimate (pooled) features; for SSL runs that is the
backbone output, not the projector (``save_backbone`` drops the projector/classifier).

Cache format (``torch.save`` of a dict, written atomically by ``vcr.io.torch_save``)::

    {"features": float32 (N, D), "labels": int64 (N,), "meta": {"n", "feature_dim", "key", ...}}

Stored as **float32** (default ``cache_dtype``): a cache hit then gives bit-identical probe
results to a fresh extraction, and the largest paper-scale split (Places205 train, 2.4M x 2048)
is 20 GB, held once in host memory (filled in place, never concatenated from chunks).
``cache_dtype="float16"`` halves that; features are returned as float32 either way.

A cache is reused only when its ``key`` matches (the backbone file's size + SHA-256 prefix and
the transform settings, see :func:`backbone_key`) and its length equals the dataset's; otherwise
it is recomputed and replaced, so a re-trained backbone never reads stale features.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch

from vcr import io
from vcr.cli import resolve_device
from vcr.errors import ConfigError
from vcr.runlog import TaskProgress

CACHE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def backbone_key(path) -> str:
    """Identity of a backbone file (size + SHA-256 prefix) for cache validation."""
    path = Path(path)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return f"{path.stat().st_size}-{h.hexdigest()[:16]}"


def _load_cache(cache: Path, n: int, key: str | None):
    if not cache.is_file():
        return None
    try:
        blob = torch.load(cache, map_location="cpu", weights_only=True)
    except Exception:  # a corrupt cache is recomputed, never trusted
        return None
    meta = blob.get("meta", {})
    if meta.get("n") != n or (key is not None and meta.get("key") != key):
        return None
    return blob["features"].float(), blob["labels"].long()


def _array_batches(dataset, mean, std, batch_size):
    """Fast path for in-memory uint8 image arrays at their native size: the eval transform is
    then ToTensor + Normalize, applied to whole batches with tensor ops instead of PIL."""
    from vcr.data.loading import normalized_batch

    images, targets = dataset.images, dataset.targets
    for i in range(0, len(targets), batch_size):
        x = normalized_batch(images[i : i + batch_size], mean, std)
        yield x, torch.as_tensor(targets[i : i + batch_size])


def auto_workers(num_workers: int) -> int:
    """``num_workers < 0`` means: one DataLoader worker per available CPU but one, at most 8
    (JPEG decoding + bicubic resizing dominate extraction on the paper's datasets)."""
    if num_workers >= 0:
        return int(num_workers)
    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        ncpu = os.cpu_count() or 1
    return min(8, max(0, ncpu - 1))


def _loader_batches(dataset, batch_size, num_workers):
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=auto_workers(num_workers)
    )
    for x, y in loader:
        yield x, torch.as_tensor(y)


@torch.no_grad()
def extract_features(
    backbone: torch.nn.Module,
    dataset,
    *,
    batch_size: int = 256,
    device=None,
    cache=None,
    key: str | None = None,
    cache_dtype: str = "float32",
    num_workers: int = 0,
    array_normalize: tuple | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, y)``: float32 features (N, D) of ``backbone`` (frozen, eval mode) over ``dataset``
    (which already applies its eval transform) and int64 labels, read from / written to
    ``cache`` when given.

    ``array_normalize=(mean, std)`` enables the in-memory fast path for datasets exposing
    ``images`` (N, H, W, 3 uint8) and ``targets`` whose transform would be the identity-size eval
    transform; the caller decides that (see :func:`run_features`).
    """
    if cache_dtype not in CACHE_DTYPES:
        raise ConfigError(f"cache_dtype={cache_dtype!r}: expected one of {sorted(CACHE_DTYPES)}")
    n = len(dataset)
    if cache is not None:
        hit = _load_cache(Path(cache), n, key)
        if hit is not None:
            return hit
    dev = resolve_device(device)
    was_training = backbone.training
    backbone.eval().to(dev)
    if array_normalize is not None:
        batches = _array_batches(dataset, *array_normalize, batch_size)
    else:
        batches = _loader_batches(dataset, batch_size, num_workers)
    # One (N, D) host array, filled batch by batch: no list of chunks beside a concatenated copy
    # (Places205 train: 2.4M x 2048 float32 = 20 GB once, not twice).
    X = torch.zeros(0, 0)
    y = torch.empty(n, dtype=torch.long)
    row, bad = 0, 0
    where = f" -> {Path(cache).parent.name}/{Path(cache).name}" if cache is not None else ""
    progress = TaskProgress(f"features{where}", math.ceil(n / batch_size), unit="batch")
    for xb, yb in batches:
        f = backbone(xb.to(dev, non_blocking=True))
        if f.ndim != 2:
            raise ValueError(
                f"backbone returned features of shape {tuple(f.shape)}; expected (N, D): "
                "load it with vcr.models.load_backbone (num_classes=0, pooled output)"
            )
        if row == 0:
            X = torch.empty(n, f.shape[1], dtype=CACHE_DTYPES[cache_dtype])
        if row + len(f) > n:
            raise ValueError(f"the loader gave more than the dataset's {n} samples")
        finite = torch.isfinite(f)
        if not finite.all():
            bad += int(finite.numel() - finite.count_nonzero())
        X[row : row + len(f)] = f.float().cpu()
        y[row : row + len(f)] = yb.long().reshape(-1)
        row += len(f)
        progress.update()
    progress.close()
    backbone.train(was_training)
    if row != n:
        raise ValueError(f"the loader gave {row} of the dataset's {n} samples")
    if bad:
        raise FloatingPointError(
            f"backbone produced {bad} non-finite feature values "
            f"on a dataset of {n} samples (cache {cache})"
        )
    if cache is not None:
        blob = {
            "features": X,
            "labels": y,
            "meta": {"n": n, "feature_dim": int(X.shape[1]), "key": key, "dtype": cache_dtype},
        }
        io.torch_save(blob, cache)
    return X.float(), y  # float16 caches: the rounded values a later cache hit reads too


def cache_path(cache_dir, dataset: str, target: str, split: str) -> Path:
    """``<cache_dir>/<dataset>-<target>/<split>.pt`` (cache_dir is per run, e.g.
    ``work/<scale>/features/<run relpath>``)."""
    return Path(cache_dir) / f"{dataset}-{target}" / f"{split}.pt"


class RunFeatures:
    """Features of one run's backbone on several datasets/splits, sharing one loaded backbone.

    ``get(dataset, split, manifest=..., target=..., resize_size=0)`` -> ``(X, y)``; the eval
    transform is ``vcr.data.build_transform("eval", image_size=info["image_size"], ...)``:
    bicubic resize of the shorter side (to ``resize_size``, e.g. 256, else to the crop) + center
    crop to the dataset's side (224 for the paper's datasets; native 32 px for mini/CIFAR, where
    the transform is the identity and the fast array path is used).
    """

    def __init__(
        self,
        run_dir,
        *,
        cache_dir=None,
        device=None,
        batch_size: int = 256,
        num_workers: int = -1,
        cache_dtype: str = "float32",
        fast_array_loader: bool = True,
    ):
        self.run_dir = Path(run_dir)
        self.backbone_path = self.run_dir / "backbone.pt"
        if not self.backbone_path.is_file():
            raise FileNotFoundError(
                f"no backbone at {self.backbone_path}: run workflow_scripts/pretrain.py "
                f"--out {self.run_dir} first (backbone.pt is written last, on success)"
            )
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.run_dir / "features"
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.cache_dtype = cache_dtype
        # False: in-memory arrays too go through the DataLoader and its workers (the rehearsal
        # runs the paper datasets' extraction path on mini data)
        self.fast_array_loader = bool(fast_array_loader)
        self._backbone = None
        self._key = None

    @classmethod
    def from_settings(cls, run_dir, settings: dict, *, cache_dir=None, device=None) -> RunFeatures:
        """From the ``--set`` settings every evaluation shares (``extract_batch_size``,
        ``extract_workers``, ``cache_dtype``, ``fast_array_loader``)."""
        return cls(
            run_dir,
            cache_dir=cache_dir,
            device=device,
            batch_size=settings["extract_batch_size"],
            num_workers=settings["extract_workers"],
            cache_dtype=settings["cache_dtype"],
            fast_array_loader=settings.get("fast_array_loader", True),
        )

    @property
    def backbone(self) -> torch.nn.Module:
        if self._backbone is None:
            from vcr.models import load_backbone

            self._backbone = load_backbone(self.backbone_path, map_location="cpu")
        return self._backbone

    @staticmethod
    def _info(manifest, target):
        from vcr.data import dataset_info

        return dataset_info(manifest, target)

    def key(self, **settings) -> str:
        if self._key is None:
            self._key = backbone_key(self.backbone_path)
        return self._key + json.dumps(settings, sort_keys=True, default=str)

    def dataset(
        self, name: str, split: str, *, manifest, target: str = "default", resize_size=None
    ):
        """The eval-transformed dataset and whether the fast array path applies."""
        from vcr.data import DeferredTransform, build_transform, dataset_info, load_dataset

        info = dataset_info(manifest, target)
        tf = DeferredTransform(
            build_transform,
            "eval",
            image_size=info["image_size"],
            resize_size=resize_size,
            mean=info["mean"],
            std=info["std"],
        )
        ds = load_dataset(name, split, manifest=manifest, transform=tf, target=target)
        native = (
            self.fast_array_loader
            and hasattr(ds, "images")
            and hasattr(ds, "targets")
            and getattr(ds.images, "ndim", 0) == 4
            and ds.images.shape[1] == ds.images.shape[2] == info["image_size"]
        )
        return ds, info, ((info["mean"], info["std"]) if native else None)

    def get(self, name: str, split: str, *, manifest, target: str = "default", resize_size=0):
        from vcr.data.transforms import probe_resize

        info = self._info(manifest, target)
        resize = probe_resize(int(info["image_size"]), resize_size)
        ds, info, fast = self.dataset(
            name, split, manifest=manifest, target=target, resize_size=resize
        )
        path = cache_path(self.cache_dir, name, target, split)
        extra = (
            {"resize_size": resize} if resize else {}
        )  # the resize-to-crop keys stay as they were
        key = self.key(
            dataset=name,
            target=target,
            split=split,
            image_size=info["image_size"],
            **extra,
            dtype=self.cache_dtype,
            # a re-prepared dataset (new manifest) must not reuse old features
            manifest=hashlib.sha256(Path(manifest).read_bytes()).hexdigest()[:16],
        )
        return extract_features(
            self.backbone,
            ds,
            batch_size=self.batch_size,
            device=self.device,
            cache=path,
            key=key,
            cache_dtype=self.cache_dtype,
            num_workers=self.num_workers,
            array_normalize=fast,
        )
