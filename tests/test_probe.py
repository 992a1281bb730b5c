"""Probes (vcr/probes/): torch L-BFGS vs scikit-learn, λ never chosen on test, SGD/AdamW heads,
fine-tuning epoch chosen on val, configs."""

import numpy as np
import pytest
import torch

from vcr.bench_probe import sklearn_probe_reference
from vcr.cli import parse_sets
from vcr.errors import ConfigError
from vcr.probes import (
    SGD_SCHEDULES,
    AdamwConfig,
    LbfgsConfig,
    finetune,
    lambda_grid,
    linear_probe_adamw,
    linear_probe_lbfgs,
    linear_probe_sgd,
    make_config,
    split_config,
)
from vcr.probes.heads import _sgd_settings
from vcr.probes.lbfgs_solver import PathSelection
from vcr.scoring import accuracy


@pytest.fixture(autouse=True)
def _one_thread():
    # Small problems: intra-op threads only spin-wait (measured 3-4x slower with 2 threads on a
    # busy 2-core machine).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def gaussian_features(n=900, d=24, k=5, sep=0.5, seed=0):
    """Fixed synthetic feature set: class means at distance ~sep*3, unit noise; 600/150/150."""
    g = np.random.default_rng(seed)
    means = g.normal(size=(k, d)) * sep * 3 / np.sqrt(d)
    y = g.integers(0, k, n)
    X = (means[y] + g.normal(size=(n, d))).astype(np.float32)
    a, b = 2 * n // 3, 2 * n // 3 + n // 6
    return X[:a], y[:a], X[a:b], y[a:b], X[b:], y[b:]


# converged solutions: with the same objective both solvers reach the same optimum; the full
# 45-λ sweep (no early stop), so that the whole val curves can be compared
TIGHT = {"max_iter": 1000, "tol": 1e-6, "path_patience": 0}


def test_lambda_grids():
    g = lambda_grid("vcr")
    assert len(g) == 45 and np.isclose(g[0], 1e-5) and np.isclose(g[-1], 1e5)
    s = lambda_grid("simclr")
    assert len(s) == 45 and np.isclose(s[0], 1e-6) and np.isclose(s[-1], 1e5)
    assert np.all(np.diff(np.log10(g)) > 0)
    with pytest.raises(ConfigError, match="lambda_grid"):
        lambda_grid("kornblith")


def test_accuracy_metrics():
    y = torch.tensor([0, 0, 0, 0, 1, 1])
    pred = torch.tensor([0, 0, 0, 0, 0, 1])
    assert accuracy(pred, y, "top1") == pytest.approx(5 / 6)
    assert accuracy(pred, y, "mean_per_class") == pytest.approx((1.0 + 0.5) / 2)
    with pytest.raises(ConfigError, match="metric"):
        accuracy(pred, y, "top5")


@pytest.mark.parametrize("metric", ["top1", "mean_per_class"])
def test_torch_lbfgs_matches_sklearn(metric):
    data = gaussian_features()
    t = linear_probe_lbfgs(*data, metric=metric, **TIGHT)
    s = sklearn_probe_reference(*data, metric=metric, **TIGHT)
    assert abs(t["test"] - s["test"]) <= 0.002  # within 0.2 points
    assert abs(t["best_index"] - s["best_index"]) <= 1  # same or adjacent λ
    assert np.allclose(t["val_scores"], s["val_scores"], atol=0.01)
    # the chosen λ is interior: the sweep actually selects something on this set
    assert 0 < t["best_index"] < 44
    assert max(t["val_scores"]) - min(t["val_scores"]) > 0.05


def test_default_settings_close_to_sklearn_defaults():
    """At the defaults (sklearn's max_iter=100, tol=1e-4) the fits stop early, at slightly
    different points of two L-BFGS implementations: still the same λ region and within 2 points
    (the 0.2-point agreement is for converged fits, above)."""
    data = gaussian_features(seed=1)
    t = linear_probe_lbfgs(*data, path_patience=0)
    s = sklearn_probe_reference(*data, path_patience=0)
    assert abs(t["test"] - s["test"]) <= 0.02
    assert abs(t["best_index"] - s["best_index"]) <= 1
    assert np.allclose(t["val_scores"], s["val_scores"], atol=0.03)


def test_path_patience_stops_early_at_the_same_lambda():
    """path_patience: the descending path stops once `patience` consecutive λ score below the
    best; on this set's unimodal val curve it picks the full sweep's λ (and test score)."""
    data = gaussian_features()
    full = linear_probe_lbfgs(*data, **TIGHT)  # path_patience=0
    assert full["n_fitted"] == 45 and all(full["fitted"]) and None not in full["val_scores"]
    converged = {**TIGHT, "path_patience": 5}
    early = linear_probe_lbfgs(*data, **converged)
    n = early["n_fitted"]
    assert 0 < n < 45
    # the same λ, val and test (the same warm-started path, cut short)
    assert early["best_index"] == full["best_index"]
    assert (early["val"], early["test"]) == (full["val"], full["test"])
    # descending: the fitted λ are the n largest; unfitted λ have no score and no iterations
    assert early["fitted"] == [False] * (45 - n) + [True] * n
    assert early["val_scores"][: 45 - n] == [None] * (45 - n)
    assert early["n_iter"][: 45 - n] == [0] * (45 - n)
    assert early["val_scores"][45 - n :] == full["val_scores"][45 - n :]
    # it stopped after exactly 5 λ strictly below the best, and the λ it skipped are worse
    best = full["val"]
    assert all(v < best for v in early["val_scores"][45 - n : 50 - n])
    assert early["val_scores"][50 - n] == best
    assert max(full["val_scores"][: 45 - n]) < best
    # the same rule on scikit-learn's path: the same λ, fitted λ and test score
    s = sklearn_probe_reference(*data, **converged)
    assert abs(s["best_index"] - early["best_index"]) <= 1
    assert abs(s["test"] - early["test"]) <= 0.002 and s["n_fitted"] < 45


def test_path_selection_rule():

    def run(scores, patience):
        sel = PathSelection(patience)
        for i, v in scores:
            if sel.add(i, v, None):
                return sel.index, i
        return sel.index, None

    # descending path (λ index 9 -> 0): a flat start ties the best and never stops the path
    desc = list(zip(range(9, -1, -1), [0.1, 0.1, 0.1, 0.1, 0.5, 0.7, 0.6, 0.5, 0.4, 0.9]))
    assert run(desc, 3) == (4, 1)  # stops at λ 1 after 3 worse λ; never sees λ 0's 0.9
    assert run(desc, 0) == (0, None)  # the full sweep
    # ties go to the smallest λ, whatever the order, and reset the patience
    assert run([(5, 0.5), (4, 0.4), (3, 0.5), (2, 0.4), (1, 0.4)], 2) == (3, 1)
    assert run([(1, 0.5), (2, 0.5), (3, 0.4)], 0) == (1, None)
    with pytest.raises(ConfigError, match="path_patience"):
        PathSelection(-1)


@pytest.mark.parametrize("rank", [2, 128])  # randomised (d=24 > 4 x 2) and exact covariance
def test_preconditioner_changes_the_path_not_the_optimum(rank):
    data = gaussian_features(seed=4)
    plain = linear_probe_lbfgs(*data, precond_rank=0, **TIGHT)
    pre = linear_probe_lbfgs(*data, precond_rank=rank, **TIGHT)
    assert pre["best_index"] == plain["best_index"]
    assert np.allclose(pre["val_scores"], plain["val_scores"], atol=0.01)
    assert abs(pre["test"] - plain["test"]) <= 0.002


def test_lambda_is_never_chosen_on_test():
    Xtr, ytr, Xval, yval, Xte, yte = gaussian_features(seed=2)
    ref = linear_probe_lbfgs(Xtr, ytr, Xval, yval, Xte, yte)
    g = np.random.default_rng(0)
    poisoned = [
        (Xte, g.permutation(yte)),  # permuted test labels
        (g.normal(size=Xte.shape).astype(np.float32) * 50, yte),  # garbage test features
        (Xte, np.zeros_like(yte)),  # a constant label
    ]
    for Xp, yp in poisoned:
        r = linear_probe_lbfgs(Xtr, ytr, Xval, yval, Xp, yp)
        assert r["best_lambda"] == ref["best_lambda"]
        assert r["val_scores"] == ref["val_scores"]
        assert r["val"] == ref["val"]
    # ...while the val split does drive the choice: other val labels, other λ curve
    r = linear_probe_lbfgs(Xtr, ytr, Xval, g.permutation(yval), Xte, yte)
    assert r["val_scores"] != ref["val_scores"]


def test_lbfgs_refits_on_train_plus_val():
    """The test score is that of a model refit on train+val, not of the train-only fit."""
    Xtr, ytr, Xval, yval, Xte, yte = gaussian_features(seed=3)
    r = linear_probe_lbfgs(Xtr, ytr, Xval, yval, Xte, yte, lambdas=[1.0])
    # the same refit done by hand
    s = sklearn_probe_reference(Xtr, ytr, Xval, yval, Xte, yte, lambdas=[1.0], **TIGHT)
    assert r["test"] == pytest.approx(s["test"], abs=0.01)
    assert r["refit_iter"] >= 0 and r["best_lambda"] == 1.0


def test_lbfgs_rejects_nonfinite_features():
    Xtr, ytr, Xval, yval, Xte, yte = gaussian_features()
    Xtr = Xtr.copy()
    Xtr[3, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        linear_probe_lbfgs(Xtr, ytr, Xval, yval, Xte, yte, lambdas=[1.0])


def test_lbfgs_config_keys():
    assert LbfgsConfig().lambda_grid == "vcr" and LbfgsConfig().num_lambdas == 45
    with pytest.raises(ConfigError, match="lambda_gird"):
        linear_probe_lbfgs(*gaussian_features(), lambda_gird="simclr")
    r = linear_probe_lbfgs(*gaussian_features(), lambda_grid="simclr", num_lambdas=5)
    assert np.isclose(r["lambdas"][0], 1e-6) and len(r["lambdas"]) == 5


def test_sgd_schedules_and_milestone_scaling():
    assert SGD_SCHEDULES["places205"]["milestones"] == (4, 8, 12)
    assert SGD_SCHEDULES["inat18"] == {
        "lr": 0.005,
        "weight_decay": 1e-4,
        "epochs": 84,
        "milestones": (24, 48, 72),
    }
    s = _sgd_settings(make_config("sgd"), "inat18")
    assert s["schedule"] == "inat18" and s["epochs"] == 84 and s["milestones"] == [24, 48, 72]
    s = _sgd_settings(make_config("sgd", {"epochs": 7}), "places205")
    assert s["epochs"] == 7 and s["milestones"] == [1, 2, 3] and s["lr"] == 0.003
    with pytest.raises(ConfigError, match="schedule"):
        _sgd_settings(make_config("sgd", {"schedule": "voc"}), None)


def test_sgd_and_adamw_heads_learn():
    data = gaussian_features(sep=1.5, seed=4)
    chance = 1 / 5
    r = linear_probe_sgd(*data, epochs=4, lr=0.05, eval_dataset="places205")
    assert r["test"] > chance + 0.3 and len(r["history"]) == 4
    # the 28-epoch schedule squeezed into 4 epochs: round(4*m/28) for m = 4, 8, 12
    assert r["config"]["milestones"] == [1, 2]
    a = linear_probe_adamw(*data, epochs=3)
    assert a["test"] > chance + 0.3 and a["config"]["lr"] == AdamwConfig().lr
    # deterministic for a seed
    assert linear_probe_adamw(*data, epochs=3)["test"] == a["test"]


def test_finetune_reports_the_epoch_chosen_on_val():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(3, 1, 6, 6, generator=g)

    def split(n):
        y = torch.randint(0, 3, (n,), generator=g)
        x = protos[y] + 0.8 * torch.randn(n, 1, 6, 6, generator=g)
        return torch.utils.data.TensorDataset(x, y)

    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 8), torch.nn.ReLU())
    r = finetune(
        backbone, split(90), split(45), split(45), num_classes=3, epochs=3, batch_size=16,
        lr_backbone=0.05, lr_head=0.1,
    )  # fmt: skip
    vals = [h["val"] for h in r["history"]]
    assert r["val"] == max(vals)
    assert r["best_epoch"] == 1 + vals.index(max(vals))  # ties: earliest epoch
    assert 0 <= r["test"] <= 1 and r["test"] > 0.4


def test_parse_sets_and_split_config():
    sets = parse_sets(["epochs=3", "lr=0.1", "target=sub", "milestones=[1, 2]"])
    assert sets == {"epochs": 3, "lr": 0.1, "target": "sub", "milestones": [1, 2]}
    cfg, com = split_config(type(make_config("sgd")), sets, common={"target": "default"})
    assert cfg.epochs == 3 and cfg.milestones == (1, 2) and com["target"] == "sub"
    with pytest.raises(ConfigError, match="epoch"):
        split_config(AdamwConfig, {"epoch": 3}, common={})
    with pytest.raises(ConfigError, match="key=value"):
        parse_sets(["epochs"])
    with pytest.raises(ConfigError, match="epochs"):
        split_config(AdamwConfig, {"epochs": "many"}, common={})
