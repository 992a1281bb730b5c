"""Table 5 metrics (vcr/metrics.py): CDNV and NCC on constructed features with known answers,
MINE on correlated Gaussians against the closed-form MI, the classifier record."""

import math

import pytest
import torch

from vcr import io
from vcr.errors import ConfigError
from vcr.metrics import (
    cdnv,
    class_means,
    mine_config,
    mine_mi_bits,
    ncc_accuracy,
    ncc_mismatch,
    ncc_predict,
    pool_images,
)
from vcr.records import RunSpec, classifier_record


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def collapsed(k=4, per=10, d=6, seed=0):
    """Every sample of a class sits exactly on its class mean (perfect neural collapse)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, d, generator=g) * 3
    y = torch.arange(k).repeat_interleave(per)
    return means[y], y


def test_collapsed_classes_give_zero_cdnv_and_ncc_one():
    X, y = collapsed()
    assert cdnv(X, y) == pytest.approx(0.0, abs=1e-12)
    assert ncc_accuracy(X, y, X, y) == 1.0


def test_cdnv_known_value():
    # class 0: points (±1, 0) around (0, 0): Var = E||x - mu||^2 = 1
    # class 1: points (3, ±2) around (3, 0): Var = 4;  ||mu0 - mu1||^2 = 9
    X = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [3.0, 2.0], [3.0, -2.0]])
    y = torch.tensor([0, 0, 1, 1])
    assert cdnv(X, y) == pytest.approx((1 + 4) / (2 * 9))
    # a third class at (0, 6), collapsed (Var 0): mean over the three pairs
    X3 = torch.cat([X, torch.tensor([[0.0, 6.0], [0.0, 6.0]])])
    y3 = torch.cat([y, torch.tensor([2, 2])])
    pairs = [(1 + 4) / (2 * 9), (1 + 0) / (2 * 36), (4 + 0) / (2 * (9 + 36))]
    assert cdnv(X3, y3) == pytest.approx(sum(pairs) / 3)


def test_cdnv_uses_total_variance_and_is_scale_invariant():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(60, 5, generator=g)
    y = torch.arange(3).repeat(20)
    X = X + torch.tensor([[0.0] * 5, [4.0] + [0.0] * 4, [0.0, 4.0, 0, 0, 0]])[y]
    assert cdnv(3.0 * X, y) == pytest.approx(cdnv(X, y))
    # adding noise in a new dimension raises the (total) variance, so CDNV grows
    X2 = torch.cat([X, torch.randn(60, 1, generator=g)], 1)
    assert cdnv(X2, y) > cdnv(X, y)
    with pytest.raises(ValueError, match="two classes"):
        cdnv(X, torch.zeros(60))


def test_ncc_known_case_and_mismatch():
    Xtr = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [12.0, 0.0]])
    ytr = torch.tensor([5, 5, 7, 7])  # labels need not be 0..K-1: means at 1 and 11
    classes, means = class_means(Xtr, ytr)
    assert classes.tolist() == [5, 7] and means[:, 0].tolist() == [1.0, 11.0]
    X = torch.tensor([[0.0, 0.0], [5.9, 0.0], [6.1, 0.0], [20.0, 0.0]])
    assert ncc_predict(Xtr, ytr, X).tolist() == [5, 5, 7, 7]
    y = torch.tensor([5, 7, 7, 7])
    assert ncc_accuracy(Xtr, ytr, X, y) == pytest.approx(0.75)
    assert ncc_mismatch(Xtr, ytr, X, y) == pytest.approx(0.25)


def correlated_gaussians(n, d, rho, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    z = rho * x + math.sqrt(1 - rho**2) * torch.randn(n, d, generator=g)
    return x, z, -d / 2 * math.log(1 - rho**2) / math.log(2)  # closed form, bits


def test_mine_correlated_gaussians_within_10_percent():
    x, z, true_bits = correlated_gaussians(4000, 2, 0.8, seed=0)  # 1.47 bits
    r = mine_mi_bits(x, z, steps=2000, seed=0)
    assert r["bits"] == pytest.approx(true_bits, rel=0.10)
    assert r["nats"] == pytest.approx(r["bits"] * math.log(2))
    assert r["n_eval"] == 800 and r["n_train"] == 3200


def test_mine_independent_is_near_zero():
    g = torch.Generator().manual_seed(3)
    x, z = torch.randn(3000, 2, generator=g), torch.randn(3000, 2, generator=g)
    assert abs(mine_mi_bits(x, z, steps=500)["bits"]) < 0.1


@pytest.mark.slow
@pytest.mark.parametrize("d,rho", [(4, 0.8), (1, 0.9), (3, 0.5)])
def test_mine_correlated_gaussians_slow(d, rho):
    x, z, true_bits = correlated_gaussians(10000, d, rho, seed=1)
    r = mine_mi_bits(x, z, steps=5000, seed=1)
    assert r["bits"] == pytest.approx(true_bits, rel=0.10)


def test_mine_config_and_input_checks():
    with pytest.raises(ConfigError, match="stepz"):
        mine_config(stepz=3)
    assert mine_config(hidden=[8, 8]).hidden == (8, 8)
    with pytest.raises(ValueError, match="paired"):
        mine_mi_bits(torch.zeros(5, 2), torch.zeros(6, 2), steps=1)
    x = torch.zeros(10, 2)
    x[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        mine_mi_bits(x, torch.zeros(10, 2), steps=1)


def test_pool_images_shape():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    p = pool_images(x, 2)
    assert p.shape == (2, 12)
    assert p[0, 0] == x[0, 0, :2, :2].mean()


def write_run(tmp_path, final):
    spec = RunSpec("mini", "supervised", "mini_resnet", "mini_objects", "default", "r")
    io.write_json(tmp_path / "run.json", {"params": spec.to_dict()})
    io.write_json(tmp_path / "final.json", final)
    return spec


def test_classifier_record(tmp_path):
    spec = write_run(tmp_path, {"val_top1": 0.61, "test_top1": 0.58, "metric": "top1"})
    rec = classifier_record(tmp_path, "cifar10_lt")
    assert rec["protocol"] == "classifier" and rec["metric"] == "top1"
    assert rec["val"] == 0.61 and rec["test"] == 0.58 and rec["run"] == spec.to_dict()
    assert rec["eval_dataset"] == "cifar10_lt"
    assert classifier_record(tmp_path)["eval_dataset"] == spec.dataset  # default: own dataset
    write_run(tmp_path, {"val_top1": None, "test_top1": None})
    with pytest.raises(ValueError, match="supervised"):
        classifier_record(tmp_path, "cifar10_lt")
    with pytest.raises(FileNotFoundError, match="final.json"):
        classifier_record(tmp_path / "nowhere", "cifar10_lt")
