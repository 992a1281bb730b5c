"""SSL heads (Table 4, App. B.4): the SimCLR and VICReg projectors and backbone + projector."""

from __future__ import annotations

from torch import nn

from vcr.errors import ConfigError
from vcr.models.registry import feature_dim


class BatchNormNoShift(nn.BatchNorm1d):
    """BatchNorm1d with a learnable scale and no learnable shift (SimCLR's ``center=False``)."""

    def __init__(self, num_features: int, **kwargs):
        super().__init__(num_features, affine=True, **kwargs)
        self.register_parameter("bias", None)


def simclr_projector(in_dim: int, hidden: int = 2048, out: int = 256) -> nn.Sequential:
    """VCR App. B.4: two-layer MLP in_dim->2048->256, ReLU between, BN after every layer.
    (SimCLR v1 itself projects to 128; ``out=128`` gives that.) Biases and shifts as SimCLR v1's
    ``linear_layer``: a Linear followed by a BN has no bias (the BN's shift replaces it), and
    the last BN has no shift either (``center=False``), only a scale."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out, bias=False),
        BatchNormNoShift(out),
    )


def vicreg_projector(
    in_dim: int,
    dims: tuple[int, ...] | None = None,
    *,
    variant: str = "vcr",
) -> nn.Sequential:
    """VICReg projector ("expander").

    ``variant="vcr"`` (default): VCR App. B.4's text, two layers in_dim->8192->8192 with BN after
    every layer. ``variant="vicreg"``: VICReg's own code, three layers 8192-8192-8192 with
    BN+ReLU after the hidden ones and a bias-free last Linear without BN. ``dims`` overrides the
    widths of either variant.
    """
    if variant not in ("vcr", "vicreg"):
        raise ConfigError(f"vicreg_projector variant={variant!r} is not 'vcr' or 'vicreg'")
    if dims is None:
        dims = (8192, 8192) if variant == "vcr" else (8192, 8192, 8192)
    layers: list[nn.Module] = []
    d = in_dim
    for i, width in enumerate(dims):
        last = i == len(dims) - 1
        if last and variant == "vicreg":
            layers.append(nn.Linear(d, width, bias=False))
        else:
            layers += [nn.Linear(d, width), nn.BatchNorm1d(width)]
            if not last:
                layers.append(nn.ReLU(inplace=True))
        d = width
    return nn.Sequential(*layers)


class SSLModel(nn.Module):
    """``backbone`` (a ``num_classes=0`` model returning pooled features) + ``projector``.

    ``forward(x)`` returns the projector's embedding; ``forward_features(x)`` the backbone
    features. ``vcr.attach`` puts VCR on the backbone (App. B.4), optionally also on the
    projector.
    """

    def __init__(self, backbone: nn.Module, projector: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.projector = projector
        self.num_features = feature_dim(backbone)

    def forward_features(self, x):
        return self.backbone(x)

    def forward(self, x):
        return self.projector(self.backbone(x))
