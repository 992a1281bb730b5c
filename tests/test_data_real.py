"""The real-dataset loaders on tiny fakes in the exact on-disk layouts: ImageNet wnid folders +
wordnet.is_a.txt/words.txt (and the robustness subset algorithm on a fake hierarchy), the
torchvision layouts of Food-101, Stanford Cars, FGVC Aircraft, Oxford-IIIT Pets, Flowers102 and
DTD, iNaturalist 2018 json files and Places205 list files."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest

import vcr.data as vd
from vcr.data import base, imagenet, subsets
from vcr.errors import DatasetError

TIMINGS: dict[str, float] = {}


def _jpeg(seed: int = 0, size=(12, 10)) -> bytes:
    from PIL import Image

    rng = np.random.RandomState(seed)
    arr = rng.randint(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


JPEG = None


def _write(path: Path, data: bytes | None = None):
    global JPEG
    if JPEG is None:
        JPEG = _jpeg()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(JPEG if data is None else data)


def _prepare(name, **kw):
    t = time.perf_counter()
    m = vd.prepare_dataset(name, **kw)
    TIMINGS[name] = time.perf_counter() - t
    return m


def _check_loads(name, m, split="train", target="default"):
    ds = vd.load_dataset(name, split, manifest=m, target=target)
    img, y = ds[0]
    assert img.size == (12, 10) and 0 <= y < vd.dataset_info(m, target)["num_classes"]
    t = vd.build_transform("eval", image_size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    x, _ = vd.load_dataset(name, split, manifest=m, transform=t, target=target)[0]
    assert tuple(x.shape) == (3, 16, 16)
    return ds


# --------------------------------------------------------------------------- ImageNet
def make_fake_imagenet(root: Path, wnids, n_train=4, n_val=2, is_a=(), words=None):
    for w in wnids:
        for i in range(n_train):
            _write(root / "train" / w / f"{w}_{i + 1}.JPEG")
        for i in range(n_val):
            _write(root / "val" / w / f"ILSVRC2012_val_{w[1:]}{i}.JPEG")
    (root / "wordnet.is_a.txt").write_text("".join(f"{p} {c}\n" for p, c in is_a))
    words = words or {w: f"name of {w}, alias" for w in wnids}
    (root / "words.txt").write_text("".join(f"{w}\t{n}\n" for w, n in words.items()))
    return root


def test_imagenet_fake(tmp_path):
    wnids = [f"n0{i:07d}" for i in range(5)]
    make_fake_imagenet(tmp_path / "imagenet", wnids)
    m = _prepare(
        "imagenet", data_root=tmp_path, out_dir=tmp_path / "w", strict=False, val_per_class=1
    )
    info = vd.dataset_info(m)
    assert info["split_sizes"] == {"train": 15, "val": 5, "test": 10, "trainval": 20}
    assert info["class_names"][0] == "name of n00000000"
    ds = _check_loads("imagenet", m)
    assert sorted(set(ds.targets.tolist())) == list(range(5))
    # the hold-out does not depend on which classes are prepared (per-wnid seeds)
    a = imagenet.holdout(wnids[2], [f"{wnids[2]}_{i}.JPEG" for i in range(1, 5)], 1, 0)
    idx = base.read_index(base.read_manifest(m))
    assert f"train/{wnids[2]}/{a.pop()}" in idx["splits"]["val"]["files"]
    with pytest.raises(DatasetError, match="expected 1000, 1281167, 50000"):
        vd.prepare_dataset("imagenet", data_root=tmp_path, out_dir=tmp_path / "w")
    assert not (tmp_path / "w" / "manifest.json").exists()


def test_imagenet_flat_val_is_refused(tmp_path):
    root = tmp_path / "imagenet"
    _write(root / "train" / "n01" / "n01_1.JPEG")
    _write(root / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DatasetError, match="valprep"):
        vd.prepare_dataset("imagenet", data_root=tmp_path, out_dir=tmp_path / "w", strict=False)
    with pytest.raises(DatasetError, match="how to obtain it: register"):
        vd.prepare_dataset("imagenet", data_root=tmp_path / "none", out_dir=tmp_path / "w")


def test_imagenet_1pct_list(tmp_path):
    wnids = [f"n0{i:07d}" for i in range(3)]
    make_fake_imagenet(tmp_path / "imagenet", wnids, n_train=5)
    lst = tmp_path / "1pct.txt"
    lst.write_text(f"{wnids[0]}_1.JPEG\n{wnids[0]}_2.JPEG\n{wnids[1]}_3.JPEG\n{wnids[2]}_5.JPEG\n")
    m = _prepare(
        "imagenet_1pct",
        data_root=tmp_path,
        out_dir=tmp_path / "w",
        strict=False,
        subset_file=str(lst),
        val_per_class=2,
    )
    idx = base.read_index(base.read_manifest(m))
    train = idx["splits"]["train"]["files"]
    assert sorted(Path(f).name for f in train) == sorted(lst.read_text().split())
    assert not set(train) & set(idx["splits"]["val"]["files"])
    _check_loads("imagenet_1pct", m)
    # strict: the official sha256 of SimCLR's 1percent.txt is required
    with pytest.raises(DatasetError, match="not SimCLR's 1percent.txt"):
        vd.prepare_dataset(
            "imagenet_1pct",
            data_root=tmp_path,
            out_dir=tmp_path / "w2",
            strict=True,
            subset_file=str(lst),
        )
    lst.write_text(f"{wnids[0]}_99.JPEG\n")
    with pytest.raises(DatasetError, match="not in train/"):
        vd.prepare_dataset(
            "imagenet_1pct",
            data_root=tmp_path,
            out_dir=tmp_path / "w3",
            strict=False,
            subset_file=str(lst),
        )


def test_shipped_1pct_list_if_present():
    path = imagenet.SHIPPED_1PCT
    if not path.exists():
        pytest.skip("the SimCLR 1% list is not shipped in this checkout")
    lines = path.read_text().split()
    from collections import Counter

    assert len(lines) == 12811 and base.file_sha256(path) == imagenet.ONE_PCT_SHA256
    assert Counter(Counter(ln.split("_")[0] for ln in lines).values()) == {13: 811, 12: 189}


# --------------------------------------------------------------------------- robustness subsets
def _fake_hierarchy(counts: dict[str, int], extra_lines=()):
    """ImageNet classes n9AAAABBB under each superclass A with counts[A] children, via an
    intermediate node; returns (is_a lines, in_wnids)."""
    lines, in_wnids = list(extra_lines), []
    for a, (sup, k) in enumerate(counts.items()):
        mid = f"n8{a:07d}"
        lines.append(f"{sup} {mid}")
        for j in range(k):
            w = f"n9{a:03d}{j:04d}"
            lines.append(f"{mid} {w}")
            in_wnids.append(w)
    return lines, in_wnids


def test_subset_balancing_reproduces_the_documented_counts():
    # mixed_10-like: 10 superclasses, smallest has 6 -> 60 subclasses (VCR Table 2)
    counts = dict(zip(subsets.SUPERCLASSES["mixed_10"], [20, 15, 9, 7, 10, 8, 7, 7, 7, 6]))
    lines, in_wnids = _fake_hierarchy(counts)
    h = subsets.Hierarchy(lines, in_wnids)
    ranges, report = h.get_subclasses(subsets.SUPERCLASSES["mixed_10"])
    assert sum(map(len, ranges)) == 60 and report["ndesc_min"] == 6 and not report["overlap_found"]
    # lowest ImageNet indices first (indices = sorted-wnid order)
    dog = sorted(h.index[w] for w in in_wnids if w.startswith("n9000"))
    assert ranges[0] == set(dog[:6])
    unbalanced, _ = h.get_subclasses(subsets.SUPERCLASSES["mixed_10"], balanced=False)
    assert sum(map(len, unbalanced)) == sum(counts.values())


def test_last_parent_line_wins():
    lines = ["nA n1", "nB n1", "nA n2"]  # n1 listed under nA then nB: robustness keeps nB
    h = subsets.Hierarchy(lines, ["n1", "n2"])
    assert h.count_in("nB") == 1 and h.count_in("nA") == 1
    h2 = subsets.Hierarchy(["nB n1", "nA n1", "nA n2"], ["n1", "n2"])
    assert h2.count_in("nA") == 2 and h2.count_in("nB") == 0


def _big12_like(dog_parent_last: str):
    """big_12's 12 superclasses with 20+ classes each; dog under canine under carnivore
    (plus one sea-lion-like carnivore with a lower index than every dog)."""
    sup = subsets.SUPERCLASSES["big_12"]
    dog, carnivore = "n02084071", "n02075296"
    counts = {s: 25 for s in sup if s not in (dog, carnivore)}
    counts["n02469914"] = 20  # primate, the smallest (as in the real hierarchy)
    lines, in_wnids = _fake_hierarchy(counts)
    # carnivore: 1 own class (lowest index) + 30 others; dog: 40 breeds
    lines += [f"{carnivore} n0000001", "n02083346 n02084071x"]
    in_wnids += ["n0000001"]
    for j in range(30):
        lines.append(f"{carnivore} n7000{j:04d}")
        in_wnids.append(f"n7000{j:04d}")
    domestic, canine = "n01317541", "n02083346"
    lines.append(f"{carnivore} {canine}")
    order = [domestic, canine] if dog_parent_last == "canine" else [canine, domestic]
    lines += [f"{p} {dog}" for p in order]
    for j in range(40):
        lines.append(f"{dog} n0100{j:04d}")
        in_wnids.append(f"n0100{j:04d}")
    return subsets.Hierarchy(lines, in_wnids), sup


def test_big12_dog_carnivore_overlap_is_detected_and_resolved():
    h, sup = _big12_like("canine")
    with pytest.raises(DatasetError, match="overlap"):
        h.get_subclasses(sup, overlap="error")
    ranges, report = h.get_subclasses(sup)  # default: nearest superclass
    assert report["overlap_found"] and report["rule"] == "nearest"
    assert sum(map(len, ranges)) == 240
    dog_i, carn_i = sup.index("n02084071"), sup.index("n02075296")
    assert not ranges[dog_i] & ranges[carn_i]
    assert all(h.chains[w][0] not in () for w in h.in_wnids)
    # without the overlap (dog's last parent is domestic animal) the rule changes nothing
    h2, _ = _big12_like("domestic")
    r_err, rep2 = h2.get_subclasses(sup, overlap="error")
    r_near, _ = h2.get_subclasses(sup, overlap="nearest")
    assert r_err == r_near and not rep2["overlap_found"] and sum(map(len, r_err)) == 240


def test_living9_fake_end_to_end(tmp_path):
    sup = subsets.SUPERCLASSES["living_9"]
    counts = dict(zip(sup, [10, 9, 12, 8, 9, 8, 11, 8, 8]))  # min 8 -> 72 subclasses
    lines, in_wnids = _fake_hierarchy(counts)
    make_fake_imagenet(
        tmp_path / "imagenet", in_wnids, n_train=2, n_val=1, is_a=[ln.split() for ln in lines]
    )
    m = _prepare(
        "living_9", data_root=tmp_path, out_dir=tmp_path / "w", strict=False, val_per_class=1
    )
    man = base.read_manifest(m)
    assert man["num_classes"] == {"default": 9, "super": 9, "sub": 72}
    assert man["checks"]["subclasses"] == 72
    assert man["split_sizes"] == {"train": 72, "val": 72, "test": 72, "trainval": 144}
    sub = _check_loads("living_9", m, target="sub").targets
    sup_ = vd.load_dataset("living_9", "train", manifest=m, target="super").targets
    assert sorted(set(sub.tolist())) == list(range(72)) and np.bincount(sup_).tolist() == [8] * 9
    (tmp_path / "imagenet" / "wordnet.is_a.txt").unlink()
    with pytest.raises(DatasetError, match="wordnet.is_a.txt is missing"):
        vd.prepare_dataset("living_9", data_root=tmp_path, out_dir=tmp_path / "w", strict=False)
    assert not (tmp_path / "w" / "manifest.json").exists()


# --------------------------------------------------------------------------- transfer datasets
def _savemat(path: Path, d):
    from scipy.io import savemat

    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), d)


def make_fake_food101(root: Path):
    base_ = root / "food-101"
    classes = ["apple_pie", "baby_back_ribs", "sushi"]
    meta = {}
    for part, n in (("train", 5), ("test", 2)):
        meta[part] = {c: [f"{c}/{part}{i}" for i in range(n)] for c in classes}
        for c in classes:
            for i in range(n):
                _write(base_ / "images" / c / f"{part}{i}.jpg")
        (base_ / "meta").mkdir(parents=True, exist_ok=True)
        (base_ / "meta" / f"{part}.json").write_text(json.dumps(meta[part]))


def make_fake_cars(root: Path):
    b = root / "stanford_cars"
    names = np.array(["AM General Hummer SUV 2000", "Acura RL Sedan 2012"], dtype=object)
    _savemat(b / "devkit" / "cars_meta.mat", {"class_names": names.reshape(1, -1)})
    for part, n, mat in (
        ("train", 6, b / "devkit" / "cars_train_annos.mat"),
        ("test", 3, b / "cars_test_annos_withlabels.mat"),
    ):
        rec = np.zeros((1, n), dtype=[("fname", "O"), ("class", "O")])
        for i in range(n):
            rec[0, i] = (f"{i:05d}.jpg", np.array([[i % 2 + 1]], dtype=np.uint8))
            _write(b / f"cars_{part}" / f"{i:05d}.jpg")
        _savemat(mat, {"annotations": rec})


def make_fake_aircraft(root: Path):
    d = root / "fgvc-aircraft-2013b" / "data"
    variants = ["707-320", "A300B4", "Cessna 172"]
    d.mkdir(parents=True, exist_ok=True)
    (d / "variants.txt").write_text("".join(v + "\n" for v in variants))
    k = 0
    for part in ("train", "val", "test"):
        lines = []
        for v in variants:
            for _ in range(2):
                k += 1
                lines.append(f"{1000000 + k} {v}\n")
                _write(d / "images" / f"{1000000 + k}.jpg")
        (d / f"images_variant_{part}.txt").write_text("".join(lines))


def make_fake_pets(root: Path):
    b = root / "oxford-iiit-pet"
    breeds = ["Abyssinian", "american_bulldog", "Bengal"]
    for part, n in (("trainval", 5), ("test", 2)):
        lines = []
        for ci, br in enumerate(breeds):
            for i in range(n):
                iid = f"{br}_{part}{i}"
                lines.append(f"{iid} {ci + 1} {1 if br[0].isupper() else 2} 1\n")
                _write(b / "images" / f"{iid}.jpg")
        (b / "annotations").mkdir(parents=True, exist_ok=True)
        (b / "annotations" / f"{part}.txt").write_text("".join(lines))


def make_fake_flowers(root: Path):
    b = root / "flowers-102"
    labels = np.array([1, 2, 3] * 4)  # 12 images, 3 classes
    for i in range(1, 13):
        _write(b / "jpg" / f"image_{i:05d}.jpg")
    _savemat(b / "imagelabels.mat", {"labels": labels.reshape(1, -1)})
    _savemat(
        b / "setid.mat",
        {
            "trnid": np.array([[1, 2, 3, 4, 5, 6]]),
            "valid": np.array([[7, 8, 9]]),
            "tstid": np.array([[10, 11, 12]]),
        },
    )


def make_fake_dtd(root: Path):
    d = root / "dtd" / "dtd"
    classes = ["banded", "blotchy", "zigzagged"]
    for part in ("train", "val", "test"):
        lines = []
        for c in classes:
            for i in range(2):
                lines.append(f"{c}/{c}_{part}{i}.jpg\n")
                _write(d / "images" / c / f"{c}_{part}{i}.jpg")
        (d / "labels").mkdir(parents=True, exist_ok=True)
        (d / "labels" / f"{part}1.txt").write_text("".join(lines))


TRANSFER_FAKES = {
    "food101": (make_fake_food101, {"train": 12, "val": 3, "test": 6}, 3),
    "cars": (make_fake_cars, {"train": 5, "val": 1, "test": 3}, 2),
    "aircraft": (make_fake_aircraft, {"train": 6, "val": 6, "test": 6}, 3),
    "pets": (make_fake_pets, {"train": 12, "val": 3, "test": 6}, 3),
    "flowers": (make_fake_flowers, {"train": 6, "val": 3, "test": 3}, 102),  # fixed names
    "dtd": (make_fake_dtd, {"train": 6, "val": 6, "test": 6}, 3),
}


@pytest.mark.parametrize("name", sorted(TRANSFER_FAKES))
def test_transfer_fake_through_torchvision_layout(name, tmp_path):
    make, sizes, k = TRANSFER_FAKES[name]
    make(tmp_path)
    m = _prepare(name, data_root=tmp_path, out_dir=tmp_path / "w", strict=False)
    info = vd.dataset_info(m)
    assert {s: info["split_sizes"][s] for s in sizes} == sizes and info["num_classes"] == k
    assert info["metric"] == (
        "mean_per_class" if name in ("aircraft", "pets", "flowers") else "top1"
    )
    _check_loads(name, m)
    man = base.read_manifest(m)
    if name in ("food101", "cars", "pets"):
        # ssl-transfer's 20% hold-out: np.random.seed(0) shuffle, first floor(0.2 n) rows
        n = sizes["train"] + sizes["val"]
        idx = list(range(n))
        np.random.seed(0)
        np.random.shuffle(idx)
        assert man["checks"]["val_holdout"]["val_rows"] == sorted(idx[: int(np.floor(0.2 * n))])
    # strict: official split sizes (and, for Flowers102, torchvision's md5 of the .mat files)
    with pytest.raises(DatasetError, match="expected|corrupted"):
        vd.prepare_dataset(name, data_root=tmp_path, out_dir=tmp_path / "strict")
    assert not (tmp_path / "strict" / "manifest.json").exists()


def test_transfer_missing_image_and_missing_dataset(tmp_path):
    make_fake_dtd(tmp_path)
    next((tmp_path / "dtd" / "dtd" / "images" / "banded").iterdir()).unlink()
    with pytest.raises(DatasetError, match="listed images are missing"):
        vd.prepare_dataset("dtd", data_root=tmp_path, out_dir=tmp_path / "w", strict=False)
    with pytest.raises(DatasetError) as e:
        vd.prepare_dataset(
            "cars", data_root=tmp_path, out_dir=tmp_path / "w2", strict=False, allow_download=True
        )
    assert "stanford_cars" in str(e.value) and "torchvision cannot download it" in str(e.value)
    assert not (tmp_path / "w2" / "manifest.json").exists()


# --------------------------------------------------------------------------- iNat, Places
def make_fake_inat(root: Path):
    r = root / "inat2018"
    cats = [{"id": i, "name": f"Species {i}", "supercategory": "Plantae"} for i in (3, 7, 11)]
    k = 0
    for part, n in (("train2018", 6), ("val2018", 2)):
        images, anns = [], []
        for c in cats:
            for _ in range(n):
                k += 1
                fn = f"train_val2018/Plantae/{c['id']}/{k:08x}.jpg"
                _write(r / fn)
                images.append({"id": k, "file_name": fn, "width": 12, "height": 10})
                anns.append({"id": k, "image_id": k, "category_id": c["id"]})
        r.mkdir(parents=True, exist_ok=True)
        (r / f"{part}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats})
        )


def test_inat18_fake(tmp_path):
    make_fake_inat(tmp_path)
    m = _prepare("inat18", data_root=tmp_path, out_dir=tmp_path / "w", strict=False, val_size=3)
    info = vd.dataset_info(m)
    assert info["split_sizes"] == {"train": 15, "val": 3, "test": 6, "trainval": 18}
    assert info["class_names"] == ["Species 3", "Species 7", "Species 11"]
    ds = _check_loads("inat18", m, split="test")
    assert ds.targets.tolist() == [0, 0, 1, 1, 2, 2]  # sorted category ids -> 0..K-1
    (tmp_path / "inat2018" / "val2018.json").write_text("{not json")
    with pytest.raises(DatasetError, match="val2018.json is corrupt"):
        vd.prepare_dataset("inat18", data_root=tmp_path, out_dir=tmp_path / "w", strict=False)
    assert not (tmp_path / "w" / "manifest.json").exists()


def make_fake_places(root: Path):
    r = root / "places205"
    classes = ["a/abbey", "b/bamboo_forest", "k/kitchen"]
    for part, n in (("train", 5), ("val", 2)):
        lines = []
        for ci, c in enumerate(classes):
            for i in range(n):
                rel = f"{c}/gsun_{part}{i}.jpg"
                _write(r / "images256" / rel)
                lines.append(f"{rel} {ci}\n")
        (r / "trainvalsplit_places205").mkdir(parents=True, exist_ok=True)
        (r / "trainvalsplit_places205" / f"{part}_places205.csv").write_text("".join(lines))


def test_places205_fake(tmp_path):
    make_fake_places(tmp_path)
    m = _prepare("places205", data_root=tmp_path, out_dir=tmp_path / "w", strict=False, val_size=3)
    info = vd.dataset_info(m)
    assert info["split_sizes"] == {"train": 12, "val": 3, "test": 6, "trainval": 15}
    assert info["class_names"] == ["abbey", "bamboo_forest", "kitchen"]
    _check_loads("places205", m)
    with pytest.raises(DatasetError, match="expected 205 classes"):
        vd.prepare_dataset("places205", data_root=tmp_path, out_dir=tmp_path / "s")
    (tmp_path / "places205" / "trainvalsplit_places205" / "val_places205.csv").unlink()
    with pytest.raises(DatasetError, match="val_places205.csv is missing"):
        vd.prepare_dataset("places205", data_root=tmp_path, out_dir=tmp_path / "w", strict=False)
    assert not (tmp_path / "w" / "manifest.json").exists()


def test_zz_report_fake_preparation_times():
    """Not an assertion about speed: prints each fake's preparation time for the report."""
    assert TIMINGS, "the fake tests above record their preparation times"
    print(
        "\nfake preparation times: "
        + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in sorted(TIMINGS.items()))
    )
