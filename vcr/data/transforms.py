"""Image transforms by kind (torchvision, imported inside the function so that ``import
vcr.data`` stays cheap).

Kinds (CONTRACT §4):
- ``eval``: bicubic resize of the shorter side to ``resize_size`` (default ``image_size``, the
  SimCLR/Kornblith linear-eval preprocessing: resize 224 + center crop 224) + center crop. At the
  native size (32 px mini/CIFAR images) both are the identity. ``resize_size=256`` gives the
  ImageNet "resize 256, crop 224" evaluation, one argument away.
- ``train_imagenet``: RandomResizedCrop(image_size) + horizontal flip (torchvision reference).
- ``train_cifar``: 4-pixel zero padding + random crop + horizontal flip (LDAM-DRW / He et al.).
- ``ssl``: the SimCLR/VICReg set for ONE view, one of :data:`SSL_AUGMENTS` (recipe key
  ``ssl_augment``; one definition each, used by the per-image torchvision pipeline and by
  :func:`ssl_views`, its batched twin for in-memory arrays): RandomResizedCrop(scale 0.08-1,
  bicubic), flip, colour jitter with p=0.8, grayscale p=0.2, Gaussian blur p=0.5 (sigma 0.1-2,
  kernel ~10% of the side), then ``simclr``: jitter strength 1, (0.8, 0.8, 0.8, 0.2), no
  solarize (SimCLR App. A); ``vicreg``: jitter (0.4, 0.4, 0.2, 0.1), solarize p=0.1 (VICReg
  App. B.1, symmetrised: VCR App. B.4 applies its augmentations "symmetrically on two
  branches"). Below 64 px the blur is left out, as SimCLR does for CIFAR (``blur=True`` forces
  it). Wrap it in :class:`MultiView` for the two views.
Every kind ends with ToTensor + Normalize(mean, std).

Which kind a run trains with is :func:`train_transform_kind`, the one rule the trainer and the
fine-tuning probe share; :func:`run_transform` builds a run's train or eval transform from its
recipe (torchvision's presets for the ``tv_*`` recipes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vcr.errors import ConfigError

KINDS = ("eval", "train_imagenet", "train_cifar", "ssl")


@dataclass(frozen=True)
class SSLAugment:
    """A two-view SSL augmentation (the defaults: VICReg App. B.1)."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)  # bright., contr., sat., hue
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5  # images of >= 64 px only (SimCLR leaves it out on CIFAR)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.1


SSL_AUGMENTS = {
    # SimCLR App. A: colour distortion of strength s = 1 (0.8s, 0.8s, 0.8s, 0.2s), no solarize
    "simclr": SSLAugment(jitter=(0.8, 0.8, 0.8, 0.2), solarize_p=0.0),
    "vicreg": SSLAugment(),
}
SSL_AUGMENT = SSL_AUGMENTS["vicreg"]  # the default of ssl_views / build_transform("ssl")


def ssl_augment_named(name: str) -> SSLAugment:
    if name not in SSL_AUGMENTS:
        raise ConfigError(f"ssl_augment={name!r}: expected one of {sorted(SSL_AUGMENTS)}")
    return SSL_AUGMENTS[name]


class MultiView:
    """Apply ``transform`` ``n`` times to the same image (SSL views); returns a list."""

    def __init__(self, transform, n: int = 2):
        self.transform, self.n = transform, n

    def __call__(self, img):
        return [self.transform(img) for _ in range(self.n)]

    def __repr__(self) -> str:
        return f"MultiView(n={self.n}, {self.transform!r})"


class DeferredTransform:
    """``factory(*args, **kwargs)``, built on the first call (picklable for loader workers).

    The batched paths for in-memory arrays (mini, CIFAR) never call the per-image transform;
    deferring it means torchvision (~1.2 s of imports) is only imported where it is used.
    """

    def __init__(self, factory, *args, **kwargs):
        self.factory, self.args, self.kwargs, self.tf = factory, args, kwargs, None

    def __call__(self, img):
        if self.tf is None:
            self.tf = self.factory(*self.args, **self.kwargs)
        return self.tf(img)


def build_transform(
    kind: str,
    *,
    image_size: int,
    mean,
    std,
    resize_size: int | None = None,
    blur: bool | None = None,
    augment: SSLAugment = SSL_AUGMENT,
):
    """A callable PIL image -> normalised float tensor (C, H, W) for ``kind`` (``augment``: the
    ``ssl`` kind's set)."""
    from torchvision import transforms as T

    if kind not in KINDS:
        raise ConfigError(f"transform kind={kind!r}: expected one of {KINDS}")
    if not image_size or image_size <= 0:
        raise ConfigError(f"image_size={image_size!r}: expected a positive side in pixels")
    bicubic = T.InterpolationMode.BICUBIC
    tail = [T.ToTensor(), T.Normalize(tuple(mean), tuple(std))]
    if kind == "eval":
        size = resize_size or image_size
        ops = [T.Resize(size, interpolation=bicubic), T.CenterCrop(image_size)]
    elif kind == "train_imagenet":
        ops = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()]
    elif kind == "train_cifar":
        ops = [T.RandomCrop(image_size, padding=4), T.RandomHorizontalFlip()]
    else:
        a = augment
        ops = [
            T.RandomResizedCrop(image_size, scale=a.crop_scale, interpolation=bicubic),
            T.RandomHorizontalFlip(a.flip_p),
            T.RandomApply([T.ColorJitter(*a.jitter)], p=a.jitter_p),
            T.RandomGrayscale(p=a.grayscale_p),
        ]
        if blur if blur is not None else image_size >= 64:
            k = max(3, int(0.1 * image_size) // 2 * 2 + 1)  # odd kernel, ~10% of the side
            ops.append(T.RandomApply([T.GaussianBlur(k, sigma=a.blur_sigma)], p=a.blur_p))
        if a.solarize_p > 0:
            ops.append(T.RandomSolarize(threshold=128, p=a.solarize_p))
    return T.Compose(ops + tail)


def ssl_views(x, g, aug: SSLAugment = SSL_AUGMENT):
    """One SSL view of a batch in [0, 1] (N, 3, H, W) with batched tensor ops, for in-memory
    arrays (mini, CIFAR): ``aug``'s random resized crop, flip, colour jitter,
    grayscale and solarize, drawn from the generator ``g``. What differs from the per-image
    ``ssl`` transform: bilinear instead of bicubic resampling, and no hue jitter (it needs an
    HSV round trip per pixel); no blur, as below 64 px there.
    """
    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    (s_lo, s_hi), (r_lo, r_hi) = aug.crop_scale, aug.crop_ratio
    area = s_lo + (s_hi - s_lo) * u(n)
    ratio = torch.exp(math.log(r_lo) + (math.log(r_hi) - math.log(r_lo)) * u(n))
    sw = torch.sqrt(area * ratio).clamp(max=1.0)  # crop side as a fraction of the image
    sh = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (1 - sw) * (2 * u(n) - 1)  # crop centre in [-1, 1] coordinates, inside the image
    cy = (1 - sh) * (2 * u(n) - 1)
    flip = torch.where(u(n) < aug.flip_p, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sw * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = sh, cy
    grid = F.affine_grid(theta, (n, 3, h, w), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    jitter = (u(n) < aug.jitter_p).view(n, 1, 1, 1)
    b = 1 + aug.jitter[0] * (2 * u(n) - 1)
    c = 1 + aug.jitter[1] * (2 * u(n) - 1)
    s = 1 + aug.jitter[2] * (2 * u(n) - 1)
    gray_w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    y = (x * b.view(n, 1, 1, 1)).clamp(0, 1)
    mean = (y * gray_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    y = (mean + c.view(n, 1, 1, 1) * (y - mean)).clamp(0, 1)
    gray = (y * gray_w).sum(1, keepdim=True)
    y = (gray + s.view(n, 1, 1, 1) * (y - gray)).clamp(0, 1)
    x = torch.where(jitter, y, x)
    x = torch.where(
        (u(n) < aug.grayscale_p).view(n, 1, 1, 1), (x * gray_w).sum(1, keepdim=True).expand_as(x), x
    )
    return torch.where((u(n) < aug.solarize_p).view(n, 1, 1, 1) & (x >= 0.5), 1 - x, x)


# --------------------------------------------------------------------------------------------
# a run's transforms (the trainer and the fine-tuning probe)


def train_transform_kind(requested: str, method: str, native: int) -> str:
    """The one rule for the training transform: ``auto`` is ``ssl`` for SimCLR/VICReg, else
    ``train_cifar`` below 64 px (an 8%-area crop destroys a 32-px image) and ``train_imagenet``
    above; ``none`` trains on the eval transform; other kinds (``tv_preset``, ...) as asked."""
    kind = requested
    if method in ("simclr", "vicreg") and kind == "auto":
        kind = "ssl"
    if kind == "auto":
        kind = "train_cifar" if native < 64 else "train_imagenet"
    if kind == "none":
        kind = "eval"
    return kind


def resolved_sizes(recipe, native: int) -> tuple[int, int, int]:
    """(train crop, eval resize, eval crop) for a dataset whose native side is ``native``."""
    use_native = recipe.resolution == "native" or (recipe.resolution == "auto" and native < 64)
    if use_native:
        return native, native, native
    return recipe.train_crop_size, recipe.val_resize_size, recipe.val_crop_size


def tv_preset_train(recipe, crop: int, mean, std):
    """torchvision's ClassificationPresetTrain (RRC, flip, auto-augment, random erase)."""
    import torch
    from torchvision.transforms import v2

    interp = v2.InterpolationMode(recipe.interpolation)
    t = [
        v2.ToImage(),
        v2.RandomResizedCrop(crop, interpolation=interp, antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    aa = recipe.auto_augment
    if aa == "ra":
        t.append(v2.RandAugment(interpolation=interp, magnitude=recipe.ra_magnitude))
    elif aa == "ta_wide":
        t.append(v2.TrivialAugmentWide(interpolation=interp))
    elif aa == "augmix":
        t.append(v2.AugMix(interpolation=interp, severity=recipe.augmix_severity))
    elif aa == "imagenet":
        t.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET, interpolation=interp))
    t += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if recipe.random_erase > 0:
        t.append(v2.RandomErasing(p=recipe.random_erase))
    t.append(v2.ToPureTensor())
    return v2.Compose(t)


def tv_preset_eval(recipe, resize: int, crop: int, mean, std):
    """torchvision's ClassificationPresetEval (resize, centre crop)."""
    import torch
    from torchvision.transforms import v2

    interp = v2.InterpolationMode(recipe.interpolation)
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(resize, interpolation=interp, antialias=True),
            v2.CenterCrop(crop),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
            v2.ToPureTensor(),
        ]
    )


def run_transform(recipe, method: str, info: dict, which: str):
    """A run's ``train`` or ``eval`` transform from its recipe and ``vcr.data.dataset_info``.

    Evaluation (training-time validation and the final val/test numbers) resizes to the
    recipe's ``val_resize_size`` before the centre crop (ImageNet's "resize 256, crop 224";
    232 for torchvision's 600-epoch recipes); at the native size of small images both are the
    identity."""
    native, mean, std = int(info["image_size"]), info["mean"], info["std"]
    crop, resize, eval_crop = resolved_sizes(recipe, native)
    kind = train_transform_kind(recipe.train_transform, method, native)
    if kind == "tv_preset":
        if which == "train":
            return tv_preset_train(recipe, crop, mean, std)
        return tv_preset_eval(recipe, resize, eval_crop, mean, std)
    if which == "eval":
        return build_transform("eval", image_size=eval_crop, resize_size=resize, mean=mean, std=std)
    augment = ssl_augment_named(recipe.ssl_augment)
    train = build_transform(kind, image_size=crop, mean=mean, std=std, augment=augment)
    return MultiView(train, 2) if kind == "ssl" else train


def probe_resize(image_size: int, resize_size: int | None) -> int | None:
    """The eval resize a probe asks for (e.g. 256 before a 224 crop), or None (resize to the
    crop) for images below 64 px, which are used at their native size."""
    return resize_size if resize_size and image_size >= 64 else None
