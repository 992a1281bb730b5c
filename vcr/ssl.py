"""Self-supervised pretraining pieces for Table 4: SimCLR's InfoNCE, VICReg's loss and the SSL
model (backbone + projector, classes from ``vcr.models``). The two views come from the ``ssl``
transform of ``vcr.data.transforms``; LARS is in ``vcr.optim``.

Choices where VCR and its sources disagree (PAPER_PROTOCOLS §9):
- Projectors as VCR describes them, built by ``vcr.models``: SimCLR 2048-2048-256 with BN after
  every layer (SimCLR v1 used a 128-d output); VICReg "two-layer" 2048-8192-8192 with BN after
  every layer (the VICReg code has three layers 8192-8192-8192, the last without BN). Sizes are
  recipe keys (``projector_hidden``/``projector_out``, ``projector_dims``).
- InfoNCE (NT-Xent) over the 2N views of the GLOBAL batch (features gathered over ranks with
  gradient), temperature 0.1, cosine similarity, each view's positive is its pair.
- VICReg loss as coded by its authors: MSE invariance, std = sqrt(var + 1e-4) hinge at 1 averaged
  over the two branches, covariance off-diagonal squares / d per branch, on features gathered
  over ranks, coefficients 25/25/1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vcr.distributed import gather_with_grad


def info_nce_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent of SimCLR on the global batch: ``z1[i]`` and ``z2[i]`` are the positive pair."""
    z = torch.cat([gather_with_grad(z1), gather_with_grad(z2)], dim=0).float()
    z = F.normalize(z, dim=1)
    n = z.shape[0] // 2
    logits = z @ z.t() / temperature
    logits.fill_diagonal_(float("-inf"))  # a view is not its own negative
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, target)


def _off_diagonal(m: torch.Tensor) -> torch.Tensor:
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def vicreg_terms(z1: torch.Tensor, z2: torch.Tensor) -> dict[str, torch.Tensor]:
    """VICReg's three terms (invariance on the local batch; variance/covariance on the global
    batch, like the authors' code)."""
    repr_loss = F.mse_loss(z1.float(), z2.float())
    x = gather_with_grad(z1).float()
    y = gather_with_grad(z2).float()
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + 1e-4)
    std_y = torch.sqrt(y.var(dim=0) + 1e-4)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    n, d = x.shape
    cov_x = (x.T @ x) / (n - 1)
    cov_y = (y.T @ y) / (n - 1)
    cov_loss = _off_diagonal(cov_x).pow(2).sum() / d + _off_diagonal(cov_y).pow(2).sum() / d
    return {"sim": repr_loss, "std": std_loss, "cov": cov_loss}


def vicreg_loss(z1, z2, coeffs=(25.0, 25.0, 1.0)) -> torch.Tensor:
    t = vicreg_terms(z1, z2)
    return coeffs[0] * t["sim"] + coeffs[1] * t["std"] + coeffs[2] * t["cov"]


def build_ssl_model(arch: str, method: str, recipe) -> nn.Module:
    """``vcr.models.SSLModel``: backbone (``num_classes=0``, pooled features) + projector.

    VCR is attached to the backbone only (``vcr.attach`` handles SSL models; App. B.4).
    """
    from vcr.models import SSLModel, create_model, feature_dim

    backbone = create_model(arch, num_classes=0, **recipe.model_kwargs)
    return SSLModel(backbone, build_projector(method, feature_dim(backbone), recipe))


def build_projector(method: str, in_dim: int, recipe) -> nn.Module:
    from vcr import models

    if method == "simclr":
        return models.simclr_projector(
            in_dim, hidden=recipe.projector_hidden, out=recipe.projector_out
        )
    if method == "vicreg":
        return models.vicreg_projector(in_dim, dims=tuple(recipe.projector_dims))
    raise ValueError(f"no projector for method {method!r}")


def ssl_loss(method: str, z1, z2, recipe) -> tuple[torch.Tensor, dict[str, float]]:
    """The method's loss and its logged parts (detached tensors: read at logging steps)."""
    if method == "simclr":
        loss = info_nce_loss(z1, z2, recipe.temperature)
        return loss, {"ssl/info_nce": loss.detach()}
    if method == "vicreg":
        t = vicreg_terms(z1, z2)
        c = recipe.vicreg_coeffs
        loss = c[0] * t["sim"] + c[1] * t["std"] + c[2] * t["cov"]
        return loss, {f"ssl/{k}": v.detach() for k, v in t.items()}
    raise ValueError(f"unknown SSL method {method!r}")
