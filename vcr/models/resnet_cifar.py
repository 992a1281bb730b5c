"""CIFAR ResNet (Cao et al. 2019 / Idelbayev), PAPER_PROTOCOLS.md section 6: Table 3's ResNet-32."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from vcr.errors import ConfigError
from vcr.models.registry import register_model


class _ShortcutA(nn.Module):
    """Option-A shortcut: parameter-free; subsample by 2 and zero-pad the channels."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlockA(nn.Module):
    """conv3x3-BN-ReLU, conv3x3-BN, + shortcut, ReLU (LDAM-DRW ``models/resnet_cifar.py``)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "A"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                self.shortcut = _ShortcutA(planes // 4)
            elif shortcut == "B":
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
                )
            else:
                raise ConfigError(f"cifar_resnet shortcut={shortcut!r} is not 'A' or 'B'")

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: stem 3x3 conv 3->16, three stages of n BasicBlocks with
    widths 16/32/64 and strides 1/2/2, global average pooling, linear classifier.

    Module names follow timm's layout (``stem``, ``layer1..3``, ``global_pool``, ``fc``) so the
    attach logic and ``forward_features``/``forward_head`` work as for timm models.
    """

    def __init__(
        self,
        depth: int = 32,
        num_classes: int = 10,
        widths: tuple[int, int, int] = (16, 32, 64),
        shortcut: str = "A",
        in_chans: int = 3,
    ):
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ConfigError(f"cifar_resnet depth={depth} must be 6n+2 (20, 32, 44, 56, 110)")
        n = (depth - 2) // 6
        self.depth = depth
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        in_planes = widths[0]
        for i, (w, s) in enumerate(zip(widths, (1, 2, 2)), start=1):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlockA(in_planes, w, s if j == 0 else 1, shortcut))
                in_planes = w
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        self.num_features = in_planes
        self.num_classes = num_classes
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            # kaiming_normal_ (fan_in) on every Conv2d and Linear weight, as LDAM's _weights_init
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward_features(self, x):
        return self.layer3(self.layer2(self.layer1(self.stem(x))))

    def forward_head(self, x, pre_logits: bool = False):
        x = self.global_pool(x).flatten(1)
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


@register_model
def cifar_resnet(depth: int = 32, num_classes: int = 10, **kwargs) -> CifarResNet:
    return CifarResNet(depth=depth, num_classes=num_classes, **kwargs)


@register_model
def cifar_resnet32(num_classes: int = 10, **kwargs) -> CifarResNet:
    """ResNet-32 of Cao et al. (LDAM-DRW): 5 BasicBlocks per stage, option-A shortcuts, ~0.46M
    parameters; used by Table 3 (long-tail CIFAR)."""
    return CifarResNet(depth=32, num_classes=num_classes, **kwargs)
