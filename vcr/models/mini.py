"""Mini models for the CPU pipeline: small ResNet / ConvNeXt / ViT in plain torch, with timm's
module layout and method names (so ``vcr.attach`` places VCR on them exactly as on the timm
models, and features/probes use the same calls).

Plain torch because importing timm costs ~2 s per process (it imports torchvision and
torch._dynamo), and the mini pipeline starts ~140 processes; the real architectures (Tables 1-6
at cifar/paper scale) are timm's own. ``tests/test_models.py`` loads each timm twin's weights into
its mini model and checks equal outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vcr.errors import ConfigError
from vcr.models.registry import register_model


class _TimmLike(nn.Module):
    """forward = forward_head(forward_features(x)); ``fc``-style classifier helpers."""

    classifier_name = "fc"

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.classifier_name)

    def _make_classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


class Bottleneck(nn.Module):
    """timm/torchvision ResNet bottleneck (1x1, 3x3 with the stride, 1x1 x4); the last BN's
    weight starts at zero when ``zero_init_last`` (timm's default; torchvision's is not to)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, zero_init_last: bool = True):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        if zero_init_last:
            nn.init.zeros_(self.bn3.weight)
        self.downsample = None
        if stride != 1 or inplanes != out:  # projection shortcut (a VCR "downsample" site)
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(_TimmLike):
    """Small bottleneck ResNet for 32x32 images, named like timm's ``ResNet`` (conv1, bn1,
    maxpool, layer1..4 of blocks with ``downsample``, global_pool, fc)."""

    def __init__(
        self, num_classes, channels, layers, stem_width, stem_stride, stem_pool, zero_init_last
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem_width, 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem_pool else nn.Identity()
        inplanes = stem_width
        for i, (planes, n) in enumerate(zip(channels, layers), start=1):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 1 and j == 0) else 1
                blocks.append(Bottleneck(inplanes, planes, stride, zero_init_last))
                inplanes = planes * Bottleneck.expansion
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        self.num_features = inplanes
        self.num_classes = num_classes
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = self._make_classifier(num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x, pre_logits: bool = False):
        x = self.global_pool(x).flatten(1)
        return x if pre_logits else self.fc(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = self._make_classifier(num_classes)


@register_model
def mini_resnet(
    num_classes: int = 10,
    channels: tuple[int, ...] = (8, 16, 32, 64),
    layers: tuple[int, ...] = (1, 1, 1, 1),
    stem_width: int = 16,
    stem_stride: int = 2,
    stem_pool: bool = True,
    zero_init_last: bool = True,
) -> nn.Module:
    """Bottleneck ResNet (4x expansion: block outputs 32..256 wide), layers (1,1,1,1), a 3x3/2
    stem conv + 3x3/2 max-pool: stage resolutions 8/4/2/1 on 32x32 inputs. Module names as timm
    resnet50, so attach places VCR the same way (4 blocks, stem pool + 4 projection shortcuts).

    ``zero_init_last`` as timm's ResNet (the torchvision recipes pass False, as torchvision).

    Budget choice: the mini pipeline trains ~60 models on 2 CPU cores; with ``stem_stride=1,
    stem_pool=False`` (stages at 32..4, CIFAR practice) one step costs ~9x more.
    """
    if stem_width % 2:
        raise ConfigError(f"mini_resnet stem_width={stem_width} must be even")
    return ResNet(
        num_classes,
        tuple(channels),
        tuple(layers),
        stem_width,
        stem_stride,
        stem_pool,
        zero_init_last,
    )


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (timm's LayerNorm2d)."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        return super().forward(x).permute(0, 3, 1, 2)


class DropPath(nn.Module):
    """Stochastic depth on a residual branch (timm's ``DropPath``): drop the whole branch per
    sample with probability ``p`` in training, scale the kept ones by 1 / (1 - p)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


def _drop_rates(rate: float, n: int) -> list[float]:
    """timm's schedule: linearly from 0 to ``rate`` over the ``n`` blocks."""
    return [rate * i / max(n - 1, 1) for i in range(n)]


def _mlp(dim: int, hidden: int) -> nn.Sequential:
    """timm's ``Mlp`` (fc1, act, fc2)."""
    from collections import OrderedDict

    return nn.Sequential(
        OrderedDict(fc1=nn.Linear(dim, hidden), act=nn.GELU(), fc2=nn.Linear(hidden, dim))
    )


class ConvNeXtBlock(nn.Module):
    """depthwise kxk conv, LayerNorm, Linear 4x, GELU, Linear, layer scale (1e-6), residual."""

    def __init__(self, dim: int, kernel_size: int, drop_path: float = 0.0):
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _mlp(dim, 4 * dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        y = self.conv_dw(x).permute(0, 2, 3, 1)
        y = self.mlp(self.norm(y)) * self.gamma
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class ConvNeXtStage(nn.Module):
    def __init__(self, in_dim: int, dim: int, kernel_size: int, stride: int, drop_paths):
        super().__init__()
        self.downsample = (
            nn.Sequential(LayerNorm2d(in_dim, eps=1e-6), nn.Conv2d(in_dim, dim, stride, stride))
            if stride > 1 or in_dim != dim
            else nn.Identity()
        )
        self.blocks = nn.Sequential(*(ConvNeXtBlock(dim, kernel_size, p) for p in drop_paths))

    def forward(self, x):
        return self.blocks(self.downsample(x))


class ConvNeXt(_TimmLike):
    """Small ConvNeXt named like timm's (stem, stages.i.downsample, stages.i.blocks, head.fc)."""

    classifier_name = "head.fc"

    def __init__(self, num_classes, depths, dims, patch_size, kernel_size, drop_path_rate=0.0):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, dims[0], patch_size, patch_size), LayerNorm2d(dims[0], eps=1e-6)
        )
        # as timm for patch_size < 4: stage 0 gets its own 2x downsample
        strides = [2 if patch_size < 4 else 1] + [2] * (len(dims) - 1)
        in_dims = [dims[0], *dims[:-1]]
        rates = _drop_rates(drop_path_rate, sum(depths))
        ends = [sum(depths[: i + 1]) for i in range(len(depths))]
        per_stage = [rates[e - n : e] for e, n in zip(ends, depths)]
        self.stages = nn.Sequential(
            *(
                ConvNeXtStage(i, d, kernel_size, s, p)
                for i, d, s, p in zip(in_dims, dims, strides, per_stage)
            )
        )
        self.num_features = dims[-1]
        self.num_classes = num_classes
        self.head = nn.Module()
        self.head.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head.fc = self._make_classifier(num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward_features(self, x):
        return self.stages(self.stem(x))

    def forward_head(self, x, pre_logits: bool = False):
        x = self.head.norm(self.head.global_pool(x).flatten(1))
        return x if pre_logits else self.head.fc(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head.fc = self._make_classifier(num_classes)


@register_model
def mini_convnext(
    num_classes: int = 10,
    depths: tuple[int, ...] = (1, 1, 2, 1),
    dims: tuple[int, ...] = (16, 32, 64, 128),
    patch_size: int = 2,
    kernel_sizes: int = 3,
    drop_path_rate: float = 0.0,
) -> nn.Module:
    """Small ConvNeXt: 2x2 patchify stem, then (as timm for patches < 4) stage 0 gets its own 2x
    downsample, so stages run at 8/4/2/1 on 32x32 inputs (5 downsample layers, 5 blocks with
    depths (1,1,2,1)), dims 16..128, 3x3 depthwise kernels (7x7 is larger than the late maps).
    """
    return ConvNeXt(
        num_classes, tuple(depths), tuple(dims), patch_size, kernel_sizes, drop_path_rate
    )


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    """Pre-norm transformer block (timm's ``Block``: norm1, attn, norm2, mlp.fc1/fc2)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(_TimmLike):
    """Small ViT named like timm's (patch_embed.proj, cls_token, pos_embed, blocks, norm, head);
    the pooled feature is the class token after the final norm."""

    classifier_name = "head"

    def __init__(
        self, num_classes, img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio,
        drop_path_rate=0.0,
    ):  # fmt: skip
        super().__init__()
        if img_size % patch_size:
            raise ConfigError(f"mini_vit img_size={img_size} is not a multiple of {patch_size}")
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, embed_dim, patch_size, patch_size)
        tokens = (img_size // patch_size) ** 2 + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, embed_dim) * 0.02)
        self.blocks = nn.Sequential(
            *(Block(embed_dim, num_heads, mlp_ratio, p) for p in _drop_rates(drop_path_rate, depth))
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.num_features = embed_dim
        self.num_classes = num_classes
        self.head = self._make_classifier(num_classes)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward_features(self, x):
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        return self.norm(self.blocks(x))

    def forward_head(self, x, pre_logits: bool = False):
        x = x[:, 0]
        return x if pre_logits else self.head(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = self._make_classifier(num_classes)


@register_model
def mini_vit(
    num_classes: int = 10,
    img_size: int = 32,
    patch_size: int = 8,
    embed_dim: int = 48,
    depth: int = 4,
    num_heads: int = 3,
    mlp_ratio: float = 2.0,
    drop_path_rate: float = 0.0,
) -> nn.Module:
    """Small ViT for 32x32 inputs: 8x8 patches (16 tokens + class token), width 48, 4 blocks,
    3 heads, MLP ratio 2 (width 64 costs ~1.7x the step time)."""
    return VisionTransformer(
        num_classes, img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio, drop_path_rate
    )
