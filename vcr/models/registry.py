"""The model registry: ``create_model(name)`` looks up the project's own models first, then
``timm.create_model(name, pretrained=False)``.

Every model follows the timm conventions the rest of the project relies on: ``num_classes=0``
gives a backbone whose ``forward`` returns the pooled penultimate features, and
``model.num_features`` is their width. timm is imported only when a timm name is asked for
(``import vcr.models`` stays cheap).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from vcr.errors import ConfigError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Add a model factory ``fn(num_classes=..., **kwargs)`` to the registry under its name."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """The project's own model names (any timm name also works in ``create_model``)."""
    return sorted(_MODELS)


def create_model(name: str, num_classes: int | None = None, **kwargs) -> nn.Module:
    """Build a model by name: the project's registry first, then timm (never pretrained).

    ``num_classes=None`` keeps the model's own default (1000 for timm names, 10 for the CIFAR and
    mini models, 1 logit for the two-moons MLP); ``0`` gives a feature backbone.
    """
    if name in _MODELS:
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        return _MODELS[name](**kwargs)
    import timm

    if not timm.is_model(name):
        raise ConfigError(
            f"unknown model arch={name!r}: not one of the project's models {list_models()} "
            "and not a timm model name (see timm.list_models())"
        )
    if "pretrained" in kwargs and kwargs["pretrained"]:
        raise ConfigError(
            f"arch={name!r}: pretrained=True would download weights; runs never download. "
            "Import weights with --init-weights PATH instead."
        )
    kwargs.pop("pretrained", None)
    nc = 1000 if num_classes is None else num_classes
    return timm.create_model(name, pretrained=False, num_classes=nc, **kwargs)


def feature_dim(model: nn.Module) -> int:
    """Width of the pooled penultimate features (``model.num_features``, timm's convention)."""
    model = getattr(model, "module", model)  # DDP
    if hasattr(model, "backbone") and hasattr(model, "projector"):  # SSLModel
        model = model.backbone
    dim = getattr(model, "num_features", None)
    if not isinstance(dim, int):
        raise ConfigError(f"{type(model).__name__} has no integer num_features attribute")
    return dim
