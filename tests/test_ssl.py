"""SimCLR InfoNCE, VICReg loss and LARS against direct formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vcr.optim import LARS
from vcr.ssl import info_nce_loss, vicreg_loss, vicreg_terms


def test_info_nce_matches_per_row_formula():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    t = 0.1
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = 5
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        sims = [float(z[i] @ z[k]) / t for k in range(2 * n) if k != i]
        total += -(float(z[i] @ z[pos]) / t - math.log(sum(math.exp(s) for s in sims)))
    assert float(info_nce_loss(z1, z2, t)) == pytest.approx(total / (2 * n), rel=1e-5)
    # identical views with far-apart rows: near-zero loss
    eye = torch.eye(4) * 10
    assert float(info_nce_loss(eye, eye, 0.05)) < 1e-3


def test_vicreg_terms_match_definitions():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    t = vicreg_terms(x, y)
    assert float(t["sim"]) == pytest.approx(float(((x - y) ** 2).mean()))
    std = lambda a: torch.sqrt(a.var(0) + 1e-4)  # noqa: E731
    want_std = float(F.relu(1 - std(x)).mean() / 2 + F.relu(1 - std(y)).mean() / 2)
    assert float(t["std"]) == pytest.approx(want_std)
    cov = lambda a: torch.cov(a.T)  # noqa: E731
    off = lambda c: (c**2).sum() - (torch.diagonal(c) ** 2).sum()  # noqa: E731
    assert float(t["cov"]) == pytest.approx(float(off(cov(x)) / 3 + off(cov(y)) / 3), rel=1e-5)
    want = 25 * t["sim"] + 25 * t["std"] + 1 * t["cov"]
    assert float(vicreg_loss(x, y)) == pytest.approx(float(want))


def test_lars_step_and_exclusion():
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))
    b = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = LARS(
        [{"params": [w]}, {"params": [b], "weight_decay": 0.0, "lars_exclude": True}],
        lr=0.1,
        weight_decay=0.5,
        momentum=0.9,
        eta=0.001,
    )
    w.grad = torch.tensor([[1.0, 0.0]])
    b.grad = torch.tensor([0.5, 0.5])
    w0, b0 = w.detach().clone(), b.detach().clone()
    opt.step()
    dp = w.grad + 0.5 * w0
    q = 0.001 * w0.norm() / dp.norm()
    assert torch.allclose(w.detach(), w0 - 0.1 * q * dp)
    assert torch.allclose(b.detach(), b0 - 0.1 * b.grad)  # plain SGD: no wd, no trust ratio
    opt.step()  # momentum accumulates
    assert "mu" in opt.state[w]
