"""Put VCR layers at the paper's placements on a model, by forward hooks, and take them off.

Placements (App. A, Table 6), all with the fast op ``vcr.regularizer.VCRLayer``:

* ``blocks`` (VCR2, the paper's default): the output of every block.
* ``final`` (VCR1): the input of the classifier (pooled penultimate features), by a forward
  pre-hook on the classifier module (also when it is ``nn.Identity`` in a ``num_classes=0``
  backbone).
* ``downsample`` (VCR3): the output of every downsampling layer (see the per-architecture
  choice below).
* ``blocks+downsample`` (VCR4): both.

Hooks keep module names and ``state_dict`` keys unchanged; the layers live in a plain attribute
``model._vcr_layers`` (not submodules) that ``vcr_penalty(model)`` reads.

What "downsample" means per architecture (the paper only defines it for ConvNeXt):

* ConvNeXt (timm): the stem (patchify conv) and the 3 stage downsample layers (norm + 2x2/2
  conv), i.e. torchvision's ConvNeXt ``features`` layers that are not stages: 4 layers.
* ResNet (timm / torchvision naming): the stem output (after max-pool) and every projection
  shortcut (``layerK.0.downsample``; ResNet-50: 4), i.e. every layer that changes resolution or
  width outside the residual branches: resnet50 has 5.
* CIFAR ResNet: the stem and the option-A shortcuts of the strided blocks (subsample +
  zero-pad, parameter-free: its gradient reaches the previous block): 3.
* ViT and the MLP have none: the paper says so for ViT; asking for it raises ``ConfigError``.

SSL models (``backbone`` + ``projector``): VCR goes on the backbone exactly as above (App. B.4:
"we just applied the VCR layers to the ResNet-50 network"); ``regularize_projector=True`` adds
the projector's hidden activations (each ReLU output) and its output embedding.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from vcr.errors import ConfigError, NonFiniteError
from vcr.names import PLACEMENTS
from vcr.regularizer import VCRLayer

__all__ = [
    "ARCHITECTURES",
    "VCRSites",
    "attach_vcr",
    "detach_vcr",
    "raise_if_nonfinite",
    "register_architecture",
    "set_vcr_recording",
    "vcr_layers",
    "vcr_sites",
    "vcr_stats",
]


@dataclass
class VCRSites:
    """Where VCR can go on one architecture (module names as in ``model.named_modules()``)."""

    arch: str
    blocks: list[str]
    classifier: str
    downsample: list[str] | None = None  # None: the architecture has no downsample layers
    projector: list[str] = field(default_factory=list)


# name -> (matcher, sites function); the first matching entry wins
ARCHITECTURES: dict[str, tuple[Callable[[nn.Module], bool], Callable[[nn.Module], VCRSites]]] = {}


def register_architecture(name: str, matcher: Callable[[nn.Module], bool]):
    """Decorator: register ``fn(model) -> VCRSites`` for models where ``matcher(model)``."""

    def deco(fn):
        ARCHITECTURES[name] = (matcher, fn)
        return fn

    return deco


def _is_class(cls_name: str, *module_prefixes: str):
    def match(model: nn.Module) -> bool:
        t = type(model)
        return t.__name__ == cls_name and t.__module__.startswith(module_prefixes)

    return match


def _children_names(model: nn.Module, parent: str) -> list[str]:
    mod = model.get_submodule(parent)
    return [f"{parent}.{k}" for k, _ in mod.named_children()]


@register_architecture("resnet", _is_class("ResNet", "timm.", "torchvision.", "vcr."))
def _resnet_sites(model) -> VCRSites:
    blocks, down = [], ["maxpool"]
    for i in range(1, 5):
        for name in _children_names(model, f"layer{i}"):
            blocks.append(name)
            if getattr(model.get_submodule(name), "downsample", None) is not None:
                down.append(f"{name}.downsample")
    return VCRSites("resnet", blocks, "fc", down)


@register_architecture("convnext", _is_class("ConvNeXt", "timm.", "vcr."))
def _convnext_sites(model) -> VCRSites:
    blocks, down = [], ["stem"]
    for stage in _children_names(model, "stages"):
        if not isinstance(model.get_submodule(f"{stage}.downsample"), nn.Identity):
            down.append(f"{stage}.downsample")
        blocks += _children_names(model, f"{stage}.blocks")
    return VCRSites("convnext", blocks, "head.fc", down)


@register_architecture("vit", _is_class("VisionTransformer", "timm.", "vcr."))
def _vit_sites(model) -> VCRSites:
    # Blocks output (N, T, D): every token (class and register tokens included) is a sample.
    return VCRSites("vit", _children_names(model, "blocks"), "head", None)


@register_architecture("cifar_resnet", _is_class("CifarResNet", "vcr."))
def _cifar_resnet_sites(model) -> VCRSites:
    blocks, down = [], ["stem"]
    for i in range(1, 4):
        for name in _children_names(model, f"layer{i}"):
            blocks.append(name)
            if not isinstance(model.get_submodule(name).shortcut, nn.Identity):
                down.append(f"{name}.shortcut")
    return VCRSites("cifar_resnet", blocks, "fc", down)


@register_architecture("mlp", _is_class("TwoMoonsMLP", "vcr."))
def _mlp_sites(model) -> VCRSites:
    # a block = Linear [BN] [Dropout] ReLU: its output is a hidden activation
    return VCRSites("mlp", _children_names(model, "blocks"), "fc", None)


def _is_ssl(model) -> bool:
    return isinstance(getattr(model, "backbone", None), nn.Module) and isinstance(
        getattr(model, "projector", None), nn.Module
    )


@register_architecture("ssl", _is_ssl)
def _ssl_sites(model) -> VCRSites:
    inner = vcr_sites(model.backbone)
    pre = "backbone."
    proj = [f"projector.{k}" for k, m in model.projector.named_children() if isinstance(m, nn.ReLU)]
    last = list(model.projector.named_children())
    if last and f"projector.{last[-1][0]}" not in proj:
        proj.append(f"projector.{last[-1][0]}")
    return VCRSites(
        f"ssl({inner.arch})",
        [pre + b for b in inner.blocks],
        pre + inner.classifier,
        None if inner.downsample is None else [pre + d for d in inner.downsample],
        proj,
    )


def _unwrap(model: nn.Module) -> nn.Module:
    # attach to the model inside a DDP / DataParallel wrapper (their child is ``module``)
    if type(model).__name__ in ("DistributedDataParallel", "DataParallel"):
        return model.module
    return model


def vcr_sites(model: nn.Module) -> VCRSites:
    """The architecture's VCR sites (raises ConfigError for an unknown architecture)."""
    model = _unwrap(model)
    for matcher, fn in ARCHITECTURES.values():
        if matcher(model):
            return fn(model)
    raise ConfigError(
        f"attach_vcr does not know where the blocks of a {type(model).__module__}."
        f"{type(model).__name__} are; known architectures: {sorted(ARCHITECTURES)} "
        "(add one with vcr.attach.register_architecture)"
    )


def attach_vcr(
    model: nn.Module,
    placement: str,
    *,
    alpha: float,
    beta: float,
    regularize_projector: bool = False,
    **vcr_kwargs,
) -> list[str]:
    """Register VCR layers at ``placement``; return the regularized module names.

    ``vcr_kwargs`` go to every ``VCRLayer`` (eps, delta, cov_scale, layout, global_stats,
    check_finite). For ``final`` the returned name is the classifier whose *input* is
    regularized. Raises ``ConfigError`` for an unknown placement, a placement the architecture
    lacks (downsample on ViT/MLP), or a model that already has VCR attached.
    """
    if placement not in PLACEMENTS:
        raise ConfigError(f"placement={placement!r} is not one of {PLACEMENTS}")
    model = _unwrap(model)
    if model.__dict__.get("_vcr_layers"):
        raise ConfigError("attach_vcr: this model already has VCR attached; detach_vcr() first")
    if placement == "none":
        return []
    sites = vcr_sites(model)
    if "downsample" in placement and sites.downsample is None:
        raise ConfigError(
            f"placement={placement!r}: a {sites.arch} has no downsample layers (App. A: "
            "'architectures like ViT lack downsample layers'); use 'blocks' or 'final'"
        )
    if placement == "final":
        hooked = []
        pre_hooked = [sites.classifier]
    else:
        hooked = list(sites.blocks) if "blocks" in placement else []
        if "downsample" in placement:
            hooked += sites.downsample
        pre_hooked = []
    if regularize_projector:
        if not sites.projector:
            raise ConfigError(
                f"regularize_projector=True, but a {sites.arch} has no projector "
                "(it needs a model with .backbone and .projector)"
            )
        hooked += sites.projector
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    hooked = sorted(dict.fromkeys(hooked), key=order.__getitem__)

    layers: dict[str, VCRLayer] = {}
    for name in pre_hooked:
        layer = VCRLayer(alpha, beta, name=f"{name}:input", **vcr_kwargs)
        module = model.get_submodule(name)
        module.__dict__[_PRE_KEY] = layer
        module.register_forward_pre_hook(_vcr_pre_hook)
        layers[name] = layer
    for name in hooked:
        layer = VCRLayer(alpha, beta, name=name, **vcr_kwargs)
        module = model.get_submodule(name)
        module.__dict__[_POST_KEY] = layer
        module.register_forward_hook(_vcr_post_hook)
        layers[name] = layer
    # plain attributes, not submodules: named_modules() and state_dict() stay as they were
    model.__dict__["_vcr_layers"] = layers
    return list(layers)


# Each hooked module carries its layer in a plain attribute and the hooks are module-level
# functions, so a deepcopy of the model (EMA, tests) gets hooks that use the copy's own layers,
# and detach_vcr needs no handles. The layers are not submodules, so model.train()/eval() does
# not reach them: each hook copies the hooked module's mode. The hooks return None: the module's
# output is left as it was.
_PRE_KEY = "_vcr_pre_layer"
_POST_KEY = "_vcr_post_layer"


def _vcr_pre_hook(module, args):
    layer = module.__dict__[_PRE_KEY]
    layer.training = module.training
    layer(args[0])  # returns its input; the zero scalar is kept for vcr_penalty


def _vcr_post_hook(module, args, output):
    layer = module.__dict__[_POST_KEY]
    layer.training = module.training
    layer(output)


def detach_vcr(model: nn.Module) -> None:
    """Remove every VCR hook and layer; the model is then exactly as before ``attach_vcr``."""
    model = _unwrap(model)
    for module in model.modules():
        for hooks, fn, key in (
            (module._forward_pre_hooks, _vcr_pre_hook, _PRE_KEY),
            (module._forward_hooks, _vcr_post_hook, _POST_KEY),
        ):
            for hook_id in [i for i, f in hooks.items() if f is fn]:
                del hooks[hook_id]
                module._forward_hooks_with_kwargs.pop(hook_id, None)
                module._forward_hooks_always_called.pop(hook_id, None)
                module._forward_pre_hooks_with_kwargs.pop(hook_id, None)
            module.__dict__.pop(key, None)
    model.__dict__.pop("_vcr_layers", None)


def vcr_layers(model: nn.Module) -> dict[str, VCRLayer]:
    """The attached layers by module name (empty when none)."""
    return dict(_unwrap(model).__dict__.get("_vcr_layers") or {})


def vcr_stats(model: nn.Module) -> dict[str, float]:
    """The last backward's VCR terms as floats: the mean over layers of ``l_var``, ``l_cov``,
    ``std_mean`` (keys ``vcr/l_var``, ...), and, where the layers recorded it
    (``set_vcr_recording``), the ratio ||g_vcr|| / ||g_task|| at each site
    (``vcr/grad_ratio/<module name>``) and its median over sites (``vcr/grad_ratio_median``).
    Empty when none attached or no backward has run yet. One host sync per call: call it at
    logging time, not every step."""
    import torch

    layers = {n: lay for n, lay in vcr_layers(model).items() if lay.last is not None}
    if not layers:
        return {}
    keys = ("l_var", "l_cov", "std_mean")
    values = [torch.stack([lay.last[k].float() for lay in layers.values()]).mean() for k in keys]
    ratios = {n: lay.last["grad_ratio"] for n, lay in layers.items() if "grad_ratio" in lay.last}
    if ratios:
        values += [r.float() for r in ratios.values()]
    floats = torch.stack(values).tolist()
    out = {f"vcr/{k}": v for k, v in zip(keys, floats)}
    if ratios:
        per_site = dict(zip(ratios, floats[len(keys) :]))
        out.update({f"vcr/grad_ratio/{n}": v for n, v in per_site.items()})
        out["vcr/grad_ratio_median"] = statistics.median(per_site.values())
    return out


def set_vcr_recording(model: nn.Module, on: bool) -> None:
    """Record the ratio ||g_vcr|| / ||g_task|| at every site in the next backwards (two
    norms per site; the trainer turns it on at logging steps only)."""
    for layer in vcr_layers(model).values():
        layer.record = bool(on)
        if not on and layer.last is not None:
            layer.last.pop("grad_ratio", None)


def raise_if_nonfinite(model: nn.Module) -> None:
    """Raise ``NonFiniteError`` naming the first layer whose statistics went non-finite since
    the flags were last cleared (one host sync for all layers); then clear the flags."""
    import torch

    layers = [lay for lay in vcr_layers(model).values() if lay.nonfinite is not None]
    if not layers:
        return
    counts = torch.stack([lay.nonfinite for lay in layers]).tolist()
    bad = [lay for lay, c in zip(layers, counts) if c]
    if bad:
        raise NonFiniteError(bad[0]._nonfinite_message())
    for lay in layers:
        lay.nonfinite = None
