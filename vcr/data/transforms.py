"""Image transforms by kind (torchvision, imported inside the function so that ``import
vcr.data`` stays cheap).

Kinds (CONTRACT §4):
- ``eval``: bicubic resize of the shorter side to ``resize_size`` (default ``image_size``, the
  SimCLR/Kornblith linear-eval preprocessing: resize 224 + center crop 224) + center crop. At the
  native size (32 px mini/CIFAR images) both are the identity. ``resize_size=256`` gives the
  ImageNet "resize 256, crop 224" evaluation, one argument away.
- ``train_imagenet``: RandomResizedCrop(image_size) + horizontal flip (torchvision reference).
- ``train_cifar``: 4-pixel zero padding + random crop + horizontal flip (LDAM-DRW / He et al.).
- ``ssl``: the SimCLR/VICReg set for ONE view: RandomResizedCrop(scale 0.08-1, bicubic), flip,
  colour jitter (0.4, 0.4, 0.2, 0.1) with p=0.8, grayscale p=0.2, Gaussian blur p=0.5 (sigma
  0.1-2, kernel ~10% of the side), solarize p=0.1 (VICReg paper's symmetric version). Below 64 px
  the blur is left out, as SimCLR does for CIFAR (``blur=True`` forces it). Wrap it in
  :class:`MultiView` for the two views.
Every kind ends with ToTensor + Normalize(mean, std).
"""

from __future__ import annotations

from vcr.errors import ConfigError

KINDS = ("eval", "train_imagenet", "train_cifar", "ssl")


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
):
    """A callable PIL image -> normalised float tensor (C, H, W) for ``kind``."""
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
        ops = [
            T.RandomResizedCrop(image_size, scale=(0.08, 1.0), interpolation=bicubic),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
        ]
        if blur if blur is not None else image_size >= 64:
            k = max(3, int(0.1 * image_size) // 2 * 2 + 1)  # odd kernel, ~10% of the side
            ops.append(T.RandomApply([T.GaussianBlur(k, sigma=(0.1, 2.0))], p=0.5))
        ops.append(T.RandomSolarize(threshold=128, p=0.1))
    return T.Compose(ops + tail)
