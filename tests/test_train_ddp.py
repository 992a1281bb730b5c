"""DDP on CPU (gloo, 2 processes): one trainer step equals one process on the full batch with
global-statistics VCR; with local statistics (the default) it equals the mean of the two
half-batch VCR gradients instead, which is a different (documented) update."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from test_train_support import (
    BASE_OVERRIDES,
    augment,
    backbone_state,
    run_tiny,
    tiny_bundle,
    tiny_spec,
)

from vcr import optim
from vcr import train as vt
from vcr.data import loading
from vcr.recipes import get_recipe
from vcr.regularizer import vcr_penalty

OVERRIDES = {
    "epochs": 1,
    "max_steps_per_epoch": 1,
    "warmup_epochs": 0,
    "optimizer": "sgd",
    "model_kwargs": {"dropout": 0.0},
}
SPEC = dict(alpha=1.28, beta=0.16, lr=0.5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, ports, root):
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
    )
    torch.set_num_threads(1)
    for port, name, global_stats in zip(ports, ("ddp_global", "ddp_local"), (True, False)):
        # a fresh rendezvous port per process group: re-using one races with its teardown
        os.environ["MASTER_PORT"] = str(port)
        overrides = {**OVERRIDES, "vcr_global_stats": global_stats}
        run_tiny(os.path.join(root, name), spec=tiny_spec(**SPEC), overrides=overrides)


def _close(a, b, atol=1e-6):
    return all(torch.allclose(a[k], b[k], atol=atol, rtol=1e-5) for k in a)


def _local_stats_reference():
    """One process: the first global batch in two halves, each (CE + VCR of its half) / 2."""
    spec = tiny_spec(**SPEC)
    recipe = get_recipe(spec.recipe, **{**BASE_OVERRIDES, **OVERRIDES})
    bundle = tiny_bundle()
    vt.seed_everything(spec.seed)
    model = vt.build_model(spec, recipe, bundle.num_classes)
    vt.attach(model, spec, recipe)
    opt = optim.build_optimizer(model, recipe, optim.resolved_lr(spec, recipe))
    sampler = loading.EpochBatchSampler(len(bundle.train), recipe.batch_size, seed=spec.seed)
    sampler.set_epoch(0)
    data = loading.SeededSamples(bundle.train, augment, spec.seed)
    batch = [data[k] for k in next(iter(sampler))]
    x = torch.stack([b[0] for b in batch])
    y = torch.tensor([b[1] for b in batch])
    model.train()
    opt.zero_grad()
    half = len(y) // 2
    for sl in (slice(0, half), slice(half, None)):
        loss = torch.nn.functional.cross_entropy(model(x[sl]), y[sl]) + vcr_penalty(model)
        (0.5 * loss).backward()
    opt.step()
    return {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_ddp_step_matches_single_process(tmp_path):
    single = run_tiny(
        tmp_path / "single",
        spec=tiny_spec(**SPEC),
        overrides={**OVERRIDES, "vcr_global_stats": True},
    )
    assert single["test_top1"] is not None
    ref_full = backbone_state(tmp_path / "single")
    mp.spawn(_worker, args=(2, (_free_port(), _free_port()), str(tmp_path)), nprocs=2, join=True)
    glob = backbone_state(tmp_path / "ddp_global")
    assert _close(glob, ref_full), "global-stats DDP != one process on the full batch"

    local = backbone_state(tmp_path / "ddp_local")
    assert _close(local, _local_stats_reference()), "local-stats DDP != mean of half-batch VCR"
    # the documented difference: per-rank statistics give another update than global ones
    assert not _close(local, ref_full, atol=1e-5)
