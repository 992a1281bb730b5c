"""Placing VCR on models: counts per architecture, forward untouched, exact removal."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from vcr.attach import (
    PLACEMENTS,
    attach_vcr,
    detach_vcr,
    vcr_layers,
    vcr_sites,
    vcr_stats,
)
from vcr.errors import ConfigError, VCRError
from vcr.models import SSLModel, create_model, simclr_projector
from vcr.regularizer import vcr_loss, vcr_penalty

# the contract's counts for the "blocks" placement
PAPER_COUNTS = {
    "resnet50": 16,
    "convnext_tiny": 18,
    "convnext_atto": 12,
    "vit_base_patch32_224": 12,
    "cifar_resnet32": 15,
}


@pytest.fixture(scope="module")
def paper_models():
    # Structure only: built on the meta device (no weights allocated, no init), so the four
    # timm models cost ~0.5 s instead of ~10 s.
    with torch.device("meta"):
        return {name: create_model(name) for name in PAPER_COUNTS}


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_blocks_counts_on_paper_architectures(paper_models, name):
    model = paper_models[name]
    names = attach_vcr(model, "blocks", alpha=1.0, beta=0.1)
    try:
        assert len(names) == PAPER_COUNTS[name]
        assert len(vcr_layers(model)) == PAPER_COUNTS[name]
        # every name is a real module, in forward order, no duplicates
        modules = [n for n, _ in model.named_modules()]
        assert sorted(names, key=modules.index) == names and len(set(names)) == len(names)
    finally:
        detach_vcr(model)


def test_other_placements_on_paper_architectures(paper_models):
    expected_down = {
        "resnet50": 5,  # stem + 4 projection shortcuts
        "convnext_tiny": 4,  # stem + 3 stage downsample layers
        "convnext_atto": 4,
        "cifar_resnet32": 3,  # stem + 2 option-A shortcuts
    }
    for name, model in paper_models.items():
        assert attach_vcr(model, "none", alpha=1.0, beta=1.0) == []
        final = attach_vcr(model, "final", alpha=1.0, beta=1.0)
        assert len(final) == 1
        detach_vcr(model)
        if name in expected_down:
            down = attach_vcr(model, "downsample", alpha=1.0, beta=1.0)
            detach_vcr(model)
            both = attach_vcr(model, "blocks+downsample", alpha=1.0, beta=1.0)
            detach_vcr(model)
            assert len(down) == expected_down[name]
            assert len(both) == PAPER_COUNTS[name] + expected_down[name]
        else:
            for placement in ("downsample", "blocks+downsample"):
                with pytest.raises(ConfigError, match="no downsample"):
                    attach_vcr(model, placement, alpha=1.0, beta=1.0)
            assert not vcr_layers(model)
    assert vcr_sites(paper_models["convnext_tiny"]).downsample == [
        "stem",
        "stages.1.downsample",
        "stages.2.downsample",
        "stages.3.downsample",
    ]


SMALL = {
    "cifar_resnet32": (lambda: create_model("cifar_resnet32", num_classes=10), (4, 3, 32, 32)),
    "mini_resnet": (lambda: create_model("mini_resnet", num_classes=10), (4, 3, 32, 32)),
    "mini_convnext": (lambda: create_model("mini_convnext", num_classes=10), (4, 3, 32, 32)),
    "mini_vit": (lambda: create_model("mini_vit", num_classes=10), (4, 3, 32, 32)),
    "two_moons_mlp": (lambda: create_model("two_moons_mlp", hidden=(32, 32)), (16, 2)),
}


def _small(name):
    torch.manual_seed(0)
    build, shape = SMALL[name]
    return build(), shape


def _grads(model, x, y_fn, penalty):
    model.zero_grad()
    out = model(x)
    loss = y_fn(out)
    if penalty:
        loss = loss + vcr_penalty(model)
    loss.backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("name", ["cifar_resnet32", "mini_resnet", "mini_convnext", "mini_vit"])
def test_forward_bits_and_zero_coefficient_gradients_unchanged(name):
    model, shape = _small(name)
    if name == "cifar_resnet32":
        shape = (shape[0], shape[1], 16, 16)  # smaller maps: same code paths, quicker
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    target = torch.arange(shape[0]) % 10

    def loss_fn(out):
        return nn.functional.cross_entropy(out, target)

    model.train()
    ref_out, ref_grads = _grads(copy.deepcopy(model), x, loss_fn, penalty=False)
    placement = "blocks+downsample" if name != "mini_vit" else "blocks"
    attach_vcr(model, placement, alpha=0.0, beta=0.0)
    out, grads = _grads(model, x, loss_fn, penalty=True)
    assert torch.equal(out, ref_out)  # not a single forward bit changed
    for k in ref_grads:
        torch.testing.assert_close(grads[k], ref_grads[k], rtol=0, atol=0)
    assert vcr_stats(model)  # the layers did run their backward


def test_fast_op_on_a_model_equals_autograd_loss_on_hooked_outputs():
    torch.manual_seed(0)
    model = create_model("cifar_resnet", depth=8, num_classes=10).double()
    x = torch.randn(6, 3, 16, 16, dtype=torch.float64)
    y = torch.arange(6) % 10
    alpha, beta = 0.64, 0.16
    ref_model = copy.deepcopy(model)
    outs = []
    handles = [
        ref_model.get_submodule(n).register_forward_hook(lambda m, a, o: outs.append(o))
        for n in vcr_sites(ref_model).blocks
    ]
    loss = nn.functional.cross_entropy(ref_model(x), y)
    loss = loss + sum(vcr_loss(h, alpha, beta) for h in outs)
    loss.backward()
    for h in handles:
        h.remove()
    attach_vcr(model, "blocks", alpha=alpha, beta=beta)
    (nn.functional.cross_entropy(model(x), y) + vcr_penalty(model)).backward()
    for (n, p), q in zip(model.named_parameters(), ref_model.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-12, msg=n)


def test_removal_restores_the_model_exactly():
    for name in SMALL:
        model, shape = _small(name)
        x = torch.randn(*shape)
        before_sd = {k: v.clone() for k, v in model.state_dict().items()}
        before_modules = [n for n, _ in model.named_modules()]
        model.eval()
        with torch.no_grad():
            ref = model(x)
        placement = "blocks+downsample" if vcr_sites(model).downsample else "blocks"
        names = attach_vcr(model, placement, alpha=1.0, beta=1.0)
        assert names
        assert [n for n, _ in model.named_modules()] == before_modules
        assert list(model.state_dict()) == list(before_sd)
        detach_vcr(model)
        assert not vcr_layers(model) and vcr_stats(model) == {}
        assert "_vcr_layers" not in model.__dict__
        for m in model.modules():
            assert not m._forward_hooks and not m._forward_pre_hooks, name
            assert not [k for k in m.__dict__ if k.startswith("_vcr")], name
        sd = model.state_dict()
        assert all(torch.equal(sd[k], before_sd[k]) for k in before_sd)
        with torch.no_grad():
            assert torch.equal(model(x), ref)


def test_deepcopy_of_an_attached_model_uses_its_own_layers():
    model, shape = _small("two_moons_mlp")
    attach_vcr(model, "blocks", alpha=1.0, beta=1.0)
    twin = copy.deepcopy(model)
    twin(torch.randn(*shape))
    assert all(layer._pending for layer in vcr_layers(twin).values())
    assert not any(layer._pending for layer in vcr_layers(model).values())
    vcr_penalty(twin)
    detach_vcr(twin)
    assert not vcr_layers(twin) and len(vcr_layers(model)) == 2
    assert all(m._forward_hooks for m in model.blocks)


def test_train_eval_mode_and_forgotten_penalty():
    model, shape = _small("mini_convnext")
    attach_vcr(model, "blocks", alpha=1.0, beta=1.0)
    x = torch.randn(*shape)
    model.eval()
    model(x).sum().backward()  # eval: VCR inactive, no penalty needed
    assert vcr_penalty(model).item() == 0.0
    model.train()
    with pytest.raises(VCRError, match="vcr_penalty"):
        model(x).sum().backward()


def test_stats_and_final_placement_on_mlp():
    torch.manual_seed(0)
    model = create_model("two_moons_mlp", hidden=(16, 16))
    names = attach_vcr(model, "final", alpha=1.0, beta=1.0, cov_scale="alg1", eps=0.0)
    assert names == ["fc"]
    layer = vcr_layers(model)["fc"]
    assert layer.cov_scale == "alg1" and layer.eps == 0.0 and "fc" in layer.name
    (model(torch.randn(32, 2)).sum() + vcr_penalty(model)).backward()
    stats = vcr_stats(model)
    assert set(stats) == {"vcr/l_var", "vcr/l_cov", "vcr/std_mean"}
    assert all(isinstance(v, float) and v >= 0 for v in stats.values())
    with pytest.raises(ConfigError, match="already"):
        attach_vcr(model, "blocks", alpha=1.0, beta=1.0)
    detach_vcr(model)
    assert attach_vcr(model, "blocks", alpha=1.0, beta=1.0) == ["blocks.0", "blocks.1"]


def test_ssl_model_puts_vcr_on_the_backbone():
    torch.manual_seed(0)
    backbone = create_model("mini_resnet", num_classes=0)
    model = SSLModel(backbone, simclr_projector(backbone.num_features, hidden=32, out=16))
    names = attach_vcr(model, "blocks", alpha=1.0, beta=1.0)
    assert names == [f"backbone.layer{i}.0" for i in range(1, 5)]
    detach_vcr(model)
    with_proj = attach_vcr(model, "blocks", alpha=1.0, beta=1.0, regularize_projector=True)
    assert with_proj[:4] == names and with_proj[4:] == ["projector.2", "projector.4"]
    z = model(torch.randn(8, 3, 32, 32))
    (z.square().mean() + vcr_penalty(model)).backward()
    assert all(layer.last is not None for layer in vcr_layers(model).values())
    detach_vcr(model)
    assert attach_vcr(model, "final", alpha=1.0, beta=1.0) == ["backbone.fc"]


def test_bad_inputs_are_named():
    model = create_model("two_moons_mlp")
    with pytest.raises(ConfigError, match="placement"):
        attach_vcr(model, "every_layer", alpha=1.0, beta=1.0)
    with pytest.raises(ConfigError, match="register_architecture"):
        attach_vcr(nn.Sequential(nn.Linear(2, 2)), "blocks", alpha=1.0, beta=1.0)
    with pytest.raises(ConfigError, match="projector"):
        attach_vcr(model, "blocks", alpha=1.0, beta=1.0, regularize_projector=True)
    assert "blocks" in PLACEMENTS and "none" in PLACEMENTS


def _saved_storages(model, x, penalty):
    """Storages (and bytes) that autograd saves for backward during one training forward."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    if penalty:
        vcr_penalty(model)  # consume the zero scalars
    del out
    return seen


def test_blocks_placement_saves_no_extra_activation():
    """At block outputs the op saves the block output, which the next layer saves anyway."""
    model, shape = _small("cifar_resnet32")
    model.train()
    x = torch.randn(2, 3, 16, 16)
    base = _saved_storages(model, x, penalty=False)
    attach_vcr(model, "blocks", alpha=1.0, beta=1.0)
    with_vcr = _saved_storages(model, x, penalty=True)
    assert sum(with_vcr.values()) == sum(base.values())
