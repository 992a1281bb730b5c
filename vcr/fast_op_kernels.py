"""The fast op's tensor kernels on one block output, in its own memory layout (vcr.regularizer's
``VCRLayer`` calls them from its backward): the (n, d) sample matrix of a layout, the fp32
compute dtype, centring, the two products X^T X and X M in fp32 or from bf16 inputs, the row
gather/scatter of the approximate mode by flat storage offsets, and stochastic bf16 rounding.
Pure functions of tensors; no autograd, no module state.
"""

from __future__ import annotations

import torch

from vcr.errors import ConfigError

LAYOUTS = ("auto", "nd", "nchw", "nhwc", "ntd")


def resolve_layout(h: torch.Tensor, layout: str) -> str:
    if layout not in LAYOUTS:
        raise ConfigError(f"vcr layout={layout!r} is not one of {LAYOUTS}")
    if layout == "auto":
        auto = {2: "nd", 3: "ntd", 4: "nchw"}
        if h.dim() not in auto:
            raise ConfigError(
                f"vcr layout='auto' cannot place a {h.dim()}-D tensor of shape {tuple(h.shape)}; "
                "give layout= one of 'nd', 'nchw', 'nhwc', 'ntd'"
            )
        return auto[h.dim()]
    want = {"nd": 2, "ntd": 3, "nchw": 4, "nhwc": 4}[layout]
    if h.dim() != want:
        raise ConfigError(
            f"vcr layout={layout!r} expects a {want}-D tensor, got shape {tuple(h.shape)}"
        )
    return layout


def as_samples(h: torch.Tensor, layout: str = "auto") -> torch.Tensor:
    """View ``h`` as the (n, d) matrix of samples x features.

    Conv maps: every spatial position is a sample and channels are features, so NCHW moves the
    channels last first (``flatten(0, -2)`` on NCHW would wrongly take W as the feature axis).
    The result is a view when the memory layout allows (NCHW stored channels-last, NHWC, tokens),
    a copy otherwise.
    """
    layout = resolve_layout(h, layout)
    if layout == "nchw":
        h = h.movedim(1, -1)
    return h.reshape(-1, h.shape[-1])


def from_samples(g: torch.Tensor, like: torch.Tensor, layout: str) -> torch.Tensor:
    """Inverse of ``as_samples`` for a gradient ``g`` of shape (n, d)."""
    if layout == "nchw":
        n, c, hh, ww = like.shape
        return g.view(n, hh, ww, c).movedim(-1, 1)
    return g.view(like.shape)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # fp16/bf16 covariances overflow (X^T X with n ~ 2e5): at least fp32; float64 stays float64.
    return torch.promote_types(dtype, torch.float32)


def round_stochastic_bf16(x: torch.Tensor) -> torch.Tensor:
    """fp32 -> bf16 with unbiased stochastic rounding: add uniform noise below the 16 bits that
    bf16 drops, then truncate (P(round up in magnitude) = the dropped fraction)."""
    bits = x.view(torch.int32)  # in place: x is the hook's own fp32 sum
    noise = torch.randint(0, 1 << 16, bits.shape, dtype=torch.int32, device=x.device)
    return bits.add_(noise).bitwise_and_(-65536).view(torch.float32).to(torch.bfloat16)


# Backward kernels on one block output, in its own memory layout. A contiguous NCHW map with at
# least as many positions as channels (H*W >= C) is handled as N batches of (C, H*W) matrices:
# moving channels last first would cost a copy, and returning a channels-last gradient for a
# channels-first activation makes autograd's accumulation and the conv backward run on mixed
# strides (measured: ~3x the op's own cost). Small late-stage maps (H*W < C; e.g. 1x1 or 2x2
# with 256 channels) take the (n, d) route instead: there the (N, C, C) batched Gram would be
# larger than the map itself, and the channels-last copy is small. Everything else is viewed as
# the (n, d) matrix (a view for nd, ntd, nhwc and channels-last NCHW storage).
def sample_matrix(h: torch.Tensor, layout: str):
    if layout == "nchw" and h.is_contiguous() and h.shape[2] * h.shape[3] >= h.shape[1]:
        x = h.reshape(h.shape[0], h.shape[1], -1)  # (N, C, L)
        return x, x.shape[0] * x.shape[2], x.shape[1]
    x = as_samples(h, layout)
    return x, x.shape[0], x.shape[1]


def dense(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself where its elements fill its memory in some order (contiguous or channels
    last), else a contiguous copy: the approximate mode then addresses rows by flat offsets."""
    if t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)):
        return t
    return t.contiguous()


def flat(t: torch.Tensor) -> torch.Tensor:
    """The 1-D view of a dense ``t``'s memory, in storage order."""
    return t.as_strided((t.numel(),), (1,), t.storage_offset())


def row_offsets(t: torch.Tensor, layout: str, pos: torch.Tensor) -> torch.Tensor:
    """Offsets into ``flat(t)`` of the sample rows ``pos`` (flat positions of the sample space:
    N, N x T, or N x H x W), all features of each: (K * d,), row-major. One 1-D gather or
    index_add over them is 4-5x faster on a CPU than 4-index advanced indexing (measured on a
    (128, 16, 32, 32) map: gather 0.10 vs 0.47 ms, scatter-add 0.19 vs 0.85 ms)."""
    feature_dim = 1 if layout == "nchw" else t.dim() - 1
    sample_dims = [i for i in range(t.dim()) if i != feature_dim]
    coords = torch.unravel_index(pos, [t.shape[i] for i in sample_dims])
    base = sum(c * t.stride(i) for c, i in zip(coords, sample_dims))
    step = torch.arange(t.shape[feature_dim], device=t.device) * t.stride(feature_dim)
    return (base[:, None] + step[None, :]).view(-1)


def add_rows(t: torch.Tensor, layout: str, pos: torch.Tensor, vals: torch.Tensor):
    """``t`` (dense) with the (K, d) ``vals`` added in place to its sample rows ``pos``; rows
    drawn twice get both."""
    flat(t).index_add_(0, row_offsets(t, layout, pos), vals.reshape(-1).to(t.dtype))
    return t


def colsum(x: torch.Tensor, cdtype) -> torch.Tensor:
    return x.sum(dim=(0, 2), dtype=cdtype) if x.dim() == 3 else x.sum(dim=0, dtype=cdtype)


def center(x: torch.Tensor, mean: torch.Tensor, cdtype) -> torch.Tensor:
    mean = mean.to(cdtype)
    if x.dim() == 3:
        return torch.sub(x, mean[:, None]) if x.dtype != cdtype else x - mean[:, None]
    return x - mean


def mm(a: torch.Tensor, b: torch.Tensor, matmul: str) -> torch.Tensor:
    """``a @ b`` in fp32 (``matmul="fp32"``) or from bf16-rounded inputs with fp32 accumulation
    and output (``"bf16"``: tensor cores on CUDA, the same arithmetic emulated elsewhere)."""
    if matmul == "fp32" or a.dtype == torch.float64:
        return torch.matmul(a, b)
    a16, b16 = a.to(torch.bfloat16), b.to(torch.bfloat16)
    if a.is_cuda and a.dim() == 2 and b.dim() == 2:
        return torch.mm(a16, b16, out_dtype=torch.float32)
    if a.is_cuda:
        return torch.bmm(*torch.broadcast_tensors(a16, b16), out_dtype=torch.float32)
    return torch.matmul(a16.float(), b16.float())


def gram(x: torch.Tensor, matmul: str = "fp32") -> torch.Tensor:
    if x.dim() == 3:
        return mm(x, x.transpose(1, 2), matmul).sum(dim=0)
    return mm(x.t(), x, matmul)


def apply_m(x: torch.Tensor, m: torch.Tensor, matmul: str = "fp32") -> torch.Tensor:
    # M is symmetric: X M for rows; M X_b for each (C, L) batch
    return mm(m, x, matmul) if x.dim() == 3 else mm(x, m, matmul)


def restore(grad: torch.Tensor, h: torch.Tensor, layout: str) -> torch.Tensor:
    if grad.dim() == 3:
        return grad.view(h.shape)
    grad = from_samples(grad, h, layout)
    if layout == "nchw" and h.is_contiguous():
        # give the gradient the activation's own strides (see sample_matrix)
        grad = grad.contiguous()
    return grad
