"""Recipe fidelity (issue 13): repeated augmentation, zero-init of the last BN, the per-GPU batch,
the eval resize, SimCLR's projector and the per-method SSL augmentation."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from vcr.data import loading
from vcr.data import transforms as T
from vcr.errors import ConfigError
from vcr.recipes import get_recipe

ROOT = Path(__file__).resolve().parents[1]


# --- repeated augmentation ----------------------------------------------------------------------
def _torchvision_rank_indices(perm, reps, rank, world_size, total):
    """torchvision's RASampler.__iter__ after its shuffle (references/classification/sampler.py):
    repeat each index ``reps`` times, pad, deal round-robin to the ranks."""
    indices = [i for i in perm for _ in range(reps)]
    size = int(np.ceil(len(perm) * reps / world_size)) * world_size
    indices += indices[: size - len(indices)]
    return indices[rank:size:world_size][:total]


def test_repeated_augmentation_deals_the_global_batch_as_torchvision():
    n, batch, reps = 48, 12, 3
    sampler = loading.RepeatedAugmentationSampler(n, batch, reps=reps, seed=5)
    sampler.set_epoch(4)
    one = list(sampler)
    assert len(one) == n // batch  # epoch length as without repeats
    g = torch.Generator().manual_seed(5 * 1_000_003 + 4)
    perm = torch.randperm(n, generator=g).tolist()
    flat = [(i, c) for b in one for _, i, c in b]
    # the global sequence: every index of the permutation reps times in a row, copies 0..reps-1
    assert flat == [(i, c) for i in perm for c in range(reps)][: len(flat)]
    for world in (2, 4):
        per_rank = []
        for r in range(world):
            s = loading.RepeatedAugmentationSampler(n, batch, reps=reps, seed=5, rank=r,
                                                    world_size=world)  # fmt: skip
            s.set_epoch(4)
            per_rank.append(list(s))
        for step in range(len(one)):
            # same global batch whatever the world size, and the rank gets what torchvision's
            # rank would get at that step (per-GPU batch = batch / world)
            got = sorted(x for rank in per_rank for x in rank[step])
            assert got == sorted(one[step])
            b = batch // world
            for r in range(world):
                tv = _torchvision_rank_indices(perm, reps, r, world, n * reps // world)
                assert [i for _, i, _ in per_rank[r][step]] == tv[step * b : (step + 1) * b]
        # the copies of one image sit on different ranks when reps <= world size
        if world >= reps:
            first = [[(i, c) for _, i, c in rank[0]] for rank in per_rank]
            for i in {i for rank in first for i, _ in rank}:
                holders = [r for r, rank in enumerate(first) for j, _ in rank if j == i]
                assert len(holders) == len(set(holders))


def test_repeated_augmentation_resumes_mid_epoch_with_the_same_batches():
    full = loading.RepeatedAugmentationSampler(60, 10, reps=4, seed=1, rank=1, world_size=2)
    full.set_epoch(7)
    batches = list(full)
    resumed = loading.RepeatedAugmentationSampler(60, 10, reps=4, seed=1, rank=1, world_size=2)
    resumed.set_epoch(7, start_step=4)
    assert list(resumed) == batches[4:] and len(resumed) == len(batches) - 4
    other = loading.RepeatedAugmentationSampler(60, 10, reps=4, seed=1, rank=1, world_size=2)
    other.set_epoch(8)
    assert list(other) != batches


def test_each_copy_draws_its_own_augmentation():
    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.zeros(3), i

    ds = loading.SeededSamples(Images(), lambda x: x + torch.rand(3), seed=0)
    a0, a1, b0 = ds[(2, 1, 0)][0], ds[(2, 1, 1)][0], ds[(2, 1)][0]
    assert not torch.equal(a0, a1) and torch.equal(a0, b0)  # copy 0 = the plain sample
    assert loading.sample_seed(0, 2, 1) == loading.sample_seed(0, 2, 1, 0)
    # the batched array path too
    arrays = type("A", (), {})()
    arrays.images = np.random.default_rng(0).integers(0, 255, (4, 8, 8, 3), dtype=np.uint8)
    arrays.targets = [0, 1, 2, 3]
    batches = [[(0, 1, 0), (0, 1, 1), (0, 1, 2), (0, 1, 3)]]
    x, _ = next(iter(loading.ArrayBatches(arrays, batches, (0, 0, 0), (1, 1, 1),
                                          transform="train_cifar")))  # fmt: skip
    assert len({x[i].numpy().tobytes() for i in range(4)}) > 1


def test_the_sampler_follows_the_recipe():
    r = get_recipe("tv_resnet50_v2", batch_size=8)
    assert r.ra_reps == 4 and get_recipe("tv_vit_b_32").ra_reps == 3
    assert get_recipe("tv_convnext_tiny").ra_reps == 4 and get_recipe("tv_resnet50_v1").ra_reps == 0
    s = loading.epoch_sampler(40, r, seed=0)
    assert isinstance(s, loading.RepeatedAugmentationSampler) and s.reps == 4
    plain = loading.epoch_sampler(40, get_recipe("tv_resnet50_v2", batch_size=8, ra_reps=0), seed=0)
    assert type(plain) is loading.EpochBatchSampler


# --- zero-init of the last BN, per-GPU batch ------------------------------------------------------
def test_torchvision_resnet_recipes_do_not_zero_init_the_last_bn():
    from vcr.models import create_model

    for name in ("tv_resnet50_v1", "tv_resnet50_v2"):
        assert get_recipe(name).model_kwargs == {"zero_init_last": False}
    torch.manual_seed(0)
    tv = create_model("mini_resnet", **get_recipe("tv_resnet50_v2").model_kwargs)
    timm_like = create_model("mini_resnet")
    assert all(
        float(b.bn3.weight.detach().abs().sum()) > 0 for b in tv.modules() if hasattr(b, "bn3")
    )
    assert all(
        float(b.bn3.weight.detach().abs().sum()) == 0
        for b in timm_like.modules()
        if hasattr(b, "bn3")
    )


def test_timm_resnet50_takes_the_recipe_kwarg():
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        m = timm.create_model("resnet50", pretrained=False, zero_init_last=False)
    assert m is not None  # the kwarg exists (a typo would raise TypeError here)


def test_gpu_runs_split_the_batch_over_the_recipes_gpus():
    from vcr.run_checks import check_world_size

    r = get_recipe("tv_resnet50_v2")
    assert r.world_size == 8 and r.batch_size // r.world_size == 128  # torchvision's 8 x 128
    check_world_size(r, 8, torch.device("cuda"))  # a device object only: no GPU needed
    check_world_size(r, 1, torch.device("cpu"))  # CPU runs are not checked
    with pytest.raises(ConfigError, match="8 GPUs .128 per GPU.* 16 process"):
        check_world_size(r, 16, torch.device("cuda"))
    assert {n: get_recipe(n).world_size for n in ("tv_convnext_tiny", "tv_vit_b_32")} == {
        "tv_convnext_tiny": 16,
        "tv_vit_b_32": 16,
    }
    with pytest.raises(ConfigError, match="not divisible"):
        get_recipe("tv_resnet50_v2", world_size=7)


def test_the_plan_refuses_a_layout_other_than_the_recipes():
    from vcr import plan as P

    config = P.load_config(ROOT / "config.yaml")
    P.build_plan(config, "paper")
    bad = copy.deepcopy(config)
    res = bad["scales"]["paper"]["resources"]
    res["pretrain:tv_resnet50_v2"] = {"nodes": 2}  # gpu is per node: 2 x 8
    with pytest.raises(ConfigError, match=r"tv_resnet50_v2 on imagenet: 2 node\(s\) x 8 GPUs"):
        P.build_plan(bad, "paper")
    del bad["scales"]["paper"]["recipe_overrides"]["atto_superclass_200ep:cifar100"]
    del res["pretrain:tv_resnet50_v2"]
    with pytest.raises(
        ConfigError, match=r"atto_superclass_200ep on cifar100: 1 node\(s\) x 1 GPUs"
    ):
        P.build_plan(bad, "paper")


# --- evaluation resize ----------------------------------------------------------------------------
INFO_224 = {"image_size": 224, "mean": (0.5, 0.5, 0.5), "std": (0.2, 0.2, 0.2)}


def _resize_of(tf):
    sizes = [t.size for t in getattr(tf, "transforms", []) if type(t).__name__ == "Resize"]
    if not sizes:
        return None
    return sizes[0][0] if isinstance(sizes[0], list | tuple) else sizes[0]


def test_training_time_validation_resizes_256_then_crops_224():
    pytest.importorskip("torchvision")
    r = get_recipe("atto_in1k_90ep")
    assert _resize_of(T.run_transform(r, "supervised", INFO_224, "eval")) == 256
    small = {**INFO_224, "image_size": 32}  # native 32 px: resize and crop are the identity
    assert _resize_of(T.run_transform(r, "supervised", small, "eval")) == 32
    tv = get_recipe("tv_convnext_tiny")
    assert _resize_of(T.run_transform(tv, "supervised", INFO_224, "eval")) == 232


def test_probe_eval_resize_follows_the_protocol():
    from vcr.probes.run import EVAL_RESIZE

    assert EVAL_RESIZE == {"sgd": 256, "finetune": 256, "lbfgs": 0, "adamw": 0}
    assert T.probe_resize(224, 256) == 256
    assert T.probe_resize(224, 0) is None and T.probe_resize(32, 256) is None


# --- SimCLR / VICReg augmentation -----------------------------------------------------------------
def test_each_ssl_method_has_its_own_augmentation():
    simclr, vicreg = T.SSL_AUGMENTS["simclr"], T.SSL_AUGMENTS["vicreg"]
    assert simclr.jitter == (0.8, 0.8, 0.8, 0.2) and simclr.solarize_p == 0
    assert vicreg.jitter == (0.4, 0.4, 0.2, 0.1) and vicreg.solarize_p == 0.1
    assert get_recipe("simclr_100ep").ssl_augment == "simclr"
    assert get_recipe("vicreg_100ep").ssl_augment == "vicreg"
    with pytest.raises(ConfigError):
        get_recipe("simclr_100ep", ssl_augment="byol")


def test_simclr_views_never_solarize():
    pytest.importorskip("torchvision")
    tf = T.run_transform(get_recipe("simclr_100ep"), "simclr", INFO_224, "train")
    names = [type(t).__name__ for t in tf.transform.transforms]
    assert "RandomSolarize" not in names
    tf = T.run_transform(get_recipe("vicreg_100ep"), "vicreg", INFO_224, "train")
    assert "RandomSolarize" in [type(t).__name__ for t in tf.transform.transforms]
    # batched twin: a solarized pixel of a bright image would be dark
    x = torch.full((64, 3, 8, 8), 0.9)
    g = torch.Generator().manual_seed(0)
    aug = T.SSLAugment(**{**T.SSL_AUGMENTS["simclr"].__dict__, "jitter_p": 0, "grayscale_p": 0})
    assert float(T.ssl_views(x, g, aug).min()) > 0.5
    solar = T.SSLAugment(**{**aug.__dict__, "solarize_p": 1.0})
    assert float(T.ssl_views(x, torch.Generator().manual_seed(0), solar).max()) < 0.5
