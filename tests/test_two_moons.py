"""Fig. 2 toy: methods, output file format, margins, CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vcr import two_moons as tm
from vcr.attach import vcr_layers
from vcr.cli import parse_seeds
from vcr.errors import ConfigError, NonFiniteError
from vcr.names import TWO_MOONS_METHODS

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"epochs": 30, "hidden": 16}


class Plane(nn.Module):
    """f(x, y) = a x + b y + c: its zero set is a line with known distances."""

    def __init__(self, a, b, c):
        super().__init__()
        self.w = torch.tensor([a, b], dtype=torch.float32)
        self.c = c

    def forward(self, p):
        return (p @ self.w + self.c)[:, None]


def test_margin_matches_exact_distance_to_a_line():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1.5, 1.5, size=(50, 2))
    a, b, c = 0.8, -0.6, 0.25
    exact = np.abs(X @ np.array([a, b]) + c).min() / np.hypot(a, b)
    assert tm.margin(Plane(a, b, c), X) == pytest.approx(exact, abs=2e-3)
    assert tm.margin(Plane(0.0, 0.0, 1.0), X) == float("inf")  # no boundary on the grid


def test_logit_grid_orientation():
    xs, ys = np.linspace(-2, 2, 5), np.linspace(-1, 1, 3)
    z = tm.logit_grid(Plane(1.0, 10.0, 0.0), xs, ys)
    assert z.shape == (3, 5)
    assert z[2, 4] == pytest.approx(xs[4] + 10 * ys[2])  # z[i, j] = f(xs[j], ys[i])


@pytest.mark.parametrize("method", TWO_MOONS_METHODS)
def test_every_method_trains_and_sets_its_regulariser(method):
    recipe = tm.method_recipe(method, SMALL)
    model = tm.build_net(recipe, method)
    assert (len(vcr_layers(model)) == recipe.hidden_layers) == (method == "vcr")
    assert any(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == (method == "batchnorm")
    assert any(isinstance(m, nn.Dropout) for m in model.modules()) == (method == "dropout")
    assert (recipe.weight_decay > 0) == (method == "l2")
    assert (recipe.sd_coef > 0) == (method == "sd")
    out = tm.run_method(method, [0], SMALL)
    assert out["logits"].shape == (1, tm.GRID_POINTS, tm.GRID_POINTS)
    assert out["margins"].shape == (1,) and torch.isfinite(out["margins"]).all()
    assert out["X"].shape == (300, 2) and set(out["y"].tolist()) == {-1, 1}
    assert len(out["grid"]["xs"]) == 100 and out["grid"]["xs"][0] == -2.0
    assert out["config"]["hidden"] == 16 and out["seeds"] == [0]


def test_seeds_differ_and_repeat():
    a = tm.run_method("none", [0, 1], SMALL)
    b = tm.run_method("none", [0], SMALL)
    assert torch.equal(a["logits"][0], b["logits"][0])
    assert not torch.equal(a["logits"][0], a["logits"][1])


def test_errors():
    with pytest.raises(ConfigError, match="method"):
        tm.method_recipe("adam")
    with pytest.raises(ConfigError, match="unknown key"):
        tm.method_recipe("none", {"hiden": 3})
    assert parse_seeds("0-2,5") == [0, 1, 2, 5]
    with pytest.raises(NonFiniteError, match="seed 0"):
        tm.train_seed("none", 0, tm.method_recipe("none", {**SMALL, "lr": 1e30}))


def test_cli_writes_the_file_the_figure_reads(tmp_path):
    out = tmp_path / "vcr.pt"
    cmd = [
        sys.executable,
        str(ROOT / "workflow_scripts" / "two_moons.py"),
        "--method",
        "vcr",
        "--seeds",
        "0-1",
        "--out",
        str(out),
        "--set",
        "epochs=20",
        "hidden=8",
        "--threads",
        "1",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    data = torch.load(out, weights_only=False)
    assert data["method"] == "vcr" and data["logits"].shape == (2, 100, 100)
    from vcr import figures

    loaded = figures.load_two_moons(out) if hasattr(figures, "load_two_moons") else data
    assert loaded is not None
