"""Models: the CIFAR ResNet of Cao et al., the two-moons MLP, mini timm models, SSL heads,
backbone files."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from vcr.errors import ConfigError
from vcr.models import (
    SSLModel,
    create_model,
    feature_dim,
    list_models,
    load_backbone,
    save_backbone,
    simclr_projector,
    vicreg_projector,
)


def _nparams(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_cifar_resnet32_matches_cao_et_al():
    torch.manual_seed(0)
    m = create_model("cifar_resnet32", num_classes=10)
    # LDAM-DRW's resnet32: 464,154 parameters for 10 classes ("about 0.46 M")
    assert _nparams(m) == 464154
    assert [len(getattr(m, f"layer{i}")) for i in (1, 2, 3)] == [5, 5, 5]
    assert [getattr(m, f"layer{i}")[0].conv1.out_channels for i in (1, 2, 3)] == [16, 32, 64]
    # option-A shortcut: parameter-free, subsample + zero-pad
    sc = m.layer2[0].shortcut
    assert _nparams(sc) == 0
    x = torch.randn(2, 16, 8, 8)
    y = sc(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2]) and not y[:, :8].any()
    assert feature_dim(m) == 64
    out = m(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 10)
    # depth is 6n+2
    assert len(create_model("cifar_resnet", depth=20).layer1) == 3
    with pytest.raises(ConfigError, match="6n\\+2"):
        create_model("cifar_resnet", depth=30)


def test_cifar_resnet_kaiming_init():
    torch.manual_seed(0)
    m = create_model("cifar_resnet32", num_classes=100)
    w = m.layer3[4].conv2.weight  # 64*9 fan-in: kaiming std = sqrt(2/576)
    assert abs(w.std().item() - (2 / 576) ** 0.5) < 0.1 * (2 / 576) ** 0.5


def test_two_moons_mlp_variants():
    m = create_model("two_moons_mlp")
    assert [b[0].out_features for b in m.blocks] == [500, 500] and m.fc.out_features == 1
    assert m(torch.randn(7, 2)).shape == (7, 1)
    gs = create_model("two_moons_mlp", hidden=(500,))
    assert _nparams(gs) == 2 * 500 + 500 + 500 + 1  # 2 -> 500 -> 1
    reg = create_model("two_moons_mlp", hidden=(8,), dropout=0.7, batchnorm=True)
    kinds = [type(x).__name__ for x in reg.blocks[0]]
    assert kinds == ["Linear", "BatchNorm1d", "Dropout", "ReLU"]  # on the pre-activation
    assert feature_dim(create_model("two_moons_mlp", num_classes=0)) == 500


def _timm_twin(name):
    """The timm model each plain-torch mini model mirrors (same depths and widths)."""
    if name == "mini_resnet":
        from timm.models.resnet import Bottleneck, ResNet

        # deep stem of width 2 x 8 = 16, its 3-conv body replaced by one 3x3/2 conv (32 px)
        m = ResNet(
            Bottleneck, (1, 1, 1, 1), channels=(8, 16, 32, 64), stem_type="deep", stem_width=8,
            num_classes=7,
        )  # fmt: skip
        m.conv1 = nn.Conv2d(3, 16, 3, 2, 1, bias=False)
        return m
    if name == "mini_convnext":
        from timm.models.convnext import ConvNeXt

        return ConvNeXt(
            depths=(1, 1, 2, 1), dims=(16, 32, 64, 128), patch_size=2, kernel_sizes=3,
            num_classes=7,
        )  # fmt: skip
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=32, patch_size=8, embed_dim=48, depth=4, num_heads=3, mlp_ratio=2.0,
        num_classes=7,
    )  # fmt: skip


@pytest.mark.parametrize("name", ["mini_resnet", "mini_convnext", "mini_vit"])
def test_mini_models_are_small_and_laid_out_like_timm(name):
    """Plain torch (no timm import in the mini pipeline), but VCR lands on the same sites, with
    the same names, as on the timm architecture they stand in for."""
    from vcr.attach import vcr_sites

    torch.manual_seed(0)
    m = create_model(name, num_classes=7)
    assert type(m).__module__ == "vcr.models.mini"
    twin = _timm_twin(name)
    assert type(m).__name__ == type(twin).__name__
    assert vcr_sites(m) == vcr_sites(twin)
    assert m.num_features == twin.num_features
    # same parameter and buffer names and shapes: a timm state dict loads into the mini model
    assert {k: v.shape for k, v in m.state_dict().items()} == {
        k: v.shape for k, v in twin.state_dict().items()
    }
    m.load_state_dict(twin.state_dict())
    x = torch.randn(2, 3, 32, 32)
    m.eval(), twin.eval()
    torch.testing.assert_close(m(x), twin(x), rtol=1e-4, atol=1e-5)  # and computes the same
    assert _nparams(m) < 400_000
    x = torch.randn(2, 3, 32, 32)
    assert m(x).shape == (2, 7)
    b = create_model(name, num_classes=0)
    assert b(x).shape == (2, feature_dim(b))


def test_create_model_falls_back_to_timm_and_names_errors():
    with torch.device("meta"):
        m = create_model("resnet18", num_classes=5)
    assert type(m).__name__ == "ResNet" and m.fc.out_features == 5
    with pytest.raises(ConfigError, match="no_such_net"):
        create_model("no_such_net")
    with pytest.raises(ConfigError, match="pretrained"):
        create_model("resnet18", pretrained=True)
    assert {"cifar_resnet32", "two_moons_mlp", "mini_resnet", "mini_convnext", "mini_vit"} <= set(
        list_models()
    )


def test_projectors():
    p = simclr_projector(64, hidden=32, out=16)
    kinds = ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert all(isinstance(x, getattr(nn, k)) for x, k in zip(p, kinds)) and len(p) == 5
    assert p(torch.randn(4, 64)).shape == (4, 16)
    # SimCLR v1: no bias in a Linear before a BN, no shift in the last BN (center=False)
    assert p[0].bias is None and p[3].bias is None
    assert p[1].bias is not None and p[4].bias is None and p[4].weight is not None
    assert [n for n, _ in p.named_parameters()] == [
        "0.weight",
        "1.weight",
        "1.bias",
        "3.weight",
        "4.weight",
    ]
    v = vicreg_projector(64, dims=(32, 32))
    assert [type(x).__name__ for x in v] == kinds and v[-1].num_features == 32
    own = vicreg_projector(64, dims=(32, 32, 32), variant="vicreg")
    assert type(own[-1]).__name__ == "Linear" and own[-1].bias is None
    assert sum(isinstance(x, nn.Linear) for x in own) == 3
    assert sum(isinstance(x, nn.BatchNorm1d) for x in own) == 2
    with torch.device("meta"):
        default = vicreg_projector(2048)
    assert [x.out_features for x in default if isinstance(x, nn.Linear)] == [8192, 8192]


@pytest.mark.parametrize(
    "arch,kwargs",
    [("cifar_resnet32", {}), ("mini_convnext", {"dims": (8, 16, 32, 64)}), ("mini_vit", {})],
)
def test_save_and_load_backbone_round_trip(tmp_path, arch, kwargs):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10, **kwargs)
    path = tmp_path / "backbone.pt"
    save_backbone(model, path, arch=arch, model_kwargs=kwargs, extra={"run": "x"})
    blob = torch.load(path, weights_only=True)
    assert set(blob) == {"arch", "model_kwargs", "state_dict", "feature_dim", "extra"}
    assert not any(
        k.startswith(("fc.", "head.fc.")) or k in ("head.weight", "head.bias")
        for k in blob["state_dict"]
    )
    loaded = load_backbone(path)
    assert not loaded.training
    x = torch.randn(3, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        feats = loaded(x)
        assert feats.shape == (3, blob["feature_dim"])
        torch.testing.assert_close(
            feats, model.forward_head(model.forward_features(x), pre_logits=True)
        )


def test_save_backbone_from_ssl_model_and_errors(tmp_path):
    torch.manual_seed(0)
    bb = create_model("mini_resnet", num_classes=0)
    ssl = SSLModel(bb, simclr_projector(feature_dim(bb), hidden=16, out=8))
    save_backbone(ssl, tmp_path / "b.pt", arch="mini_resnet")
    loaded = load_backbone(tmp_path / "b.pt")
    x = torch.randn(2, 3, 32, 32)
    bb.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), bb(x))
    with pytest.raises(ConfigError, match="mini_convnext"):
        save_backbone(bb, tmp_path / "c.pt", arch="mini_convnext")
    assert not (tmp_path / "c.pt").exists()
    with pytest.raises(FileNotFoundError, match="pretrain"):
        load_backbone(tmp_path / "missing.pt")


def test_import_does_not_load_timm():
    code = "import sys, vcr.models, vcr.attach, vcr.regularizer; print('timm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_bench_smoke(tmp_path, capsys):
    from vcr.bench import MODES, main

    res = main(
        [
            "--model",
            "two_moons_mlp",
            "--batch",
            "64",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--num-classes",
            "1",
            "--json",
            str(tmp_path / "b.json"),
        ]
    )
    assert set(res["median_ms"]) == set(MODES) and res["sites"] == 2
    assert res["ratio"]["none"] == 1.0 and all(v > 0 for v in res["median_ms"].values())
    assert (tmp_path / "b.json").is_file() and "exact" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["mini_convnext", "mini_vit"])
def test_mini_models_take_the_recipes_stochastic_depth(name):
    """tv_convnext_tiny passes drop_path_rate=0.1: rates rise linearly over the blocks (timm);
    eval mode is deterministic and equals the model without stochastic depth."""
    torch.manual_seed(0)
    m = create_model(name, num_classes=3, drop_path_rate=0.1)
    rates = [b.drop_path.p for b in m.modules() if hasattr(b, "drop_path")]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1) and rates == sorted(rates)
    plain = create_model(name, num_classes=3)
    plain.load_state_dict(m.state_dict())
    x = torch.randn(4, 3, 32, 32)
    m.eval(), plain.eval()
    torch.testing.assert_close(m(x), plain(x))
    m.train()
    torch.manual_seed(1)
    assert not torch.equal(m(x), m(x))  # branches dropped at random in training
