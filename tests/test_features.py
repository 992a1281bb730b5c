"""Feature extraction (vcr/features.py): frozen backbone, on-disk cache reused and invalidated,
the in-memory array fast path equal to the transform path."""

import numpy as np
import pytest
import torch

from vcr.features import backbone_key, cache_path, extract_features


class CountingBackbone(torch.nn.Module):
    """A tiny conv backbone that counts its forward calls; has BatchNorm so eval mode matters."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3, padding=1),
            torch.nn.BatchNorm2d(4),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
        )
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


class ArrayImages:
    """Like vcr.data.ArrayImageDataset: uint8 (N, H, W, 3) ``images``, ``targets``, and a
    transform (here ToTensor + Normalize written out, no torchvision)."""

    def __init__(self, n=10, side=8, seed=0, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)):
        g = np.random.default_rng(seed)
        self.images = g.integers(0, 256, (n, side, side, 3), dtype=np.uint8)
        self.targets = g.integers(0, 3, n).astype(np.int64)
        self.mean, self.std = mean, std

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        x = torch.from_numpy(self.images[i]).permute(2, 0, 1).float() / 255
        m = torch.tensor(self.mean).view(3, 1, 1)
        s = torch.tensor(self.std).view(3, 1, 1)
        return (x - m) / s, int(self.targets[i])


def test_extract_shapes_eval_mode_and_labels():
    bb, ds = CountingBackbone(), ArrayImages()
    bb.train()
    X, y = extract_features(bb, ds, batch_size=4, device="cpu")
    assert X.shape == (10, 4) and X.dtype == torch.float32
    assert y.tolist() == ds.targets.tolist()
    assert bb.training  # mode restored
    # eval mode was used: BatchNorm running stats (not batch stats) -> batch size invariant
    X1, _ = extract_features(bb, ds, batch_size=1, device="cpu")
    assert torch.allclose(X, X1, atol=1e-6)
    assert bb.net[1].num_batches_tracked.item() == 0  # BN never updated


def test_cache_written_once_and_reused(tmp_path):
    bb, ds = CountingBackbone(), ArrayImages()
    path = cache_path(tmp_path, "mini_color", "default", "train")
    assert path == tmp_path / "mini_color-default" / "train.pt"
    X, y = extract_features(bb, ds, batch_size=4, cache=path, key="k1")
    calls = bb.calls
    assert path.is_file() and calls == 3
    X2, y2 = extract_features(bb, ds, batch_size=4, cache=path, key="k1")
    assert bb.calls == calls  # cache hit: no backbone pass
    assert torch.equal(X, X2) and torch.equal(y, y2)  # float32 cache: bit-identical
    blob = torch.load(path, weights_only=True)
    assert blob["meta"]["n"] == 10 and blob["meta"]["dtype"] == "float32"
    assert not list(tmp_path.rglob("*.tmp"))  # atomic write left no temp file


def test_stale_cache_is_recomputed(tmp_path):
    bb, ds = CountingBackbone(), ArrayImages()
    path = tmp_path / "c.pt"
    extract_features(bb, ds, batch_size=10, cache=path, key="old-backbone")
    extract_features(bb, ds, batch_size=10, cache=path, key="new-backbone")
    assert bb.calls == 2  # key changed -> recomputed
    extract_features(bb, ArrayImages(n=7), batch_size=10, cache=path, key="new-backbone")
    assert bb.calls == 3  # length changed -> recomputed
    path.write_bytes(b"garbage")
    extract_features(bb, ds, batch_size=10, cache=path, key="new-backbone")
    assert bb.calls == 4  # corrupt -> recomputed


def test_float16_cache_returns_float32(tmp_path):
    bb, ds = CountingBackbone(), ArrayImages()
    X, _ = extract_features(bb, ds, cache=tmp_path / "h.pt", cache_dtype="float16")
    X2, _ = extract_features(bb, ds, cache=tmp_path / "h.pt", cache_dtype="float16")
    assert X2.dtype == torch.float32 and torch.allclose(X, X2, rtol=1e-3, atol=1e-3)
    assert torch.load(tmp_path / "h.pt", weights_only=True)["features"].dtype == torch.float16


def test_array_fast_path_equals_transform_path():
    bb, ds = CountingBackbone(), ArrayImages(n=9)
    slow, ys = extract_features(bb, ds, batch_size=4)
    fast, yf = extract_features(bb, ds, batch_size=4, array_normalize=(ds.mean, ds.std))
    assert torch.allclose(slow, fast, atol=1e-6) and torch.equal(ys, yf)


def test_errors_are_clear(tmp_path):
    class Spatial(torch.nn.Module):
        def forward(self, x):
            return x  # (N, C, H, W): not pooled

    with pytest.raises(ValueError, match="expected \\(N, D\\)"):
        extract_features(Spatial(), ArrayImages(), batch_size=4)

    class NaNs(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 2), float("nan"))

    with pytest.raises(FloatingPointError, match="non-finite"):
        extract_features(NaNs(), ArrayImages(), cache=tmp_path / "n.pt")
    assert not (tmp_path / "n.pt").exists()


def test_backbone_key_tracks_file_content(tmp_path):
    p = tmp_path / "backbone.pt"
    p.write_bytes(b"abc")
    k1 = backbone_key(p)
    p.write_bytes(b"abd")
    assert backbone_key(p) != k1
