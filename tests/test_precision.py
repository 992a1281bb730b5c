"""VCR under mixed precision and its cheaper modes: what survives bf16, the logged strength, the
bf16-input (tensor-core) products, and the approximate mode (issues 13 and 14)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vcr.regularizer import VCRLayer, vcr_loss, vcr_penalty

torch.set_num_threads(1)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)
    )


def _data(n=2048):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def _param_grads(model, x, y, *, amp, layer=None):
    """Parameter gradients of the cross-entropy (+ VCR on the first ReLU output)."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        h = model[1](model[0](x))  # bf16 under autocast: the VCR site
        if layer is not None:
            layer(h)
        loss = nn.functional.cross_entropy(model[4](model[3](model[2](h))), y)
    (loss + (vcr_penalty(layer) if layer is not None else 0)).backward()
    return torch.cat([p.grad.reshape(-1).double() for p in model.parameters()])


def _share(beta: float, rounding: str) -> tuple[float, float]:
    """(bf16 share of VCR's change to the parameter gradients, logged ratio) at init."""
    model, (x, y) = _mlp(), _data()
    base32 = _param_grads(model, x, y, amp=False)
    base16 = _param_grads(model, x, y, amp=True)
    torch.manual_seed(3)  # the stochastic rounding's draws
    layer = VCRLayer(0.0, beta, rounding=rounding)
    layer.record = True
    d32 = _param_grads(model, x, y, amp=False, layer=layer) - base32
    ratio = float(layer.last["grad_ratio"])
    d16 = _param_grads(model, x, y, amp=True, layer=layer) - base16
    return float(d16.dot(d32) / d32.dot(d32)), ratio


def test_bf16_keeps_a_representable_vcr_gradient():
    share, ratio = _share(1.0, "stochastic")
    assert 2.0**-9 < ratio < 1e-2  # representable next to the task gradient, but small
    assert share >= 0.95
    # round-to-nearest of the same sum loses part of it (the mechanism the default avoids)
    assert _share(1.0, "nearest")[0] < share


def test_bf16_does_not_erase_a_vcr_gradient_below_its_resolution():
    share, ratio = _share(0.05, "stochastic")
    assert ratio < 2.0**-9  # below half a bf16 step of the task gradient
    assert share >= 0.9  # kept in expectation by stochastic rounding
    assert _share(0.05, "nearest")[0] < 0.2  # round-to-nearest erases it


@pytest.mark.parametrize("amp", [False, True])
def test_logged_ratio_equals_a_direct_computation(amp):
    """layer.last["grad_ratio"] = ||g_vcr|| / ||g_task|| at the output, computed directly:
    g_vcr by autograd of vcr_loss, g_task as the output's gradient without VCR."""
    model, (x, y) = _mlp(), _data(512)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        h = model[1](model[0](x))
    h.retain_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        loss = nn.functional.cross_entropy(model[4](model[3](model[2](h))), y)
    loss.backward()
    g_task = h.grad.float()
    hd = h.detach().float().requires_grad_(True)
    (g_vcr,) = torch.autograd.grad(vcr_loss(hd, 0.5, 0.3), hd)
    direct = float(g_vcr.norm() / g_task.norm())

    layer = VCRLayer(0.5, 0.3)
    layer.record = True
    _param_grads(model, x, y, amp=amp, layer=layer)
    logged = float(layer.last["grad_ratio"])
    torch.testing.assert_close(logged, direct, rtol=2e-2 if amp else 1e-5, atol=0)


# ResNet-50's four stages at 224 px (channels, side), 2 images: the error bound of the
# bf16-input products is stated in VCRLayer's docstring.
RESNET50_STAGES = [(256, 56), (512, 28), (1024, 14), (2048, 7)]


def _post_relu_features(c: int, side: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(c, c // 8, generator=g) / (c // 8) ** 0.5
    z = torch.randn(2 * side * side, c // 8, generator=g) @ mix.t()
    x = torch.relu(z + 0.3 * torch.randn(z.shape, generator=g) + 0.2)  # correlated, non-negative
    return x.view(2, side, side, c).permute(0, 3, 1, 2)  # NCHW, channels-last storage


@pytest.mark.parametrize("c,side", RESNET50_STAGES)
@pytest.mark.parametrize("layout", ["nchw", "nchw_contiguous", "nd"])
def test_bf16_matmul_gradient_error_is_bounded(c, side, layout):
    h = _post_relu_features(c, side, seed=c)
    if layout == "nchw_contiguous":
        h = h.contiguous()
    elif layout == "nd":
        h = h.permute(0, 2, 3, 1).reshape(-1, c)
    ref = None
    grads = {}
    for matmul in ("fp32", "bf16"):
        x = h.detach().clone().requires_grad_(True)
        # product="features": the (d, d) route of a per-GPU batch (2 images would take the
        # sample Gram at the late stages)
        layer = VCRLayer(0.64, 0.04, matmul=matmul, cov_scale="alg1", product="features")
        layer(x)
        (grads[matmul],) = torch.autograd.grad(vcr_penalty(layer), x)
    x64 = h.detach().double().requires_grad_(True)
    (ref,) = torch.autograd.grad(vcr_loss(x64, 0.64, 0.04, cov_scale="alg1"), x64)
    err = {m: float((g.double() - ref).norm() / ref.norm()) for m, g in grads.items()}
    assert err["fp32"] < 1e-4
    assert err["bf16"] < 1e-2, err  # the bound VCRLayer's docstring states


def test_approximate_mode_is_exact_without_sampling_and_sparse_with_it():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(4, 16, 6, 6, generator=g) * torch.linspace(0.3, 2, 16).view(1, 16, 1, 1)
    task = torch.randn(h.shape, generator=g)

    def grad(max_samples, seed=0):
        x = h.clone().requires_grad_(True)
        layer = VCRLayer(0.64, 0.04, max_samples=max_samples)
        layer(x)
        torch.manual_seed(seed)
        ((x * task).sum() + vcr_penalty(layer)).backward()
        return x.grad - task

    exact = grad(None)
    torch.testing.assert_close(grad(4 * 36), exact)  # K >= n: no sampling, the exact op
    torch.manual_seed(0)
    drawn = torch.randint(4 * 36, (32,)).unique()  # the rows the layer draws under seed 0
    sparse = grad(32)
    touched = (sparse != 0).any(dim=1)  # the (sample, position) rows that got a gradient
    assert sorted(touched.flatten().nonzero().view(-1).tolist()) == sorted(drawn.tolist())
    torch.testing.assert_close(grad(32), sparse)  # same seed, same rows and values
    assert not torch.equal(grad(32, seed=1), sparse)
    # unbiased in the rows' direction: averaged over draws it points where the exact one does
    mean = torch.stack([grad(32, seed=s) for s in range(200)]).mean(0)
    cos = float((mean * exact).sum() / (mean.norm() * exact.norm()))
    assert cos > 0.9


@pytest.mark.parametrize("storage", ["contiguous", "channels_last", "strided_view", "bf16"])
def test_approximate_mode_is_the_k_row_loss_gradient_in_every_memory_layout(storage):
    """The K drawn rows get (n/K) (K-1)/(n-1) x the autograd gradient of the eq.-2 loss of
    those rows alone (the statistics' estimate), whatever the block output's strides, and the
    other rows get nothing."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 8, 5, 10, generator=g) * torch.linspace(0.3, 2, 8).view(1, 8, 1, 1)
    h = base[..., ::2] if storage == "strided_view" else base[..., :5]
    if storage == "channels_last":
        h = h.contiguous(memory_format=torch.channels_last)
    elif storage == "contiguous":
        h = h.contiguous()
    n, k = 3 * 5 * 5, 20
    leaf = h.clone(memory_format=torch.preserve_format).requires_grad_(True)
    x = leaf.to(torch.bfloat16) if storage == "bf16" else leaf
    layer = VCRLayer(0.64, 0.04, max_samples=k)
    layer(x)
    torch.manual_seed(3)
    ((x.float() * 0).sum() + vcr_penalty(layer)).backward()
    got = leaf.grad.permute(0, 2, 3, 1).reshape(n, 8)  # (sample rows, features)

    torch.manual_seed(3)
    pos = torch.randint(n, (k,))
    rows = x.detach().float().permute(0, 2, 3, 1).reshape(n, 8)[pos].double().requires_grad_()
    (ref_rows,) = torch.autograd.grad(vcr_loss(rows, 0.64, 0.04), rows)
    want = torch.zeros(n, 8, dtype=torch.float64).index_add_(0, pos, ref_rows)
    want *= (n / k) * (k - 1) / (n - 1)
    tol = dict(rtol=2e-2, atol=1e-4) if storage == "bf16" else dict(rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(got.double(), want, **tol)


def test_invalid_precision_options_are_named():
    from vcr.errors import ConfigError

    for kw, word in (
        ({"rounding": "up"}, "rounding"),
        ({"matmul": "fp8"}, "matmul"),
        ({"max_samples": 1}, "max_samples"),
    ):
        with pytest.raises(ConfigError, match=word):
            VCRLayer(0.1, 0.1, **kw)
