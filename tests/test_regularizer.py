"""The VCR loss and the fast op: exact gradients, scaling, edge cases, distributed statistics."""

from __future__ import annotations

import os
import socket

import pytest
import torch
from torch import nn

from vcr.errors import ConfigError, NonFiniteError, VCRError
from vcr.fast_op_kernels import as_samples
from vcr.regularizer import VCRLayer, vcr_loss, vcr_penalty, vcr_terms

SHAPES = {"nd": (48, 6), "nchw": (4, 6, 3, 3), "nhwc": (4, 3, 3, 6), "ntd": (4, 9, 6)}


def _features(layout: str, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """Correlated features with a non-zero mean and per-feature scales 0.3..2, so some features
    have std < 1 (variance hinge active), some > 1, and the covariances span +-delta."""
    g = torch.Generator().manual_seed(seed)
    shape = SHAPES[layout]
    d = 6
    n = 1
    for s in shape:
        n *= s
    n //= d
    base = torch.randn(n, d, generator=g, dtype=dtype)
    mix = torch.eye(d, dtype=dtype) + 0.4 * torch.randn(d, d, generator=g, dtype=dtype)
    x = base @ mix * torch.linspace(0.3, 2.0, d, dtype=dtype) + 3.0
    if layout == "nd":
        return x
    if layout == "nchw":
        n0, c, hh, ww = shape
        return x.view(n0, hh, ww, c).permute(0, 3, 1, 2).contiguous()
    return x.view(shape)


def _fast_grad(h: torch.Tensor, alpha, beta, **kw) -> torch.Tensor:
    h = h.detach().clone().requires_grad_()
    layer = VCRLayer(alpha, beta, name="probe", **kw)
    out = layer(h)
    assert out is h
    (grad,) = torch.autograd.grad(vcr_penalty(layer), h)
    return grad


def _autograd_grad(h: torch.Tensor, alpha, beta, **kw) -> torch.Tensor:
    h = h.detach().clone().requires_grad_()
    (grad,) = torch.autograd.grad(vcr_loss(h, alpha, beta, **kw), h)
    return grad


@pytest.mark.parametrize("cov_scale", ["eq2", "alg1"])
@pytest.mark.parametrize("delta", [None, 0.3])
@pytest.mark.parametrize("layout", ["nd", "nchw", "nhwc", "ntd"])
def test_fast_op_gradient_equals_autograd_of_vcr_loss(layout, delta, cov_scale):
    h = _features(layout)
    kw = dict(delta=delta, cov_scale=cov_scale, layout=layout)
    fast = _fast_grad(h, 0.7, 0.3, **kw)
    ref = _autograd_grad(h, 0.7, 0.3, **kw)
    assert ref.abs().max() > 1e-4  # a gradient that is not trivially zero
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-10)
    if delta is not None:
        # the test data really exercises the clamp
        cov = vcr_terms(h, layout=layout)
        c = as_samples(h, layout)
        c = c - c.mean(0)
        off = (c.t() @ c / (c.shape[0] - 1)).fill_diagonal_(0)
        assert (off.abs() > delta).any() and ((off.abs() < delta) & (off != 0)).any()
        assert torch.isfinite(cov["l_cov"])


@pytest.mark.parametrize("layout", ["nd", "nchw", "ntd"])
def test_vcr_loss_gradient_matches_finite_differences(layout):
    h = _features(layout, seed=1)
    h = (h[:2] if layout != "nd" else h[:12]).detach().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda t: vcr_loss(t, 0.5, 0.2, delta=0.3, layout=layout),
        (h,),
        eps=1e-6,
        atol=1e-8,
        fast_mode=True,
    )


@pytest.mark.parametrize("cov_scale", ["eq2", "alg1"])
@pytest.mark.parametrize("product", ["auto", "samples", "features"])
def test_sample_gram_product_for_wide_features(product, cov_scale):
    """n < d (pooled features, projectors): X C = (X X^T) X / (n-1) is exact too."""
    g = torch.Generator().manual_seed(5)
    h = torch.randn(10, 24, generator=g, dtype=torch.float64) * torch.linspace(
        0.2, 1.5, 24, dtype=torch.float64
    )
    h[:, 3] = 0.0  # and a dead feature
    layer = VCRLayer(0.8, 0.5, cov_scale=cov_scale, product=product)
    assert layer._use_sample_gram(h, 10, 24) == (product != "features")
    x = h.clone().requires_grad_()
    layer(x)
    vcr_penalty(layer).backward()
    ref = _autograd_grad(h, 0.8, 0.5, cov_scale=cov_scale)
    torch.testing.assert_close(x.grad, ref, rtol=0, atol=1e-10)
    terms = vcr_terms(h, cov_scale=cov_scale)
    for k in ("l_var", "l_cov", "std_mean"):
        torch.testing.assert_close(layer.last[k], terms[k], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("shape", [(4, 8, 2, 2), (16, 12, 1, 1), (4, 12, 1, 1), (3, 4, 5, 5)])
def test_nchw_gradients_keep_the_activation_layout(shape):
    """Small late-stage maps (H*W < C) and large ones take different kernels; both are exact
    and return a gradient with the activation's own (contiguous NCHW) strides."""
    g = torch.Generator().manual_seed(7)
    h = torch.randn(*shape, generator=g, dtype=torch.float64) + 0.5
    fast = _fast_grad(h, 0.7, 0.3)
    assert fast.is_contiguous()
    torch.testing.assert_close(fast, _autograd_grad(h, 0.7, 0.3), rtol=0, atol=1e-10)


def test_channels_last_input_gives_the_same_gradient():
    h = _features("nchw")
    ref = _fast_grad(h, 0.5, 0.5, layout="nchw")
    cl = _fast_grad(h.contiguous(memory_format=torch.channels_last), 0.5, 0.5, layout="nchw")
    torch.testing.assert_close(cl, ref, rtol=0, atol=1e-12)


def test_auto_layout_resolution():
    for layout in SHAPES:
        if layout == "nhwc":
            continue
        h = _features(layout)
        torch.testing.assert_close(
            vcr_loss(h, 1.0, 1.0), vcr_loss(h, 1.0, 1.0, layout=layout), rtol=0, atol=0
        )
    with pytest.raises(ConfigError, match="layout"):
        vcr_loss(torch.randn(2, 3, 4, 5, 6), 1.0, 1.0)


def test_alg1_covariance_term_is_eq2_times_n_minus_1():
    """Algorithm 1's constant lacks the 1/(n-1) of eq. 2: the covariance term (value and
    gradient) differs by exactly n-1. Keep this switch: the paper never says which one its beta
    grid used."""
    h = _features("nchw")
    n = as_samples(h, "nchw").shape[0]
    eq2 = vcr_terms(h, cov_scale="eq2")
    alg1 = vcr_terms(h, cov_scale="alg1")
    torch.testing.assert_close(alg1["l_cov"], eq2["l_cov"] * (n - 1), rtol=1e-13, atol=0)
    torch.testing.assert_close(alg1["l_var"], eq2["l_var"], rtol=0, atol=0)
    g_eq2 = _fast_grad(h, 0.0, 1.0, cov_scale="eq2")
    g_alg1 = _fast_grad(h, 0.0, 1.0, cov_scale="alg1")
    torch.testing.assert_close(g_alg1, g_eq2 * (n - 1), rtol=1e-12, atol=1e-15)


def test_huber_form_is_continuous_at_delta():
    h = _features("nd")
    small = vcr_terms(h, delta=1e3)["l_cov"]  # no clamp active: equals eq. 2
    torch.testing.assert_close(small, vcr_terms(h)["l_cov"], rtol=1e-14, atol=0)
    # the continuous Huber value never exceeds the squared form
    assert vcr_terms(h, delta=0.05)["l_cov"] <= vcr_terms(h)["l_cov"]


def test_forward_is_identity_and_no_op_when_not_training():
    h = torch.randn(8, 4, requires_grad=True)
    layer = VCRLayer(1.0, 1.0, name="x")
    assert layer(h) is h
    assert len(layer._pending) == 1
    vcr_penalty(layer)
    layer.eval()
    assert layer(h) is h and not layer._pending
    layer.train()
    with torch.no_grad():
        assert layer(h) is h and not layer._pending


def test_penalty_is_zero_and_cleared():
    h = torch.randn(16, 5, requires_grad=True)
    layer = VCRLayer(1.0, 1.0)
    assert vcr_penalty(layer).item() == 0.0  # nothing pending: a 0 tensor
    layer(h)
    layer(h * 2)  # two forwards (e.g. two SSL views) before one loss
    pen = vcr_penalty(layer)
    assert pen.item() == 0.0 and pen.requires_grad
    assert not layer._pending
    assert vcr_penalty(nn.Linear(2, 2)).item() == 0.0


def test_two_forwards_accumulate_both_gradients():
    h1, h2 = _features("nd", 1), _features("nd", 2)
    a = h1.clone().requires_grad_()
    b = h2.clone().requires_grad_()
    layer = VCRLayer(0.5, 0.5)
    layer(a)
    layer(b)
    vcr_penalty(layer).backward()
    torch.testing.assert_close(a.grad, _autograd_grad(h1, 0.5, 0.5), rtol=0, atol=1e-12)
    torch.testing.assert_close(b.grad, _autograd_grad(h2, 0.5, 0.5), rtol=0, atol=1e-12)


def test_forgotten_penalty_raises_at_backward():
    lin = nn.Linear(4, 6)
    layer = VCRLayer(1.0, 1.0, name="block.3")
    out = layer(lin(torch.randn(10, 4)))
    with pytest.raises(VCRError, match=r"block\.3.*vcr_penalty"):
        out.square().sum().backward()


def test_last_record_matches_vcr_terms():
    h = _features("ntd")
    layer = VCRLayer(1.0, 1.0, delta=0.3)
    x = h.clone().requires_grad_()
    layer(x)
    vcr_penalty(layer).backward()
    ref = vcr_terms(h, delta=0.3)
    for k in ("l_var", "l_cov", "std_mean"):
        assert not layer.last[k].requires_grad
        torch.testing.assert_close(layer.last[k], ref[k], rtol=1e-12, atol=0)


@pytest.mark.parametrize("eps", [1e-4, 0.0])
def test_dead_channel_gives_no_nan(eps):
    h = _features("nd").clone()
    h[:, 2] = 0.0
    g = _fast_grad(h, 1.0, 1.0, eps=eps)
    assert torch.isfinite(g).all()
    assert (g[:, 2] == 0).all()
    if eps > 0:
        torch.testing.assert_close(g, _autograd_grad(h, 1.0, 1.0, eps=eps), rtol=0, atol=1e-10)


def test_non_finite_input_names_the_layer():
    from vcr.attach import raise_if_nonfinite

    h = _features("nd").clone()
    h[3, 1] = float("nan")
    h.requires_grad_()
    match = r"stages\.2\.blocks\.5.*alpha=0\.64.*beta=0\.02"
    # "sync": raised inside the backward (a host sync per layer)
    layer = VCRLayer(0.64, 0.02, name="stages.2.blocks.5", check_finite="sync")
    layer(h)
    with pytest.raises(NonFiniteError, match=match):
        vcr_penalty(layer).backward()
    # default: a flag on the device, read when asked (the trainer: at logging and checkpoints)
    model = nn.Module()
    layer = VCRLayer(0.64, 0.02, name="stages.2.blocks.5")
    model.__dict__["_vcr_layers"] = {"stages.2.blocks.5": layer}
    layer(h)
    vcr_penalty(layer).backward()  # no sync, no error yet
    assert layer.nonfinite is not None
    with pytest.raises(NonFiniteError, match=match):
        raise_if_nonfinite(model)


def test_half_precision_input_uses_fp32_covariance():
    # sum of squares ~ 4096 * 100 overflows fp16 (max 65504) if computed in fp16
    torch.manual_seed(0)
    h32 = torch.randn(4096, 8) * 10.0 + 5.0
    for dtype in (torch.float16, torch.bfloat16):
        h = h32.to(dtype)
        g = _fast_grad(h, 1.0, 1.0)
        assert g.dtype == dtype and torch.isfinite(g).all()
        ref = _autograd_grad(h.double(), 1.0, 1.0)
        assert (g.double() - ref).abs().max() <= 2e-2 * ref.abs().max()


def test_invalid_config_is_named():
    with pytest.raises(ConfigError, match="cov_scale"):
        VCRLayer(1.0, 1.0, cov_scale="alg2")
    with pytest.raises(ConfigError, match="delta"):
        vcr_loss(torch.randn(4, 3), 1.0, 1.0, delta=0.0)
    with pytest.raises(ConfigError, match="alpha"):
        VCRLayer(float("nan"), 1.0)
    with pytest.raises(VCRError, match="2 samples"):
        VCRLayer(1.0, 1.0)(torch.randn(1, 3, requires_grad=True))


# --- loss scaling: AMP GradScaler and gradient accumulation ---------------------------------
def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))


def _batch(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def _reference_grads(net, chunks, alpha, beta):
    """Autograd of (task + vcr_loss on the hidden outputs) / k per micro-batch, summed."""
    net.zero_grad()
    for x, y in chunks:
        h1 = net[1](net[0](x))
        h2 = net[3](net[2](h1))
        loss = nn.functional.cross_entropy(net[4](h2), y)
        loss = loss + vcr_loss(h1, alpha, beta) + vcr_loss(h2, alpha, beta)
        (loss / len(chunks)).backward()
    return [p.grad.clone() for p in net.parameters()]


def _fast_forward(net, layers, x):
    h1 = layers[0](net[1](net[0](x)))
    h2 = layers[1](net[3](net[2](h1)))
    return net[4](h2)


def _rel_close(got, ref, tol=1e-5):
    for a, b in zip(got, ref):
        assert (a - b).abs().max() <= tol * b.abs().max(), (a - b).abs().max()


def test_grad_scaler_matches_unscaled_reference():
    alpha, beta = 1.28, 0.16
    net = _net()
    x, y = _batch()
    ref = _reference_grads(net, [(x, y)], alpha, beta)
    layers = [VCRLayer(alpha, beta, name="h1"), VCRLayer(alpha, beta, name="h2")]
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    net.zero_grad()
    loss = nn.functional.cross_entropy(_fast_forward(net, layers, x), y) + vcr_penalty(layers)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    _rel_close([p.grad for p in net.parameters()], ref)
    # without the zero scalar's scale the VCR part would be off by 2**16: make sure it matters
    assert any((layer.last["l_cov"] > 0) for layer in layers)


def test_gradient_accumulation_over_4_micro_batches():
    alpha, beta = 0.64, 0.08
    net = _net(1)
    x, y = _batch(64, 1)
    chunks = list(zip(x.chunk(4), y.chunk(4)))
    ref = _reference_grads(net, chunks, alpha, beta)
    layers = [VCRLayer(alpha, beta), VCRLayer(alpha, beta)]
    net.zero_grad()
    for xc, yc in chunks:
        loss = nn.functional.cross_entropy(_fast_forward(net, layers, xc), yc)
        ((loss + vcr_penalty(layers)) / 4).backward()
    _rel_close([p.grad for p in net.parameters()], ref)
    # and the VCR part is not negligible in that comparison
    no_vcr = _reference_grads(net, chunks, 0.0, 0.0)
    assert max((a - b).abs().max() for a, b in zip(ref, no_vcr)) > 1e-3


# --- distributed: global vs local statistics (2 CPU processes, gloo) ------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, x, out_dir):
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for global_stats in (True, False):
            torch.manual_seed(0)
            lin = nn.Linear(x.shape[1], 5).double()
            layer = VCRLayer(0.9, 0.4, name="lin", global_stats=global_stats)
            h = layer(lin(x.chunk(world)[rank]))
            # a task loss that is a per-rank mean, as in training
            loss = h.tanh().mean() + vcr_penalty(layer)
            loss.backward()
            grads = torch.cat([p.grad.flatten() for p in lin.parameters()])
            # what DDP's reducer does to parameter gradients (constructing a real DDP wrapper
            # costs ~5 s per process here): the average over ranks
            dist.all_reduce(grads)
            grads /= world
            torch.save(
                grads, os.path.join(out_dir, f"{'global' if global_stats else 'local'}{rank}.pt")
            )
    finally:
        dist.destroy_process_group()


def _run_ddp(x, out_dir):
    import torch.multiprocessing as mp

    world = 2
    mp.spawn(_ddp_worker, args=(world, _free_port(), x, str(out_dir)), nprocs=world, join=True)
    load = lambda name: torch.load(os.path.join(out_dir, name))  # noqa: E731
    return [load(f"global{r}.pt") for r in range(world)], [
        load(f"local{r}.pt") for r in range(world)
    ]


def _single_process_grads(x, vcr_rows):
    """Gradient of mean-tanh over all rows plus the mean of vcr_loss over ``vcr_rows`` chunks."""
    torch.manual_seed(0)
    lin = nn.Linear(x.shape[1], 5).double()
    h = lin(x)
    task = torch.stack([c.tanh().mean() for c in h.chunk(2)]).mean()
    reg = torch.stack([vcr_loss(c, 0.9, 0.4) for c in h.chunk(vcr_rows)]).mean()
    (task + reg).backward()
    return torch.cat([p.grad.flatten() for p in lin.parameters()])


def test_ddp_global_and_local_statistics(tmp_path):
    """global_stats=True: every rank ends with the single-process full-batch gradient.
    Local statistics: the gradient of the mean over ranks of per-rank VCR losses instead."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 4, generator=g, dtype=torch.float64) * torch.tensor(
        [0.5, 1.0, 2.0, 0.7], dtype=torch.float64
    )
    full = _single_process_grads(x, vcr_rows=1)
    per_rank = _single_process_grads(x, vcr_rows=2)
    glob, local = _run_ddp(x, tmp_path)
    for r in range(2):
        torch.testing.assert_close(glob[r], full, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(local[r], per_rank, rtol=1e-10, atol=1e-12)
    assert (full - per_rank).abs().max() > 1e-4  # the two conventions really differ here
