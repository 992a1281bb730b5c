"""The six linear-probe transfer datasets of Table 1 (Kornblith et al. / ssl-transfer protocol),
read through torchvision's dataset classes and their official splits.

torchvision's folder names under ``data_root``: ``food-101/``, ``stanford_cars/``,
``fgvc-aircraft-2013b/``, ``oxford-iiit-pet/``, ``flowers-102/``, ``dtd/dtd/``.
Preparation instantiates the torchvision class for every official split (so its own presence
checks, and Flowers102's md5 check of the .mat files, run), takes its file list and labels,
and writes them into our index; loading then reads those files directly.

Splits:
- official validation where it exists (Aircraft ``val``, Flowers ``val``, DTD partition-1
  ``val``);
- otherwise (Food-101, Cars, Pets) ``val`` = ssl-transfer's hold-out: ``np.random.seed(0)``
  shuffle of the official train (Pets: trainval) indices, first ``floor(0.2 * n)`` to val.
  The hold-out seed is ``holdout_seed`` (default 0, as ssl-transfer), not the run seed;
- ``test`` = the official test split.
Metric: mean per-class accuracy for Aircraft, Pets and Flowers; top-1 for Food, Cars and DTD.
Normalisation: ImageNet mean/std (the backbones are ImageNet-trained; ssl-transfer does so).
Download: only with ``allow_download`` and never for Cars (torchvision's URL is gone).
"""

from __future__ import annotations

from pathlib import Path

from vcr.data import base

# name: (torchvision class, folder, official splits -> our split, official sizes, metric, obtain)
TRANSFER = {
    "food101": (
        "Food101",
        "food-101",
        {"train": "train", "test": "test"},
        {"train": 75750, "test": 25250},
        "top1",
        "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/ (food-101.tar.gz), "
        "extract into data_root; or --allow-download",
    ),
    "cars": (
        "StanfordCars",
        "stanford_cars",
        {"train": "train", "test": "test"},
        {"train": 8144, "test": 8041},
        "top1",
        "Stanford Cars (cars_train/, cars_test/, devkit/, cars_test_annos_withlabels.mat) "
        "into data_root/stanford_cars/ (the original site is gone: use a mirror, e.g. the "
        "Kaggle copy); torchvision cannot download it",
    ),
    "aircraft": (
        "FGVCAircraft",
        "fgvc-aircraft-2013b",
        {"train": "train", "val": "val", "test": "test"},
        {"train": 3334, "val": 3333, "test": 3333},
        "mean_per_class",
        "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/ (fgvc-aircraft-2013b.tar.gz),"
        " extract into data_root; or --allow-download",
    ),
    "pets": (
        "OxfordIIITPet",
        "oxford-iiit-pet",
        {"train": "trainval", "test": "test"},
        {"train": 3680, "test": 3669},
        "mean_per_class",
        "https://www.robots.ox.ac.uk/~vgg/data/pets/ (images.tar.gz, annotations.tar.gz) into "
        "data_root/oxford-iiit-pet/; or --allow-download",
    ),
    "flowers": (
        "Flowers102",
        "flowers-102",
        {"train": "train", "val": "val", "test": "test"},
        {"train": 1020, "val": 1020, "test": 6149},
        "mean_per_class",
        "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ (102flowers.tgz, "
        "imagelabels.mat, setid.mat) into data_root/flowers-102/; or --allow-download",
    ),
    "dtd": (
        "DTD",
        "dtd",
        {"train": "train", "val": "val", "test": "test"},
        {"train": 1880, "val": 1880, "test": 1880},
        "top1",
        "https://www.robots.ox.ac.uk/~vgg/data/dtd/ (dtd-r1.0.1.tar.gz) extracted to "
        "data_root/dtd/dtd/; or --allow-download",
    ),
}
NUM_CLASSES = {"food101": 101, "cars": 196, "aircraft": 100, "pets": 37, "flowers": 102, "dtd": 47}


def _tv_class(name: str, strict: bool):
    import torchvision.datasets as tvd

    cls = getattr(tvd, TRANSFER[name][0])
    if name == "flowers" and not strict:
        # Flowers102 md5-checks its .mat files; a non-official copy (tests' fakes) has none.
        class _Flowers(cls):
            def _check_integrity(self):
                return self._images_folder.is_dir() and all(
                    (self._base_folder / f).exists()
                    for f, _ in (self._file_dict["label"], self._file_dict["setid"])
                )

        return _Flowers
    return cls


def _files_labels(name: str, ds) -> tuple[list[str], list[int], list[str]]:
    if name == "cars":
        files = [p for p, _ in ds._samples]
        labels = [int(y) for _, y in ds._samples]
    elif name == "pets":
        files, labels = ds._images, ds._labels
    else:
        files, labels = ds._image_files, ds._labels
    return [str(f) for f in files], [int(y) for y in labels], [str(c) for c in ds.classes]


def _prepare_transfer(spec, *, data_root, out_dir, seed, allow_download, opts):
    name = spec.name
    _, folder, official, sizes, metric, _ = TRANSFER[name]
    if data_root is None and not opts.get("root"):
        raise base.ConfigError(f"data_root: required to prepare dataset {name!r}")
    root = Path(opts.get("root") or data_root).expanduser().resolve()
    strict = bool(opts.get("strict", True))
    download = bool(allow_download) and name != "cars"
    cls = _tv_class(name, strict)
    kwargs = {"partition": int(opts.get("partition", 1))} if name == "dtd" else {}
    raw, classes = {}, None
    for ours, theirs in official.items():
        try:
            ds = cls(str(root), split=theirs, download=download, **kwargs)
        except (RuntimeError, FileNotFoundError, OSError, KeyError, ValueError) as e:
            raise base.missing(
                spec, f"torchvision {cls.__name__}(split={theirs!r}) failed: {e}", root / folder
            ) from None
        files, labels, cl = _files_labels(name, ds)
        classes = classes or cl
        if cl != classes:
            raise base.missing(spec, "class lists differ between splits", root / folder)
        absent = [f for f in files if not Path(f).exists()]
        if absent:
            raise base.missing(
                spec, f"{len(absent)} listed images are missing (e.g. {absent[:3]})", root / folder
            )
        raw[ours] = (files, labels)
    checks = {"strict": strict, "official_sizes": {k: len(v[0]) for k, v in raw.items()}}
    if strict:
        got = {k: len(v[0]) for k, v in raw.items()}
        if got != sizes or len(classes) != NUM_CLASSES[name]:
            raise base.missing(
                spec,
                f"split sizes {got} / {len(classes)} classes; expected "
                f"{sizes} / {NUM_CLASSES[name]}",
                root / folder,
            )
    if "val" not in raw:
        files, labels = raw["train"]
        hs = int(opts.get("holdout_seed", 0))
        tr, va = base.holdout_fraction_ssl_transfer(
            len(files), float(opts.get("valid_size", 0.2)), hs
        )
        raw["val"] = ([files[i] for i in va], [labels[i] for i in va])
        raw["train"] = ([files[i] for i in tr], [labels[i] for i in tr])
        checks["val_holdout"] = {
            "rule": "ssl-transfer np.random.seed(s) shuffle, first 20%",
            "seed": hs,
            "val_rows": base.to_list(va),
        }
    splits = {}
    for s, (files, labels) in raw.items():
        rel = [str(Path(f).resolve().relative_to(root)) for f in files]
        splits[s] = {"files": rel, "labels": {"default": labels}}
    index = {"kind": "files", "splits": splits}
    cls_ = {"default": classes}
    base.check_split_labels(spec, index, cls_)
    return {
        "root": str(root),
        "classes": cls_,
        "index": base.write_index(out_dir, index),
        "split_sizes": base.split_sizes(index),
        "metric": metric,
        "checks": checks,
    }


for _name, _t in TRANSFER.items():
    base.register(
        base.DatasetSpec(
            _name,
            "transfer",
            _prepare_transfer,
            f"{_t[0]} (torchvision layout), metric {_t[4]}",
            obtain=_t[5],
        )
    )
