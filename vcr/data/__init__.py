"""Datasets by name: preparation/verification with manifests, loaders, mini data, transforms.

Public API (docs/CONTRACT.md §4): :func:`prepare_dataset`, :func:`load_dataset`,
:func:`dataset_info`, :func:`build_transform`, :data:`DATASETS`, :func:`two_moons`.
Importing this package imports numpy only (no torch, torchvision or timm).
"""

from vcr.data import cifar, imagenet, inat, mini, places, subsets, transfer  # noqa: F401 (register)
from vcr.data.base import (
    DATASETS,
    SPLITS,
    TARGETS,
    ArrayDataset,
    ArrayImageDataset,
    DatasetSpec,
    ImageFileDataset,
    dataset_info,
    load_dataset,
    prepare_dataset,
    read_manifest,
)
from vcr.data.mini import two_moons
from vcr.data.transforms import DeferredTransform, MultiView, build_transform

__all__ = [
    "DATASETS",
    "SPLITS",
    "TARGETS",
    "ArrayDataset",
    "ArrayImageDataset",
    "DatasetSpec",
    "ImageFileDataset",
    "MultiView",
    "DeferredTransform",
    "build_transform",
    "dataset_info",
    "load_dataset",
    "prepare_dataset",
    "read_manifest",
    "two_moons",
]
