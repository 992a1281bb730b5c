"""The released torchvision weights of the Table 1 baselines, loaded into our timm models.

The paper downloaded torchvision's weights for its baselines ("we abstained from pretraining any
of the baseline models"); at paper scale ``pretrain.py --init-weights FILE --set epochs=0`` imports
them into a run folder so they are probed like any other run. Which file each recipe imports is
config ``table1.weights`` (the released file names, below ``data_root``). The key maps sit here,
beside the models they load into.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vcr.errors import ConfigError


def _map_convnext(sd: dict) -> dict:
    """torchvision ConvNeXt keys -> timm ConvNeXt keys (features[2k+1] = stage k)."""
    out = {}
    for k, v in sd.items():
        p = k.split(".")
        if p[0] == "features":
            i = int(p[1])
            if i == 0:  # stem: conv, LayerNorm2d
                out[f"stem.{p[2]}.{p[3]}"] = v
            elif i % 2 == 0:  # downsample before stage i//2: LayerNorm2d, conv
                out[f"stages.{i // 2}.downsample.{p[2]}.{p[3]}"] = v
            else:
                s, b = (i - 1) // 2, p[2]
                rest = ".".join(p[3:])
                name = {
                    "block.0.weight": "conv_dw.weight",
                    "block.0.bias": "conv_dw.bias",
                    "block.2.weight": "norm.weight",
                    "block.2.bias": "norm.bias",
                    "block.3.weight": "mlp.fc1.weight",
                    "block.3.bias": "mlp.fc1.bias",
                    "block.5.weight": "mlp.fc2.weight",
                    "block.5.bias": "mlp.fc2.bias",
                    "layer_scale": "gamma",
                }[rest]
                out[f"stages.{s}.blocks.{b}.{name}"] = v.flatten() if name == "gamma" else v
        elif p[0] == "classifier":
            out[{"0": "head.norm", "2": "head.fc"}[p[1]] + "." + p[2]] = v
    return out


def _map_vit(sd: dict) -> dict:
    """torchvision VisionTransformer keys -> timm VisionTransformer keys."""
    out = {}
    for k, v in sd.items():
        if k.startswith("conv_proj."):
            out["patch_embed.proj." + k.split(".", 1)[1]] = v
        elif k == "class_token":
            out["cls_token"] = v
        elif k == "encoder.pos_embedding":
            out["pos_embed"] = v
        elif k.startswith("encoder.ln."):
            out["norm." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("heads.head."):
            out["head." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("encoder.layers.encoder_layer_"):
            rest = k[len("encoder.layers.encoder_layer_") :]
            i, rest = rest.split(".", 1)
            name = {
                "ln_1": "norm1",
                "ln_2": "norm2",
                "self_attention.in_proj": "attn.qkv",
                "self_attention.out_proj": "attn.proj",
                "mlp.0": "mlp.fc1",
                "mlp.3": "mlp.fc2",
            }
            stem, last = rest.rsplit(".", 1)
            if rest.startswith("self_attention.in_proj_"):
                stem, last = "self_attention.in_proj", rest.rsplit("_", 1)[1]
            out[f"blocks.{i}.{name[stem]}.{last}"] = v
    return out


def load_torchvision_weights(model: nn.Module, path, arch: str) -> None:
    """Load a torchvision state dict (Table 1 baselines) into our timm model.

    resnet50: timm's ResNet uses torchvision's key names, so V1 and V2 weights load directly
    (which one is chosen by the file). convnext_tiny and vit_base_patch32_224: keys mapped
    (torchvision ConvNeXt-T / ViT-B/32 are the same networks as these timm models).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"--init-weights {path}: no such file; download the torchvision weights (e.g. "
            "torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url) and pass the .pth file"
        )
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    if arch.startswith("convnext"):
        sd = _map_convnext(sd)
    elif arch.startswith("vit"):
        sd = _map_vit(sd)
    elif not arch.startswith("resnet"):
        raise ConfigError(
            f"--init-weights: arch {arch!r} has no torchvision key mapping "
            "(supported: resnet*, convnext_*, vit_*)"
        )
    # a classifier of another width (1000 ImageNet classes vs the run's) is not imported: the
    # run trains its own head (the backbone, what the probes use, is always complete)
    own = model.state_dict()
    head = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    if head and not all(k.startswith(("fc.", "head.")) for k in head):
        raise ConfigError(f"--init-weights {path}: shapes differ for {head[:5]} (arch {arch!r})")
    sd = {k: v for k, v in sd.items() if k not in head}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k not in head]
    if missing or unexpected:
        raise ConfigError(
            f"--init-weights {path} does not fit arch {arch!r}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
