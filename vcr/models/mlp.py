"""The Fig. 2 toy network (two-moons MLP)."""

from __future__ import annotations

from torch import nn

from vcr.models.registry import register_model


class TwoMoonsMLP(nn.Module):
    """in_dim -> hidden... -> num_classes MLP; ``blocks[i]`` = Linear [BN] [Dropout] ReLU.

    Dropout and BatchNorm1d act on the hidden pre-activations, as in the Gradient Starvation
    baselines (PAPER_PROTOCOLS.md section 7). The block outputs (hidden activations) are where
    VCR's "blocks" placement goes.
    """

    def __init__(
        self,
        hidden: tuple[int, ...] = (500, 500),
        dropout: float = 0.0,
        batchnorm: bool = False,
        num_classes: int = 1,
        in_dim: int = 2,
    ):
        super().__init__()
        blocks = []
        d = in_dim
        for width in hidden:
            layers: list[nn.Module] = [nn.Linear(d, width)]
            if batchnorm:
                layers.append(nn.BatchNorm1d(width))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            layers.append(nn.ReLU())
            blocks.append(nn.Sequential(*layers))
            d = width
        self.blocks = nn.Sequential(*blocks)
        self.num_features = d
        self.num_classes = num_classes
        self.fc = nn.Linear(d, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x):
        return self.blocks(x)

    def forward_head(self, x, pre_logits: bool = False):
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.fc(self.blocks(x))

    def get_classifier(self) -> nn.Module:
        return self.fc


@register_model
def two_moons_mlp(
    hidden: tuple[int, ...] = (500, 500),
    dropout: float = 0.0,
    batchnorm: bool = False,
    num_classes: int = 1,
    in_dim: int = 2,
) -> TwoMoonsMLP:
    """The Fig. 2 toy network. VCR says "three-layer network": 2->500->500->1 by default.
    The Gradient-Starvation network is ``hidden=(500,)`` (2->500->1); its deeper variant is
    ``hidden=(500,) * 4``. One output logit (labels are +-1, softplus loss)."""
    return TwoMoonsMLP(tuple(hidden), dropout, batchnorm, num_classes, in_dim)
