"""Backbone files: what a pretraining run leaves (``backbone.pt``) and every probe loads.

A backbone file is ``{"arch", "model_kwargs", "state_dict", "feature_dim", "extra"}``: plain
tensors and names, no pickled classes, so it loads with ``weights_only=True``.
"""

from __future__ import annotations

import torch
from torch import nn

from vcr.errors import ConfigError
from vcr.models.registry import create_model, feature_dim


def _unwrap_backbone(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)  # DDP / DataParallel
    if hasattr(model, "backbone") and hasattr(model, "projector"):  # SSLModel
        model = model.backbone
    return model


def save_backbone(
    model: nn.Module,
    path,
    *,
    arch: str,
    model_kwargs: dict | None = None,
    extra: dict | None = None,
) -> None:
    """Write ``{"arch", "model_kwargs", "state_dict", "feature_dim", "extra"}`` atomically.

    The classifier is dropped: the stored state dict is exactly that of
    ``create_model(arch, num_classes=0, **model_kwargs)`` (so ``load_backbone`` loads it
    strictly). ``model`` may be a classifier, a backbone, an ``SSLModel`` or a DDP wrapper.
    """
    from vcr.io import torch_save

    model_kwargs = dict(model_kwargs or {})
    model_kwargs.pop("num_classes", None)
    src = _unwrap_backbone(model).state_dict()
    with torch.device("meta"):
        # shapes/keys only: the meta device allocates nothing and runs no real init
        target = create_model(arch, num_classes=0, **model_kwargs).state_dict()
    missing = [k for k in target if k not in src]
    wrong = [k for k in target if k in src and tuple(src[k].shape) != tuple(target[k].shape)]
    if missing or wrong:
        raise ConfigError(
            f"save_backbone: the model does not match arch={arch!r} model_kwargs={model_kwargs}: "
            f"missing keys {missing[:5]}, wrong shapes {wrong[:5]}"
        )
    state = {k: src[k].detach().to("cpu").clone() for k in target}
    torch_save(
        {
            "arch": arch,
            "model_kwargs": model_kwargs,
            "state_dict": state,
            "feature_dim": feature_dim(_unwrap_backbone(model)),
            "extra": dict(extra or {}),
        },
        path,
    )


def load_backbone(path, map_location="cpu") -> nn.Module:
    """Rebuild a backbone saved by ``save_backbone``; eval mode, ``model(x)`` -> (N, feature_dim)."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"backbone file {path} does not exist; it is written last by a successful "
            "pretraining run (workflow_scripts/pretrain.py --out RUN_DIR)"
        )
    blob = torch.load(path, map_location=map_location, weights_only=True)
    for key in ("arch", "model_kwargs", "state_dict"):
        if key not in blob:
            raise ConfigError(f"{path} is not a backbone file: no {key!r} entry")
    model = create_model(blob["arch"], num_classes=0, **blob["model_kwargs"])
    model.load_state_dict(blob["state_dict"], strict=True)
    return model.eval()
