"""The mini data the CPU pipeline makes itself: synthetic 32x32 objects with independent factors,
scikit-learn's handwritten digits, and the two-moons toy data of Fig. 2.

Every image dataset here is generated from a seed, written as CIFAR-100-style python pickles
(``train``, ``test``, ``meta`` with ``data`` (N, 3072) uint8, ``fine_labels``,
``coarse_labels``, ``filenames``, plus ``factors``) and then read back by the same code as the
real CIFAR pickles (``vcr.data.cifar``): one loader path for mini and real data. Generation is
pure numpy (no threads, no BLAS), so the bytes are identical across runs and machines.

Factors of one object image (all independent, uniformly drawn unless a task fixes them):

=============  ==============================================  ================================
factor         values                                          used as a label by
=============  ==============================================  ================================
shape          square, ellipse, triangle, plus                  mini_objects super (4)
style          solid, outline, hole, double                     mini_objects sub = shape x style
color          red, green, blue, yellow, magenta, cyan          mini_color (6)
texture        plain, stripes, checker, dots                    mini_texture (4)
size           small, medium, large (radius 5.5 / 8.5 / 11.5 px)  mini_size (3)
position       4 quadrant centres (+-1.5 px jitter)             mini_position (4)
background     dark, light, gradient, noise (all grey)          mini_background (4)
orientation    0, 22.5, 45, 67.5 degrees (+-3 deg jitter)       mini_orientation (4)
count          1 object (2-3 small copies only in mini_count)   mini_count (3)
=============  ==============================================  ================================

The pretraining labels (shape, and shape x style) determine none of the probe factors, so a
probe on them measures what the representation kept beyond the pretraining task.

Orientations stay below 90 degrees and no shape is a circle, so every orientation is visible.

The pretraining images (``mini_objects*``) hold size, texture and orientation fixed
(``OBJECTS_FIXED``; colour, background, position and style still vary): with every factor
varying, the mini models stayed at chance on the shapes after 3 CPU epochs (ResNet 34 %,
ConvNeXt 28 % on 4 shapes; small rotated objects are a few pixels at the 8x8 first stage),
while with these three fixed they reach 65 % / 76 % in the same 3 epochs, so the mini
Table 2/3 measure a learned representation. The size, texture and orientation probes then
ask about variation the pretraining never showed, like a transfer dataset. The dataset
option ``fixed_factors`` ("" = every factor varies) brings the old data back.
"""

from __future__ import annotations

import pickle
import zlib
from pathlib import Path

import numpy as np

from vcr import io
from vcr.data import base, cifar
from vcr.errors import ConfigError

SIDE = 32
SUPERSAMPLE = 2  # render at 64x64 and average 2x2 blocks: cheap anti-aliasing
MINI_MEAN = (0.5, 0.5, 0.5)
MINI_STD = (0.25, 0.25, 0.25)
# One normalisation for every mini image dataset: a backbone pretrained on mini_objects is
# probed on mini_color etc. with the statistics it was trained with.

FACTORS: dict[str, list] = {
    "shape": ["square", "ellipse", "triangle", "plus"],
    "style": ["solid", "outline", "hole", "double"],
    "color": ["red", "green", "blue", "yellow", "magenta", "cyan"],
    "texture": ["plain", "stripes", "checker", "dots"],
    "size": ["small", "medium", "large"],
    "position": ["top_left", "top_right", "bottom_left", "bottom_right"],
    "background": ["dark", "light", "gradient", "noise"],
    "orientation": ["0deg", "22.5deg", "45deg", "67.5deg"],
    "count": ["one", "two", "three"],
}
FACTOR_NAMES = list(FACTORS)
COLORS = np.array(
    [[220, 40, 40], [40, 200, 60], [50, 80, 235], [235, 215, 40], [215, 50, 205], [40, 205, 215]],
    dtype=np.float64,
)
RADII = (5.5, 8.5, 11.5)
NOISE = 15.0  # amplitude of the 'noise' background (uniform, grey levels)
SLOTS = ((11.0, 11.0), (21.0, 11.0), (11.0, 21.0), (21.0, 21.0))
ANGLES = (0.0, 22.5, 45.0, 67.5)

# sizes: pool train (val is held out of it) / test
OBJECT_POOL = (5000, 1000)  # 312-313 per sub-class -> 4000 train / 1000 val / 1000 test
PROBE_POOL = (800, 600)  # -> 600 train / 200 val / 600 test
# Factors held fixed in the pretraining images (see the module docstring for why)
OBJECTS_FIXED = "size=large texture=plain orientation=0deg"
PROBE_TASKS = ("color", "texture", "size", "position", "count", "background", "orientation")

_coords = (np.arange(SIDE * SUPERSAMPLE) + 0.5) / SUPERSAMPLE
_Y, _X = np.meshgrid(_coords, _coords, indexing="ij")


# --------------------------------------------------------------------------- rendering
# Batched: every function takes (B, 1, 1) parameter arrays and the (1, H, W) supersampled grid.
def _shape_mask(shape: int, u, v, r):
    if shape == 0:  # square
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8 * r
    if shape == 1:  # ellipse, about 2:1 so that orientation is visible
        return (u / r) ** 2 + (v / (0.55 * r)) ** 2 <= 1.0
    if shape == 2:  # equilateral triangle, circumradius r (inradius r/2)
        m = None
        for a in (np.pi / 2, np.pi * 7 / 6, np.pi * 11 / 6):
            e = u * np.cos(a) + v * np.sin(a) <= r / 2
            m = e if m is None else m & e
        return m
    arm = 0.33 * r  # plus
    return ((np.abs(u) <= r) & (np.abs(v) <= arm)) | ((np.abs(v) <= r) & (np.abs(u) <= arm))


def _object_mask(shape: int, style: int, u, v, r):
    m = _shape_mask(shape, u, v, r)
    if style == 1:  # outline
        m &= ~_shape_mask(shape, u, v, 0.55 * r)
    elif style == 2:  # round hole in the middle
        m &= u * u + v * v > (0.35 * r) ** 2
    elif style == 3:  # double: a gap ring inside the solid shape
        m &= ~(_shape_mask(shape, u, v, 0.75 * r) & ~_shape_mask(shape, u, v, 0.45 * r))
    return m


def _down(a):
    """Average SUPERSAMPLE x SUPERSAMPLE blocks of the last two axes (anti-aliasing)."""
    a = a.astype(np.float32)
    return (a[..., ::2, ::2] + a[..., 1::2, ::2] + a[..., ::2, 1::2] + a[..., 1::2, 1::2]) / 4


_TEXTURES = _down(
    np.stack(
        [
            np.ones_like(_X),
            np.where(np.floor(_Y / 2) % 2 == 0, 1.0, 0.4),  # horizontal stripes, 2 px
            np.where((np.floor(_X / 2) + np.floor(_Y / 2)) % 2 == 0, 1.0, 0.4),  # checker, 2 px
            np.where((_X % 4 - 2) ** 2 + (_Y % 4 - 2) ** 2 <= 1.3, 1.0, 0.4),  # dots, 4 px grid
        ]
    )
)  # (4, 32, 32)
_GRADIENT = (20.0 + 180.0 * (np.arange(SIDE, dtype=np.float32) + 0.5) / SIDE)[:, None]


def _backgrounds(kinds, noise):
    """(B, 32, 32) grey backgrounds: dark, light, vertical gradient, pixel noise."""
    flat = np.array([30.0, 190.0, 0.0, 110.0], np.float32)[kinds][:, None, None]
    k = kinds[:, None, None]
    return np.where(k == 2, _GRADIENT[None], flat + np.where(k == 3, noise, 0.0)).astype(np.float32)


def render_batch(factors: np.ndarray, rng) -> np.ndarray:
    """(B, 32, 32, 3) uint8 images from (B, len(FACTORS)) factor indices and rng jitters.

    The object's coverage is computed on a 2x supersampled grid and averaged (anti-aliasing),
    then alpha-composited over the background at 32 px.
    """
    b = len(factors)
    f = {k: factors[:, i] for i, k in enumerate(FACTOR_NAMES)}
    # all random draws first, in a fixed order, so the bytes depend only on (seed, task, part)
    color_jit = rng.uniform(-15, 15, size=(b, 3))
    noise = rng.uniform(-NOISE, NOISE, size=(b, SIDE, SIDE)).astype(np.float32)
    angle_jit = rng.uniform(-3, 3, size=b)
    size_jit = rng.uniform(-0.5, 0.5, size=b)
    slot_perm = np.argsort(rng.random((b, len(SLOTS))), axis=1)
    pos_jit = rng.uniform(-1.5, 1.5, size=(b, 3, 2))

    theta = np.deg2rad(np.asarray(ANGLES)[f["orientation"]] + angle_jit)[:, None, None]
    c, s = np.cos(theta), np.sin(theta)
    r = (np.asarray(RADII)[f["size"]] + size_jit)[:, None, None]
    slots = np.where(f["count"][:, None] == 0, f["position"][:, None], slot_perm[:, :3])
    centres = np.asarray(SLOTS)[slots] + pos_jit  # (B, 3, 2)
    mask = np.zeros((b,) + _X.shape, dtype=bool)
    for copy in range(int(f["count"].max()) + 1):
        active = f["count"] >= copy
        dx = _X[None] - centres[:, copy, 0][:, None, None]
        dy = _Y[None] - centres[:, copy, 1][:, None, None]
        u, v = c * dx + s * dy, -s * dx + c * dy  # the object's own frame (rotated by -theta)
        for shape in range(len(FACTORS["shape"])):
            for style in range(len(FACTORS["style"])):
                sel = np.flatnonzero(active & (f["shape"] == shape) & (f["style"] == style))
                if len(sel):
                    mask[sel] |= _object_mask(shape, style, u[sel], v[sel], r[sel])
    alpha = _down(mask)[..., None]  # (B, 32, 32, 1)
    color = np.clip(COLORS[f["color"]] + color_jit, 0, 255).astype(np.float32)
    obj = color[:, None, None, :] * _TEXTURES[f["texture"]][..., None]
    img = _backgrounds(f["background"], noise)[..., None] * (1 - alpha) + obj * alpha
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _task_seed(seed: int, task: str, part: str) -> list[int]:
    return [int(seed), zlib.crc32(task.encode()), zlib.crc32(part.encode())]


def parse_fixed(text: str) -> dict[str, int]:
    """``"size=large texture=plain"`` -> {factor: value index}; "" -> {} (all vary)."""
    fixed = {}
    for item in str(text or "").replace(",", " ").split():
        name, _, value = item.partition("=")
        if name not in FACTORS or value not in FACTORS[name]:
            raise ConfigError(
                f"fixed_factors: {item!r} is not factor=value with a factor of "
                f"{FACTOR_NAMES} and one of its values"
            )
        if name in ("shape", "style"):
            raise ConfigError(f"fixed_factors: {name} is a label of mini_objects; it must vary")
        if name == "count":
            raise ConfigError("fixed_factors: count is always one object in mini_objects")
        fixed[name] = FACTORS[name].index(value)
    return fixed


def sample_factors(n: int, task: str, rng, fixed: dict[str, int] | None = None) -> np.ndarray:
    """(n, len(FACTORS)) factor indices; the task's label factor is exactly balanced.
    ``fixed`` (objects only) sets factors to one value after every draw, so the other factors
    and the jitters are the same draws whatever is fixed."""
    cols = {k: rng.integers(0, len(v), size=n) for k, v in FACTORS.items()}
    cols["count"][:] = 0
    if task == "objects":
        sub = rng.permutation(np.arange(n) % 16)
        cols["shape"], cols["style"] = sub // 4, sub % 4
        for name, value in (fixed or {}).items():
            cols[name][:] = value
    else:
        cols[task] = rng.permutation(np.arange(n) % len(FACTORS[task]))
        if task == "count":
            cols["size"][:] = 0  # small copies, so two or three never merge into one blob
    return np.stack([cols[k] for k in FACTOR_NAMES], axis=1)


def generate_images(
    n: int, task: str, seed: int, part: str, chunk: int = 256, fixed: dict[str, int] | None = None
):
    rng = np.random.default_rng(_task_seed(seed, task, part))
    factors = sample_factors(n, task, rng, fixed)
    images = np.concatenate([render_batch(factors[i : i + chunk], rng) for i in range(0, n, chunk)])
    return images, factors


def labels_for(task: str, factors: np.ndarray) -> tuple[list[int], list[int]]:
    """(fine, coarse) labels: objects -> (shape x style, shape); a probe -> (factor, factor)."""
    col = {k: factors[:, i] for i, k in enumerate(FACTOR_NAMES)}
    if task == "objects":
        return base.to_list(col["shape"] * 4 + col["style"]), base.to_list(col["shape"])
    return base.to_list(col[task]), base.to_list(col[task])


def class_names(task: str) -> tuple[list[str], list[str]]:
    if task == "objects":
        fine = [f"{s}_{t}" for s in FACTORS["shape"] for t in FACTORS["style"]]
        return fine, list(FACTORS["shape"])
    return list(FACTORS[task]), list(FACTORS[task])


# --------------------------------------------------------------------------- pickles
def _pickle_bytes(obj) -> bytes:
    return pickle.dumps(obj, protocol=4)


def write_cifar_style(
    folder: Path, name: str, parts: dict, fine_names, coarse_names, extra_meta=None
) -> None:
    """Write ``folder/{train,test,meta}`` in the CIFAR-100 python format (bytes keys)."""
    for part, (images, fine, coarse, factors) in parts.items():
        n = len(images)
        d = {
            b"batch_label": f"{name} {part}".encode(),
            b"filenames": [f"{name}_{part}_{i:05d}.png".encode() for i in range(n)],
            b"data": images.transpose(0, 3, 1, 2).reshape(n, -1).copy(),
            b"fine_labels": list(fine),
            b"coarse_labels": list(coarse),
        }
        if factors is not None:
            d[b"factors"] = np.ascontiguousarray(factors, dtype=np.int16)
        data = _pickle_bytes(d)
        path = folder / part
        if not (path.exists() and path.read_bytes() == data):
            io.write_bytes(path, data)
    meta = {
        b"fine_label_names": [n.encode() for n in fine_names],
        b"coarse_label_names": [n.encode() for n in coarse_names],
    }
    meta.update(extra_meta or {})
    data = _pickle_bytes(meta)
    if not ((folder / "meta").exists() and (folder / "meta").read_bytes() == data):
        io.write_bytes(folder / "meta", data)


def _generate_objects_like(out_dir: Path, task: str, seed: int, pool, fixed=None) -> Path:
    folder = out_dir / f"mini-{task}-python"
    parts = {}
    for part, n in zip(("train", "test"), pool):
        images, factors = generate_images(n, task, seed, part, fixed=fixed)
        fine, coarse = labels_for(task, factors)
        parts[part] = (images, fine, coarse, factors)
    fine_names, coarse_names = class_names(task)
    extra = {
        b"factor_names": [k.encode() for k in FACTOR_NAMES],
        b"factor_values": {
            k.encode(): [str(v).encode() for v in vals] for k, vals in FACTORS.items()
        },
    }
    write_cifar_style(folder, f"mini_{task}", parts, fine_names, coarse_names, extra)
    return folder


def load_digits_arrays():
    """scikit-learn's bundled digits (``sklearn/datasets/data/digits.csv.gz``), read the way
    ``load_digits`` reads it, without importing scikit-learn (~1 s per process)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise base.DatasetError(
            "dataset 'digits': scikit-learn is not installed (pip install "
            "scikit-learn); its bundled digits.csv.gz is the data"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.exists():
        raise base.DatasetError(f"dataset 'digits': {path} is missing (reinstall scikit-learn)")
    data = np.loadtxt(path, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)


def _generate_digits(out_dir: Path, seed: int, test_fraction: float) -> Path:
    images, target = load_digits_arrays()
    x = np.clip(np.rint(images * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # (1797, 8, 8)
    x = np.kron(x, np.ones((1, 4, 4), np.uint8))  # nearest-neighbour 8 -> 32
    x = np.repeat(x[..., None], 3, axis=3)
    y = target
    train_rows, test_rows = base.holdout_stratified(y, seed=seed, fraction=test_fraction)
    parts = {
        p: (x[rows], base.to_list(y[rows]), base.to_list(y[rows]), None)
        for p, rows in (("train", train_rows), ("test", test_rows))
    }
    names = [str(i) for i in range(10)]
    folder = out_dir / "mini-digits-python"
    write_cifar_style(folder, "digits", parts, names, names)
    return folder


# --------------------------------------------------------------------------- prepare
def _prepare_mini(spec, *, data_root, out_dir, seed, allow_download, opts):
    name = spec.name
    task = "objects" if name.startswith("mini_objects") else name.removeprefix("mini_")
    fixed: dict[str, int] = {}
    if name == "digits":
        folder = _generate_digits(out_dir, seed, float(opts.get("test_fraction", 0.334)))
    else:
        pool = OBJECT_POOL if task == "objects" else PROBE_POOL
        pool = (int(opts.get("n_train_pool", pool[0])), int(opts.get("n_test", pool[1])))
        fixed = parse_fixed(opts.get("fixed_factors", OBJECTS_FIXED)) if task == "objects" else {}
        folder = _generate_objects_like(out_dir, task, seed, pool, fixed)
    # From here on: exactly the CIFAR reading code, on the files just written.
    keys = ("fine_labels", "coarse_labels")
    tr = cifar._read_batch(spec, folder / "train", keys)
    te = cifar._read_batch(spec, folder / "test", keys)
    fine_names = cifar._names(spec, folder / "meta", "fine_label_names")
    coarse_names = cifar._names(spec, folder / "meta", "coarse_label_names")
    hierarchical = task == "objects"
    if hierarchical:
        # default = super: the mini Table 2 pretrains on the superclass (4 shapes).
        classes = {"default": coarse_names, "super": coarse_names, "sub": fine_names}
    else:
        classes = {"default": fine_names}

    def tgt(b, rows):
        rows = np.asarray(rows, dtype=np.int64)
        if hierarchical:
            sup = base.to_list(b["coarse_labels"][rows])
            return {"default": sup, "super": sup, "sub": base.to_list(b["fine_labels"][rows])}
        return {"default": base.to_list(b["fine_labels"][rows])}

    fine_tr = tr["fine_labels"]
    checks = {"generated": True, "format": "cifar-100 python pickles"}
    if hierarchical:
        checks["fixed_factors"] = {k: FACTORS[k][v] for k, v in fixed.items()}
    if name == "mini_objects_lt":
        v = int(opts.get("lt_val_per_class", 50))
        train_rows, val_rows, counts = cifar.long_tail_split(
            tr["coarse_labels"],
            ratio=float(opts.get("imbalance_ratio", 100)),
            seed=seed,
            val_per_class=v,
            head_rule=opts.get("lt_val_head", "shared"),
        )
        checks["lt_counts"] = counts
    else:
        strat = fine_tr if hierarchical else tr["fine_labels"]
        if name == "digits":
            train_rows, val_rows = base.holdout_stratified(
                strat, seed=seed, fraction=float(opts.get("val_fraction", 0.167))
            )
        else:
            frac = 0.2 if hierarchical else 0.25  # 5000 -> 4000/1000; 800 -> 600/200
            train_rows, val_rows = base.holdout_stratified(
                strat, seed=seed, fraction=float(opts.get("val_fraction", frac))
            )
        if name == "mini_objects_1pct":
            # a labelled fraction, class-balanced like SimCLR's 1% list (per sub-class)
            k = int(opts.get("labelled_per_class", 6))
            rng = np.random.RandomState(seed + 2)
            keep = []
            for c in np.unique(fine_tr[train_rows]):
                idx = train_rows[fine_tr[train_rows] == c]
                keep.append(np.sort(rng.permutation(idx)[:k]))
            train_rows = np.sort(np.concatenate(keep))
    rel = folder.name
    index = cifar.pickle_index(
        [f"{rel}/train"],
        [f"{rel}/test"],
        train_rows,
        val_rows,
        te["n"],
        lambda source, rows: tgt(tr if source == "train" else te, rows),
    )
    base.check_split_labels(spec, index, classes)
    checks["sha256"] = {
        f"{rel}/{p}": base.file_sha256(folder / p) for p in ("train", "test", "meta")
    }
    return {
        "root": ".",
        "classes": classes,
        "index": base.write_index(out_dir, index),
        "split_sizes": base.split_sizes(index),
        "image_size": 32,
        "mean": list(MINI_MEAN),
        "std": list(MINI_STD),
        "checks": checks,
        "factors": {k: list(map(str, v)) for k, v in FACTORS.items()} if name != "digits" else {},
    }


# --------------------------------------------------------------------------- two moons
def two_moons(seed: int, margin: float = 0.1, n: int = 300, rotation: float = 0.0):
    """Gradient-Starvation two moons (``two_moons_dataset`` of Pezeshki et al., Fig. 3 code).

    ``make_moons(n, noise=0.1, random_state=seed)``; shift x by 0.5 and y by 0.3*y_pm1; centre
    y; flip its sign so that each class sits on one side; shift by -y_pm1*margin (margin 0.1 =
    linearly separable with a gap); swap the axes; optional extra rotation in degrees.
    Returns ``X`` (n, 2) float64 and ``y`` in {-1, +1} (int64), the labels the loss uses.
    """
    from sklearn.datasets import make_moons

    X, y = make_moons(n_samples=n, noise=0.1, random_state=seed)
    y_pm1 = (2.0 * y - 1.0)[:, None]
    X = X - np.concatenate([0.5 * np.ones((n, 1)), y_pm1 * 0.3], 1)
    X[:, 1] = X[:, 1] - X[:, 1].mean()
    X[:, 1] = X[:, 1] * np.sign(-X[:, 1] * y_pm1[:, 0])
    X[:, 1] = X[:, 1] - y_pm1[:, 0] * margin
    X = X[:, ::-1].copy()
    if rotation:
        t = np.radians(rotation)
        X = X @ np.array(((np.cos(t), -np.sin(t)), (np.sin(t), np.cos(t))))
    return X, y_pm1[:, 0].astype(np.int64)


@base.array_reader("npy")
def _read_npy(path: str) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def _prepare_two_moons(spec, *, data_root, out_dir, seed, allow_download, opts):
    """train = two_moons(seed); val/test = fresh draws (seed+1000, seed+2000), same margin."""
    margin, n = float(opts.get("margin", 0.1)), int(opts.get("n", 300))
    draws = [two_moons(seed + off, margin, n) for off in (0, 1000, 2000)]
    X = np.concatenate([d[0] for d in draws]).astype(np.float64)
    y01 = np.concatenate([(d[1] > 0).astype(np.int64) for d in draws])  # class 0 = -1, 1 = +1
    buf = __import__("io").BytesIO()
    np.save(buf, X, allow_pickle=False)
    path = Path(out_dir) / "two_moons_X.npy"
    if not (path.exists() and path.read_bytes() == buf.getvalue()):
        io.write_bytes(path, buf.getvalue())
    rows = [list(range(i * n, (i + 1) * n)) for i in range(3)]
    index = {
        "kind": "vectors",
        "sources": {"all": {"kind": "npy", "paths": ["two_moons_X.npy"]}},
        "splits": {
            s: {"source": "all", "rows": r, "labels": {"default": base.to_list(y01[r])}}
            for s, r in zip(("train", "val", "test"), rows)
        },
    }
    classes = {"default": ["-1", "+1"]}
    base.check_split_labels(spec, index, classes)
    return {
        "root": ".",
        "classes": classes,
        "index": base.write_index(out_dir, index),
        "split_sizes": base.split_sizes(index),
        "image_size": 0,
        "mean": [0.0, 0.0],
        "std": [1.0, 1.0],
        "checks": {"generated": True, "margin": margin, "labels": "0 <-> -1, 1 <-> +1"},
    }


_MINI = [
    ("mini_objects", "synthetic objects: super = shape (4), sub = shape x style (16)"),
    ("mini_objects_lt", "mini_objects long-tailed over the 4 shapes at ratio 100 (Cao code path)"),
    ("mini_objects_1pct", "mini_objects with 6 labelled train images per sub-class (96)"),
] + [(f"mini_{t}", f"probe task: label = {t} ({len(FACTORS[t])} classes)") for t in PROBE_TASKS]
for _name, _desc in _MINI + [("digits", "scikit-learn 8x8 digits, upsampled to 32x32 RGB")]:
    base.register(
        base.DatasetSpec(
            _name,
            "mini",
            _prepare_mini,
            _desc,
            obtain="generated by the pipeline; nothing to obtain",
        )
    )
base.register(
    base.DatasetSpec(
        "two_moons",
        "toy",
        _prepare_two_moons,
        "two moons of Fig. 2 (300 points, noise 0.1, margin 0.1)",
        obtain="generated by the pipeline; nothing to obtain",
    )
)
