"""The Fig. 2 toy: two moons, a small ReLU MLP, the Gradient-Starvation baselines and VCR.

Every method trains through ``vcr.train.training_step`` (the trainer's one step: task loss +
``vcr_penalty``, NaN stop). Settings are the ``two_moons`` recipe (PAPER_PROTOCOLS §7): full
batch on the 300 points, mean softplus loss log(1 + exp(-y f(x))) on labels ±1, SGD lr 1e-2
momentum 0.9, 10,000 epochs. Methods:

- ``none``: no regularisation.
- ``l2``: SGD weight decay 0.01 (GS code).
- ``dropout``: Dropout(p=0.7) on the hidden pre-activations (GS code).
- ``batchnorm``: BatchNorm1d on the hidden pre-activations (GS code).
- ``sd``: spectral decoupling, loss += 0.003 * mean(f(x)^2) (GS code's coefficient).
- ``vcr``: VCR on every hidden activation ("blocks" placement of the MLP). The paper gives no
  alpha/beta for the toy: recipe key ``two_moons_vcr`` = (alpha, beta), default (1.28, 0.16),
  the strongest point of the paper's grid (the toy has no validation split to choose on).

Network: VCR's "three-layer network" read as 2 -> 500 -> 500 -> 1 (``hidden_layers=2``, the
default of ``vcr.models.two_moons_mlp``); GS's own network is ``hidden_layers=1``.

Margin (per seed): the smallest Euclidean distance from a training point to the zero level set
of the logit. The level set is located by linear interpolation of the logit along the edges of
a grid over [-2, 2]^2 whose ends change sign: first a 201 x 201 grid (spacing 0.02), then, in
every crossed cell that could hold a closer crossing than the coarse minimum, a 21 x 21 sub-grid
(spacing 0.001). Distances to the interpolated crossings are exact, so the margin is accurate
to about the sub-grid spacing where the boundary is smooth (a boundary that enters and leaves a
coarse cell through the same edge is missed; the figure's scale makes that irrelevant). ``inf``
if the logit does not change sign on the grid.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vcr.errors import ConfigError
from vcr.names import TWO_MOONS_METHODS
from vcr.runlog import TaskProgress

# GS baseline strengths (recipe keys set per method unless the user overrides them), one entry
# per method of vcr.names.TWO_MOONS_METHODS, in the paper's panel order
METHOD_OVERRIDES = {
    "none": {},
    "l2": {"weight_decay": 0.01},
    "dropout": {"dropout": 0.7},
    "batchnorm": {"batchnorm": True},
    "sd": {"sd_coef": 0.003},
    "vcr": {},
}
if tuple(METHOD_OVERRIDES) != TWO_MOONS_METHODS:
    raise AssertionError(f"{tuple(METHOD_OVERRIDES)} != vcr.names.TWO_MOONS_METHODS")
GRID_POINTS = 100  # the figure's grid: 100 x 100 over [-2, 2]^2
MARGIN_COARSE = 201  # margin: coarse grid spacing 0.02 ...
MARGIN_REFINE = 20  # ... refined 20x in the cells near the closest crossing (spacing 0.001)


def method_recipe(method: str, overrides: dict | None = None):
    from vcr.recipes import get_recipe

    if method not in TWO_MOONS_METHODS:
        raise ConfigError(f"--method {method!r}: expected one of {TWO_MOONS_METHODS}")
    return get_recipe("two_moons", **{**METHOD_OVERRIDES[method], **(overrides or {})})


def build_net(recipe, method: str):
    from vcr.attach import attach_vcr
    from vcr.models import create_model

    model = create_model(
        "two_moons_mlp",
        hidden=(recipe.hidden,) * recipe.hidden_layers,
        dropout=recipe.dropout,
        batchnorm=recipe.batchnorm,
        num_classes=1,
    )
    if method == "vcr":
        alpha, beta = recipe.two_moons_vcr
        attach_vcr(model, "blocks", alpha=alpha, beta=beta, eps=recipe.vcr_eps)
    return model


def train_seed(method: str, seed: int, recipe, X=None, y=None):
    """Train one seed; returns (model in eval mode, X, y) with X (n, 2) and y in ±1."""
    from vcr.data import two_moons
    from vcr.train import training_step

    if X is None:
        X, y = two_moons(seed, margin=recipe.two_moons_margin, n=recipe.two_moons_n)
    x = torch.as_tensor(np.asarray(X), dtype=torch.float32)
    t = torch.as_tensor(np.asarray(y), dtype=torch.float32)
    torch.manual_seed(seed)  # data and initialisation both follow the seed (paper: "sampled")
    model = build_net(recipe, method)
    opt = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    sd = recipe.sd_coef

    def loss_fn(m, batch):
        xb, yb = batch
        f = m(xb).squeeze(1)
        loss = F.softplus(-yb * f).mean()
        if sd:
            loss = loss + sd * f.pow(2).mean()
        return loss, {}

    model.train()
    progress = TaskProgress(f"two-moons {method} seed {seed}", recipe.epochs, unit="epoch")
    for step in range(recipe.epochs):
        training_step(
            model,
            loss_fn,
            (x, t),
            opt,
            describe=lambda step=step: (
                f"(two-moons {method}, seed {seed}, step {step}, "
                f"alpha={recipe.two_moons_vcr[0]}, beta={recipe.two_moons_vcr[1]})"
            ),
        )
        progress.update()
    progress.close()
    return model.eval(), np.asarray(X), np.asarray(y)


@torch.no_grad()
def logit_grid(model, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """``out[i, j] = f(xs[j], ys[i])``."""
    gx, gy = np.meshgrid(xs, ys)
    pts = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32)
    return model(pts).squeeze(1).numpy().reshape(len(ys), len(xs)).astype(np.float64)


def zero_crossings(z: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Points (k, 2) where the logit crosses 0 along grid edges (linear interpolation)."""
    pts = []
    # horizontal edges: (i, j) -> (i, j+1)
    a, b = z[:, :-1], z[:, 1:]
    i, j = np.nonzero(np.signbit(a) != np.signbit(b))
    w = a[i, j] / (a[i, j] - b[i, j])
    pts.append(np.stack([xs[j] + w * (xs[j + 1] - xs[j]), ys[i]], 1))
    # vertical edges: (i, j) -> (i+1, j)
    a, b = z[:-1, :], z[1:, :]
    i, j = np.nonzero(np.signbit(a) != np.signbit(b))
    w = a[i, j] / (a[i, j] - b[i, j])
    pts.append(np.stack([xs[j], ys[i] + w * (ys[i + 1] - ys[i])], 1))
    return np.concatenate(pts, 0)


def margin(
    model,
    X: np.ndarray,
    *,
    coarse: int = MARGIN_COARSE,
    refine: int = MARGIN_REFINE,
    lim: float = 2.0,
) -> float:
    """Min distance from a training point to the logit's zero level set (see module doc)."""
    g = np.linspace(-lim, lim, coarse)
    z = logit_grid(model, g, g)
    crossings = zero_crossings(z, g, g)
    if len(crossings) == 0:
        return float("inf")
    best = _min_dist(X, crossings)
    # refine the cells the boundary crosses that may hold a closer point than the coarse one
    h = g[1] - g[0]
    neg = np.signbit(z)
    corners = neg[:-1, :-1].astype(int) + neg[1:, :-1] + neg[:-1, 1:] + neg[1:, 1:]
    ci, cj = np.nonzero((corners > 0) & (corners < 4))
    centers = np.stack([g[cj] + h / 2, g[ci] + h / 2], 1)
    near = _min_dist_each(centers, X) <= best + h
    fine = np.linspace(0.0, h, refine + 1)
    for i, j in zip(ci[near], cj[near]):
        fx, fy = g[j] + fine, g[i] + fine
        c = zero_crossings(logit_grid(model, fx, fy), fx, fy)
        if len(c):
            best = min(best, _min_dist(X, c))
    return float(best)


def _min_dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1).min()))


def _min_dist_each(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For every row of ``a`` its distance to the nearest row of ``b``."""
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1).min(1))


def run_method(method: str, seeds, overrides: dict | None = None) -> dict:
    """Train every seed; the dict the Fig. 2 code reads (see workflow_scripts/two_moons.py)."""
    recipe = method_recipe(method, overrides)
    xs = np.linspace(-2.0, 2.0, GRID_POINTS)
    logits, margins = [], []
    X0 = y0 = None
    for s in seeds:
        model, X, y = train_seed(method, int(s), recipe)
        if X0 is None:
            X0, y0 = X, y
        logits.append(logit_grid(model, xs, xs))
        margins.append(margin(model, X))
    return {
        "method": method,
        "seeds": [int(s) for s in seeds],
        "grid": {"xs": torch.as_tensor(xs), "ys": torch.as_tensor(xs)},
        "logits": torch.as_tensor(np.stack(logits)),
        "margins": torch.as_tensor(np.asarray(margins, dtype=np.float64)),
        "X": torch.as_tensor(X0),
        "y": torch.as_tensor(y0),
        "config": recipe.to_dict(),
    }
