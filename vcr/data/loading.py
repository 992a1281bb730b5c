"""Data loading for training: the epoch sampler, per-sample seeded transforms, the batched path
for in-memory uint8 arrays, and the trainer's assembly of a run's splits and loaders.

Guarantees (they make resume bit-identical on CPU):
- the sample order of an epoch is a pure function of (seed, epoch) and every rank slices the
  same global batch, so W processes see what one process sees;
- each sample's augmentation is drawn from its own generator seeded by (seed, epoch, index),
  independent of workers and of where a run stopped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vcr.data.transforms import ssl_views
from vcr.errors import ConfigError, DatasetError
from vcr.preemption import ignore_stop_signals, kill_workers_at_exit


def channel_stats(values) -> torch.Tensor:
    """Per-channel mean or std as a (1, C, 1, 1) float32 tensor."""
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


def unit_batch(images: np.ndarray) -> torch.Tensor:
    """uint8 images (N, H, W, C) -> float32 (N, C, H, W) in [0, 1] (ToTensor on a batch)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Normalize on a batch; ``mean``/``std`` from :func:`channel_stats`."""
    return (x - mean) / std


def normalized_batch(images: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 images (N, H, W, C) -> the eval transform at native size (ToTensor + Normalize)."""
    return normalize(unit_batch(images), channel_stats(mean), channel_stats(std))


def sample_seed(seed: int, epoch: int, index: int, copy: int = 0) -> int:
    """The seed of one sample's augmentation: a pure function, so resume and workers agree.
    ``copy`` numbers the repeats of an image in one epoch (repeated augmentation)."""
    return (
        seed * 1_000_003 + epoch * 7_919_000_009 + index * 2_654_435_761 + copy * 40_503_001_543
    ) % (2**63 - 1)


class EpochBatchSampler(torch.utils.data.Sampler):
    """Batches of ``(epoch, index)`` for this rank; the order is a pure function of (seed,
    epoch). Every rank slices the SAME global batch, so W processes see what one process sees.
    ``set_epoch(epoch, start_step)`` starts mid-epoch (resume skips the batches done)."""

    def __init__(self, num_samples, global_batch, *, seed, rank=0, world_size=1, max_steps=0):
        if global_batch % world_size:
            raise ConfigError(
                f"batch_size={global_batch} is not divisible by the world size {world_size}"
            )
        self.num_samples, self.global_batch = num_samples, global_batch
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.per_rank = global_batch // world_size
        steps = num_samples // global_batch
        self.steps = min(steps, max_steps) if max_steps else steps
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0):
        self.epoch, self.start_step = epoch, start_step

    def __len__(self):
        return self.steps - self.start_step

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.num_samples, generator=g).tolist()
        lo = self.rank * self.per_rank
        for step in range(self.start_step, self.steps):
            chunk = perm[step * self.global_batch : (step + 1) * self.global_batch]
            yield [(self.epoch, i) for i in chunk[lo : lo + self.per_rank]]


class RepeatedAugmentationSampler(EpochBatchSampler):
    """torchvision's ``RASampler`` (references/classification/sampler.py), resumable.

    torchvision repeats each image of the epoch's permutation ``reps`` times in a row and deals
    the list round-robin to the W ranks, each keeping ~N/W samples: step s's global batch is the
    contiguous slice ``[s*B, (s+1)*B)`` of the repeated list, whatever W, and the copies of an
    image land on different ranks. Here the permutation is a pure function of (seed, epoch), as
    in :class:`EpochBatchSampler` (torchvision seeds with seed + epoch), rank r takes every W-th
    item of the global batch (torchvision's dealing), and each item is ``(epoch, index, copy)``
    so every copy draws its own augmentation (:func:`sample_seed`). An epoch has
    ``N // B`` steps, as without repeats: it sees ~N / reps distinct images.
    """

    def __init__(self, num_samples, global_batch, *, reps, seed, rank=0, world_size=1, max_steps=0):
        if reps < 1:
            raise ConfigError(f"ra_reps={reps}: repeated augmentation needs >= 1 copies")
        super().__init__(
            num_samples,
            global_batch,
            seed=seed,
            rank=rank,
            world_size=world_size,
            max_steps=max_steps,
        )
        self.reps = int(reps)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.num_samples, generator=g)
        for step in range(self.start_step, self.steps):
            pos = torch.arange(step * self.global_batch, (step + 1) * self.global_batch)
            mine = pos[self.rank :: self.world_size]  # torchvision deals item p to rank p % W
            yield [(self.epoch, int(perm[p // self.reps]), int(p % self.reps)) for p in mine]


def epoch_sampler(num_samples, recipe, *, seed, rank=0, world_size=1) -> EpochBatchSampler:
    """The training sampler of a recipe: repeated augmentation where ``ra_reps`` asks for it."""
    kw = dict(seed=seed, rank=rank, world_size=world_size, max_steps=recipe.max_steps_per_epoch)
    if recipe.ra_reps:
        return RepeatedAugmentationSampler(
            num_samples, recipe.batch_size, reps=recipe.ra_reps, **kw
        )
    return EpochBatchSampler(num_samples, recipe.batch_size, **kw)


def split_key(key) -> tuple[int, int, int]:
    """A sampler item -> ``(epoch, index, copy)``: ``index``, ``(epoch, index)`` or
    ``(epoch, index, copy)``."""
    if not isinstance(key, tuple):
        return 0, int(key), 0
    if len(key) == 2:
        return int(key[0]), int(key[1]), 0
    return int(key[0]), int(key[1]), int(key[2])


class SeededSamples(torch.utils.data.Dataset):
    """Wraps a dataset of (image, label) and applies ``transform`` under a per-sample seed.

    The global torch and python RNG states are restored afterwards, so with ``num_workers=0``
    the model's own randomness (dropout, drop-path, mixup) is not disturbed by data loading.
    """

    def __init__(self, dataset, transform, seed):
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index, copy = split_key(key)
        image, label = self.dataset[index]
        if self.transform is None:
            return image, label
        s = sample_seed(self.seed, epoch, index, copy)
        t_state, p_state = torch.get_rng_state(), random.getstate()
        try:
            torch.default_generator.manual_seed(s)
            random.seed(s)
            return self.transform(image), label
        finally:
            torch.set_rng_state(t_state)
            random.setstate(p_state)


def is_uint8_array(ds) -> bool:
    """A dataset held in memory as ``images`` (N, H, W, 3) uint8 and ``targets``."""
    images = getattr(ds, "images", None)
    return (
        images is not None
        and getattr(images, "dtype", None) == np.uint8
        and images.ndim == 4
        and images.shape[-1] == 3
        and hasattr(ds, "targets")
    )


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised (uint64 in, well-mixed uint64 out; wraps mod 2^64)."""
    with np.errstate(over="ignore"):
        x = np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


class ArrayBatches:
    """Batched fast path for in-memory uint8 images (mini, CIFAR: ``images`` (N, H, W, 3)).

    Computes exactly the ``train_cifar`` transform (4-px zero padding, random crop, horizontal
    flip, ToTensor, Normalize) or the native-size ``eval`` transform (ToTensor, Normalize) on
    whole batches with tensor ops, instead of one PIL image at a time (the mini pipeline's data
    time drops ~10x). Per-sample crop offsets and flips are a hash of (seed, epoch, index), so
    they are the same whatever the world size or where a run resumed. ``recipe
    fast_array_loader=false`` takes the per-sample PIL path instead.
    """

    PAD = 4

    TRANSFORMS = ("train_cifar", "eval", "ssl")  # "ssl": two views of transforms.ssl_views

    def __init__(
        self, ds, batches, mean, std, *, transform: str, seed: int = 0, ssl_augment="vicreg"
    ):
        from vcr.data.transforms import ssl_augment_named

        if transform not in self.TRANSFORMS:
            raise ValueError(f"ArrayBatches transform={transform!r}: one of {self.TRANSFORMS}")
        self.images, self.targets = ds.images, torch.as_tensor(np.asarray(ds.targets))
        self.batches, self.transform, self.seed = batches, transform, seed
        self.mean, self.std = channel_stats(mean), channel_stats(std)
        self.augment = ssl_augment_named(ssl_augment)

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for keys in self.batches:
            items = [split_key(k) for k in keys]
            epoch = items[0][0] if items else 0
            idx = np.array([i for _, i, _ in items], dtype=np.int64)
            copies = np.array([c for _, _, c in items], dtype=np.uint64)
            x = unit_batch(self.images[idx])
            if self.transform == "ssl":
                g = torch.Generator().manual_seed(
                    int(_mix64(np.uint64(self.seed * 1_000_003 + epoch) ^ _mix64(idx[0])))
                    & (2**63 - 1)
                )
                views = [ssl_views(x, g, self.augment) for _ in range(2)]
                yield [normalize(v, self.mean, self.std) for v in views], self.targets[idx]
                continue
            if self.transform == "train_cifar":
                x = self._crop_flip(x, epoch, idx, copies)
            yield normalize(x, self.mean, self.std), self.targets[idx]

    def _crop_flip(self, x, epoch, idx, copies=None):
        n, _, h, w = x.shape
        p = self.PAD
        salt = idx.astype(np.uint64)
        if copies is not None:  # repeated augmentation: copy c > 0 gets a key of its own
            salt = np.where(copies > 0, salt ^ _mix64(copies + np.uint64(0x5EED)), salt)
        key = _mix64(salt ^ _mix64(np.uint64(self.seed * 1_000_003 + epoch)))
        dy = torch.from_numpy((key % np.uint64(2 * p + 1)).astype(np.int64))
        dx = torch.from_numpy(((key >> np.uint64(8)) % np.uint64(2 * p + 1)).astype(np.int64))
        flip = torch.from_numpy(((key >> np.uint64(16)) & np.uint64(1)).astype(bool))
        padded = F.pad(x, (p, p, p, p))
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (n, 1, h, 1)
        cols = dx[:, None] + torch.arange(w)
        cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]  # (n, 1, 1, w)
        b = torch.arange(n)[:, None, None, None]
        c = torch.arange(x.shape[1])[None, :, None, None]
        return padded[b, c, rows, cols]


# --------------------------------------------------------------------------------------------
# a run's splits and loaders


@dataclass
class DataBundle:
    """The datasets of a run (tests may pass one directly instead of a manifest)."""

    train: Any
    val: Any = None
    test: Any = None
    num_classes: int = 0
    metric: str = "top1"
    # set by build_data: lets in-memory uint8 arrays take the batched fast path
    train_kind: str = ""
    eval_native: bool = False
    mean: tuple = ()
    std: tuple = ()


def build_data(spec, recipe, manifest) -> tuple[DataBundle, Any, Any]:
    """Load a run's splits through ``vcr.data``; returns (bundle, train tf, eval tf)."""
    from vcr.data import dataset_info, load_dataset
    from vcr.data.transforms import (
        DeferredTransform,
        resolved_sizes,
        run_transform,
        train_transform_kind,
    )

    if manifest is None or not Path(manifest).is_file():
        raise DatasetError(
            f"--manifest {manifest}: no such file; prepare it with "
            f"`python workflow_scripts/prepare_data.py --dataset {spec.dataset} ...`"
        )
    info = dataset_info(manifest, target=spec.target)
    native = int(info["image_size"])
    # Built on first use: the batched array path (mini, CIFAR) never calls them, and then
    # torchvision (~1.2 s of imports per process) is never imported.
    train_tf, eval_tf = (
        DeferredTransform(run_transform, recipe, spec.method, info, which)
        for which in ("train", "eval")
    )
    splits = {
        s: load_dataset(spec.dataset, s, manifest=manifest, target=spec.target)
        for s in ("train", "val", "test")
    }
    bundle = DataBundle(
        **splits,
        num_classes=int(info["num_classes"]),
        metric=info.get("metric", "top1"),
        train_kind=train_transform_kind(recipe.train_transform, spec.method, native),
        eval_native=resolved_sizes(recipe, native)[2] == info["image_size"],
        mean=tuple(info["mean"]),
        std=tuple(info["std"]),
    )
    return bundle, train_tf, eval_tf


def build_loaders(bundle: DataBundle, recipe, *, seed, rank, world_size, device, train_tf, eval_tf):
    """(sampler, train loader, {"val": loader, "test": loader}) for this rank.

    In-memory uint8 arrays at their native size take :class:`ArrayBatches` (``train_cifar``,
    no augmentation, or the batched SSL views); everything else a DataLoader over
    :class:`SeededSamples`. Each rank evaluates a strided share of val/test (the trainer sums
    the counts over ranks).
    """
    if recipe.num_workers:
        kill_workers_at_exit()  # the workers ignore SIGTERM (ignore_stop_signals)
    sampler = epoch_sampler(len(bundle.train), recipe, seed=seed, rank=rank, world_size=world_size)
    fast = recipe.fast_array_loader and bundle.mean
    native_kind = bundle.train_kind == "train_cifar" or (
        bundle.train_kind in ("eval", "ssl") and bundle.eval_native
    )
    pin = device.type == "cuda"
    if fast and native_kind and is_uint8_array(bundle.train):
        train_loader = ArrayBatches(
            bundle.train,
            sampler,
            bundle.mean,
            bundle.std,
            transform=bundle.train_kind,
            seed=seed,
            ssl_augment=recipe.ssl_augment,
        )
    else:
        workers = recipe.num_workers
        train_loader = torch.utils.data.DataLoader(
            SeededSamples(bundle.train, train_tf, seed),
            batch_sampler=sampler,
            num_workers=workers,
            pin_memory=pin,
            persistent_workers=workers > 0,
            # own generator: creating an iterator must not draw from the global RNG (resume)
            generator=torch.Generator().manual_seed(seed),
            # SLURM signals every process of the step: the stop signals are the trainer's
            worker_init_fn=ignore_stop_signals,
        )
    eval_loaders = {}
    eval_bs = recipe.eval_batch_size or recipe.batch_size // world_size
    for split in ("val", "test"):
        ds = getattr(bundle, split)
        if ds is None:
            continue
        idx = list(range(rank, len(ds), world_size))
        if fast and bundle.eval_native and is_uint8_array(ds):
            batches = [idx[i : i + eval_bs] for i in range(0, len(idx), eval_bs)]
            eval_loaders[split] = ArrayBatches(
                ds, batches, bundle.mean, bundle.std, transform="eval"
            )
            continue
        eval_loaders[split] = torch.utils.data.DataLoader(
            torch.utils.data.Subset(SeededSamples(ds, eval_tf, seed), idx),
            batch_size=eval_bs,
            shuffle=False,
            num_workers=recipe.num_workers,
            pin_memory=pin,
            generator=torch.Generator().manual_seed(seed),
            worker_init_fn=ignore_stop_signals,
        )
    return sampler, train_loader, eval_loaders


def build_mixup(recipe, num_classes: int):
    """torchvision's MixUp/CutMix (one of the two per batch), or None."""
    if recipe.mixup_alpha <= 0 and recipe.cutmix_alpha <= 0:
        return None
    from torchvision.transforms import v2

    choices = []
    if recipe.mixup_alpha > 0:
        choices.append(v2.MixUp(alpha=recipe.mixup_alpha, num_classes=num_classes))
    if recipe.cutmix_alpha > 0:
        choices.append(v2.CutMix(alpha=recipe.cutmix_alpha, num_classes=num_classes))
    return choices[0] if len(choices) == 1 else v2.RandomChoice(choices)
