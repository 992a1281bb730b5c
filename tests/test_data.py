"""vcr.data: registry, CIFAR / CIFAR-LT on format-faithful fake pickles, mini data, two moons,
transforms, the prepare_data CLI. Real-dataset layouts (ImageNet, subsets, transfer, iNat,
Places) are in test_data_real.py."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import vcr.data as vd
from vcr.data import base, cifar, mini
from vcr.errors import ConfigError, DatasetError

ROOT = Path(__file__).resolve().parents[1]
CONTRACT_NAMES = {
    "imagenet", "imagenet_1pct", "living_9", "mixed_10", "mixed_13", "geirhos_16", "big_12",
    "cifar10", "cifar100", "cifar10_lt", "cifar100_lt", "food101", "cars", "aircraft", "pets",
    "flowers", "dtd", "inat18", "places205", "mini_objects", "mini_objects_lt",
    "mini_objects_1pct", "mini_color", "mini_texture", "mini_size", "mini_position",
    "mini_count", "mini_background", "mini_orientation", "digits", "two_moons",
}  # fmt: skip


def test_registry_has_exactly_the_contract_names():
    assert set(vd.DATASETS) == CONTRACT_NAMES


def test_import_is_cheap():
    code = "import sys, vcr.data; print('torch' in sys.modules, 'torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------- fake CIFAR
def _rows(n, seed):
    return np.random.RandomState(seed).randint(0, 256, size=(n, 3072), dtype=np.uint8)


def _dump(path: Path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)  # like the official python-2 era files


def make_fake_cifar10(root: Path, per_class_train=20, per_class_test=4):
    folder = root / "cifar-10-batches-py"
    labels = np.repeat(np.arange(10), per_class_train)
    np.random.RandomState(0).shuffle(labels)
    for b, chunk in enumerate(np.array_split(labels, 5), 1):
        _dump(folder / f"data_batch_{b}", {
            b"batch_label": f"training batch {b} of 5".encode(),
            b"labels": chunk.tolist(), b"data": _rows(len(chunk), b),
            b"filenames": [f"img_{b}_{i}.png".encode() for i in range(len(chunk))],
        })  # fmt: skip
    test_labels = np.repeat(np.arange(10), per_class_test).tolist()
    _dump(
        folder / "test_batch",
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": test_labels,
            b"data": _rows(len(test_labels), 9),
            b"filenames": [b"t.png"] * len(test_labels),
        },
    )
    _dump(
        folder / "batches.meta",
        {
            b"label_names": [f"c{i}".encode() for i in range(10)],
            b"num_cases_per_batch": 10000,
            b"num_vis": 3072,
        },
    )
    return folder


def make_fake_cifar100(root: Path, per_class_train=6, per_class_test=2):
    folder = root / "cifar-100-python"
    for part, per in (("train", per_class_train), ("test", per_class_test)):
        fine = np.repeat(np.arange(100), per)
        np.random.RandomState(1).shuffle(fine)
        _dump(folder / part, {
            b"filenames": [b"x.png"] * len(fine), b"batch_label": part.encode(),
            b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist(),
            b"data": _rows(len(fine), 2),
        })  # fmt: skip
    _dump(
        folder / "meta",
        {
            b"fine_label_names": [f"f{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"s{i}".encode() for i in range(20)],
        },
    )
    return folder


def test_cifar10_fake_through_real_loader(tmp_path):
    folder = make_fake_cifar10(tmp_path / "data")
    m = vd.prepare_dataset(
        "cifar10", data_root=tmp_path / "data", out_dir=tmp_path / "w", strict=False
    )
    info = vd.dataset_info(m)
    assert info["num_classes"] == 10 and info["image_size"] == 32
    assert info["split_sizes"] == {"train": 180, "val": 20, "test": 40, "trainval": 200}
    ds = vd.load_dataset("cifar10", "train", manifest=m)
    img, y = ds[3]
    assert img.size == (32, 32) and 0 <= y < 10
    # pixel layout: row r of the pickle is R plane, G plane, B plane
    raw = cifar.unpickle(folder / "data_batch_1")
    assert json.loads(Path(m).read_text())["index"]["file"] == "index.json.gz"
    arr = cifar.decode_images(raw["data"])
    assert arr[0, 0, 1, 0] == raw["data"][0][1] and arr[0, 0, 0, 1] == raw["data"][0][1024]
    # val and train are disjoint rows of the same pool, balanced 2/class
    idx = base.read_index(base.read_manifest(m))
    tr, va = idx["splits"]["train"]["rows"], idx["splits"]["val"]["rows"]
    assert (
        not set(tr) & set(va)
        and np.bincount(idx["splits"]["val"]["labels"]["default"]).tolist() == [2] * 10
    )
    assert len(vd.load_dataset("cifar10", "trainval", manifest=m)) == 200


def test_cifar100_coarse_labels(tmp_path):
    make_fake_cifar100(tmp_path)
    m = vd.prepare_dataset("cifar100", data_root=tmp_path, out_dir=tmp_path / "w", strict=False)
    assert vd.dataset_info(m, "super")["num_classes"] == 20
    assert vd.dataset_info(m, "sub")["num_classes"] == 100
    fine = vd.load_dataset("cifar100", "test", manifest=m, target="sub").targets
    coarse = vd.load_dataset("cifar100", "test", manifest=m, target="super").targets
    assert (coarse == fine // 5).all()  # the fake's fine->coarse map survives the loader
    with pytest.raises(ConfigError, match="target"):
        vd.load_dataset("cifar100", "test", manifest=m, target="coarse")


def test_strict_cifar_checks_official_counts_and_md5(tmp_path):
    make_fake_cifar10(tmp_path)
    with pytest.raises(DatasetError, match="expected 50000 / 10000"):
        vd.prepare_dataset("cifar10", data_root=tmp_path, out_dir=tmp_path / "w")
    assert not (tmp_path / "w" / "manifest.json").exists()


def test_missing_and_corrupt_cifar_give_clear_errors_and_no_manifest(tmp_path):
    folder = make_fake_cifar10(tmp_path)
    out = tmp_path / "w"
    vd.prepare_dataset("cifar10", data_root=tmp_path, out_dir=out, strict=False)
    assert (out / "manifest.json").exists()
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetError) as e:
        vd.prepare_dataset("cifar10", data_root=tmp_path, out_dir=out, strict=False)
    msg = str(e.value)
    assert "data_batch_3 is missing" in msg and str(folder) in msg and "how to obtain" in msg
    assert not (out / "manifest.json").exists()  # the stale manifest went too
    (folder / "data_batch_3").write_bytes(b"\x80\x02}q\x00(truncated")
    with pytest.raises(DatasetError, match="corrupt"):
        vd.prepare_dataset("cifar10", data_root=tmp_path, out_dir=out, strict=False)
    with pytest.raises(DatasetError, match="cifar-100-python/ is missing"):
        vd.prepare_dataset("cifar100", data_root=tmp_path, out_dir=tmp_path / "w2")
    assert not (tmp_path / "w2" / "manifest.json").exists()


def test_prepare_is_idempotent(tmp_path):
    make_fake_cifar10(tmp_path)
    m = vd.prepare_dataset("cifar10", data_root=tmp_path, out_dir=tmp_path / "w", strict=False)
    before = (m.stat().st_mtime_ns, m.read_bytes())
    m2 = vd.prepare_dataset("cifar10", data_root=tmp_path, out_dir=tmp_path / "w", strict=False)
    assert (m2.stat().st_mtime_ns, m2.read_bytes()) == before


# --------------------------------------------------------------------------- CIFAR-LT
def _ldam_reference(targets, cls_num, imb_factor=0.01, rand_number=0):
    """LDAM-DRW's IMBALANCECIFAR10 code, verbatim in logic (global np.random)."""
    np.random.seed(rand_number)
    img_max = len(targets) / cls_num
    img_num_per_cls = [int(img_max * imb_factor ** (i / (cls_num - 1.0))) for i in range(cls_num)]
    targets_np = np.array(targets, dtype=np.int64)
    kept = []
    for the_class, the_img_num in zip(np.unique(targets_np), img_num_per_cls):
        idx = np.where(targets_np == the_class)[0]
        np.random.shuffle(idx)
        kept.append(idx[:the_img_num])
    return np.concatenate(kept), img_num_per_cls


@pytest.mark.parametrize("cls_num,total", [(10, 12406), (100, 10847)])
def test_cifar_lt_counts_follow_the_formula_exactly(cls_num, total):
    per = 50000 // cls_num
    targets = np.random.RandomState(5).permutation(np.repeat(np.arange(cls_num), per))
    counts = cifar.cao_img_num_per_cls(per, cls_num)
    assert sum(counts) == total and counts[0] == per
    if cls_num == 10:
        assert counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    else:
        assert counts[:5] == [500, 477, 455, 434, 415] and counts[-4:] == [5, 5, 5, 5]
    ref_rows, ref_counts = _ldam_reference(targets, cls_num)
    v = 200 if cls_num == 10 else 20
    train, val, got_counts = cifar.long_tail_split(targets, seed=0, val_per_class=v)
    assert got_counts == ref_counts and np.array_equal(train, ref_rows)
    assert np.bincount(targets[train]).tolist() == counts
    # balanced validation: v per class; only class 0 (fully kept) shares images with train
    assert np.bincount(targets[val], minlength=cls_num).tolist() == [v] * cls_num
    shared = set(val) & set(train)
    assert {int(targets[i]) for i in shared} == {0} and len(shared) == v
    tr2, va2, _ = cifar.long_tail_split(targets, seed=0, val_per_class=v, head_rule="holdout")
    assert not set(tr2) & set(va2) and len(tr2) == total - v


def test_cifar10_lt_fake_end_to_end(tmp_path):
    make_fake_cifar10(tmp_path, per_class_train=100)
    m = vd.prepare_dataset(
        "cifar10_lt", data_root=tmp_path, out_dir=tmp_path / "w", strict=False, lt_val_per_class=5
    )
    man = base.read_manifest(m)
    counts = cifar.cao_img_num_per_cls(100, 10)
    assert man["checks"]["lt_counts"] == counts
    assert man["split_sizes"]["train"] == sum(counts) and man["split_sizes"]["test"] == 40
    assert (
        np.bincount(vd.load_dataset("cifar10_lt", "train", manifest=m).targets).tolist() == counts
    )
    assert (
        np.bincount(vd.load_dataset("cifar10_lt", "val", manifest=m).targets).tolist() == [5] * 10
    )


# --------------------------------------------------------------------------- mini data
MINI = [n for n, s in vd.DATASETS.items() if s.family in ("mini", "toy")]


def _tree_digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def mini_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("mini")
    for name in MINI:
        vd.prepare_dataset(name, out_dir=out / name, seed=0)
    return out


def test_mini_generation_is_byte_identical(mini_dir, tmp_path):
    for name in ("mini_objects", "mini_count", "digits", "two_moons"):
        vd.prepare_dataset(name, out_dir=tmp_path / name, seed=0)
        assert _tree_digest(tmp_path / name) == _tree_digest(mini_dir / name), name
    other = tmp_path / "seed1"
    vd.prepare_dataset("mini_color", out_dir=other, seed=1)
    assert _tree_digest(other) != _tree_digest(mini_dir / "mini_color")


def test_mini_sizes_and_targets(mini_dir):
    info = {n: vd.dataset_info(mini_dir / n / "manifest.json") for n in MINI}
    assert info["mini_objects"]["split_sizes"] == {
        "train": 4000,
        "val": 1000,
        "test": 1000,
        "trainval": 5000,
    }
    assert vd.dataset_info(mini_dir / "mini_objects", "sub")["num_classes"] == 16
    for t in mini.PROBE_TASKS:
        s = info[f"mini_{t}"]["split_sizes"]
        assert (s["train"], s["val"], s["test"]) == (600, 200, 600)
        assert info[f"mini_{t}"]["num_classes"] == len(mini.FACTORS[t])
    assert info["mini_objects_1pct"]["split_sizes"]["train"] == 96
    lt = base.read_manifest(mini_dir / "mini_objects_lt")
    assert lt["checks"]["lt_counts"] == cifar.cao_img_num_per_cls(5000 / 4, 4)
    d = info["digits"]["split_sizes"]
    assert d["train"] + d["val"] + d["test"] == 1797 and info["digits"]["num_classes"] == 10


def test_mini_labels_are_the_factors_and_independent(mini_dir):
    """Super = shape, sub = shape x style; the probe factors are not determined by them."""
    folder = mini_dir / "mini_objects" / "mini-objects-python"
    raw = cifar.unpickle(folder / "train")
    f = np.asarray(raw["factors"])
    names = [n.decode() for n in cifar.unpickle(folder / "meta")["factor_names"]]
    col = {k: f[:, i] for i, k in enumerate(names)}
    assert (np.asarray(raw["coarse_labels"]) == col["shape"]).all()
    assert (np.asarray(raw["fine_labels"]) == col["shape"] * 4 + col["style"]).all()
    for t in ("color", "position", "background"):
        # every value of the probe factor appears under every sub-class: not determined by it
        pairs = {(a, b) for a, b in zip(raw["fine_labels"], col[t])}
        assert len(pairs) == 16 * len(mini.FACTORS[t]), t
    # size, texture and orientation are held fixed in the pretraining images (OBJECTS_FIXED) ...
    fixed = mini.parse_fixed(mini.OBJECTS_FIXED)
    assert set(fixed) == {"size", "texture", "orientation"}
    for t, v in fixed.items():
        assert (col[t] == v).all(), t
    assert base.read_manifest(mini_dir / "mini_objects")["checks"]["fixed_factors"] == {
        "size": "large",
        "texture": "plain",
        "orientation": "0deg",
    }
    # ... and vary in their probe tasks
    for t in fixed:
        probe = cifar.unpickle(mini_dir / f"mini_{t}" / f"mini-{t}-python" / "train")
        assert sorted(set(probe["fine_labels"])) == list(range(len(mini.FACTORS[t]))), t


def test_mini_fixed_factors_option_draws_the_same_rest():
    """fixed_factors="" varies every factor; fixing some changes only those columns."""
    all_vary = mini.sample_factors(64, "objects", np.random.default_rng(0))
    fixed = mini.sample_factors(
        64, "objects", np.random.default_rng(0), mini.parse_fixed("size=small")
    )
    i = mini.FACTOR_NAMES.index("size")
    assert (fixed[:, i] == 0).all() and len(set(all_vary[:, i])) == 3
    assert (np.delete(fixed, i, axis=1) == np.delete(all_vary, i, axis=1)).all()
    assert mini.parse_fixed("") == {}
    with pytest.raises(ConfigError, match="fixed_factors"):
        mini.parse_fixed("size=huge")
    with pytest.raises(ConfigError, match="label"):
        mini.parse_fixed("shape=square")
    with pytest.raises(ConfigError, match="count is always one"):
        mini.parse_fixed("count=two")


def test_mini_loads_fast_from_memory(mini_dir):
    m = mini_dir / "mini_objects" / "manifest.json"
    ds = vd.load_dataset("mini_objects", "train", manifest=m, target="sub")
    assert ds.images.shape == (4000, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.targets.max() == 15
    img, y = ds[0]
    assert img.size == (32, 32) and y == ds.targets[0]
    tv = vd.load_dataset("mini_objects", "trainval", manifest=m)
    assert len(tv) == 5000


def test_two_moons_matches_the_gs_recipe():
    X, y = vd.two_moons(0)
    assert X.shape == (300, 2) and set(np.unique(y)) == {-1, 1}
    # after the axis swap the classes sit on either side of x = 0 with a gap of 2*margin
    assert (X[y == 1, 0] < -0.1 + 1e-12).all() and (X[y == -1, 0] > 0.1 - 1e-12).all()
    Xo, yo = vd.two_moons(0, margin=-0.1)
    assert (yo == y).all() and not ((Xo[y == 1, 0] < 0).all() and (Xo[y == -1, 0] > 0).all())
    from sklearn.datasets import make_moons

    _, y01 = make_moons(n_samples=300, noise=0.1, random_state=0)
    assert (y == 2 * y01 - 1).all()


def test_two_moons_dataset(mini_dir):
    m = mini_dir / "two_moons" / "manifest.json"
    ds = vd.load_dataset("two_moons", "train", manifest=m)
    X, y = vd.two_moons(0)
    x0, y0 = ds[0]
    assert np.allclose(x0.numpy(), X[0]) and y0 == int(y[0] > 0)


# --------------------------------------------------------------------------- transforms, CLI
@pytest.mark.parametrize("kind", ["eval", "train_imagenet", "train_cifar", "ssl"])
def test_build_transform_kinds(kind):
    from PIL import Image

    t = vd.build_transform(kind, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    img = Image.fromarray(np.random.RandomState(0).randint(0, 255, (40, 48, 3), dtype=np.uint8))
    x = t(img)
    assert tuple(x.shape) == (3, 32, 32)


def test_eval_transform_is_identity_at_native_size():
    from PIL import Image

    arr = np.random.RandomState(0).randint(0, 255, (32, 32, 3), dtype=np.uint8)
    x = vd.build_transform("eval", image_size=32, mean=(0, 0, 0), std=(1, 1, 1))(
        Image.fromarray(arr)
    )
    assert np.allclose(x.permute(1, 2, 0).numpy() * 255, arr, atol=1e-3)
    with pytest.raises(ConfigError, match="kind"):
        vd.build_transform("nope", image_size=32, mean=(0,) * 3, std=(1,) * 3)
    views = vd.MultiView(vd.build_transform("ssl", image_size=32, mean=(0,) * 3, std=(1,) * 3))
    assert len(views(Image.fromarray(arr))) == 2


def test_cli_prepare_data(tmp_path):
    script = ROOT / "workflow_scripts" / "prepare_data.py"
    ok = subprocess.run(
        [
            sys.executable,
            str(script),
            "--dataset",
            "mini_size",
            "--out",
            str(tmp_path / "s"),
            "--seed",
            "3",
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert vd.dataset_info(tmp_path / "s" / "manifest.json")["num_classes"] == 3
    bad = subprocess.run(
        [
            sys.executable,
            str(script),
            "--dataset",
            "cifar100",
            "--data-root",
            str(tmp_path / "nothing"),
            "--out",
            str(tmp_path / "c"),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "how to obtain it" in bad.stderr
    assert not (tmp_path / "c" / "manifest.json").exists()


def test_unknown_names_and_wrong_manifest(mini_dir):
    with pytest.raises(ConfigError, match="unknown dataset"):
        vd.prepare_dataset("imagenet21k", out_dir="/tmp/never")
    with pytest.raises(ConfigError, match="manifest given is for"):
        vd.load_dataset("mini_color", "train", manifest=mini_dir / "mini_size" / "manifest.json")
    with pytest.raises(ConfigError, match="split"):
        vd.load_dataset("mini_size", "dev", manifest=mini_dir / "mini_size" / "manifest.json")
