"""The GPU acceptance check: one command, on one GPU, that says whether VCR works there and at
what speed (issue 14). It runs in about 8 minutes on one A100/H100-class GPU:

    python -m vcr.gpu_check                     # on a GPU machine
    python -m vcr.gpu_check --device cpu --tiny # the same checks, tiny, on the CPU (CI, <= 60 s)

It prints, in order:

1. torch / CUDA / driver versions and the device name;
2. the fast op against autograd of ``vcr_loss``, on the device, in fp32 and bf16, for every
   layout (nd, NCHW, NCHW stored channels-last, NHWC, tokens), and with ``matmul="bf16"``;
3. the VCR overhead of ``resnet50``, ``convnext_tiny`` and ``vit_base_patch32_224`` at 224 px,
   batch 128, bf16, channels-last: none / autograd / exact / approx, median step time and peak
   memory (``vcr.bench``), beside the FLOP floor of each ratio;
4. images/s of each paper recipe's training step at its per-GPU batch (the recipe's global
   batch over the paper scale's GPUs per job, ``config.yaml``), with VCR on every block;
5. a 200-step bf16 training on generated 224-px data with VCR: the loss goes down, a
   checkpoint, and a resume whose next-step loss is identical;
6. a ``torchrun --nproc_per_node=1`` NCCL (gloo on the CPU) smoke test: all-reduce + one DDP
   step;
7. the L-BFGS probe on the device giving the CPU's lambda and accuracy.

It ends with one line per target: what it is, the floor (FLOP floor or tolerance), the measured
value, and the verdict; the exit status is 1 when a target fails. ``--tiny`` shrinks every size
(mini models, 32 px, batch 16, 20 steps) so the CPU run checks the code paths, not the speed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

from vcr.cli import resolve_device

LAYOUTS = ("nd", "nchw", "nchw_channels_last", "nhwc", "ntd")


@dataclass
class Target:
    name: str
    floor: str  # the bound or FLOP floor, as text
    measured: str
    ok: bool | None  # None: informational (no verdict on this machine)


def _versions(device: torch.device) -> list[str]:
    lines = [f"python {platform.python_version()}, torch {torch.__version__}"]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        lines.append(
            f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, device "
            f"{props.name} ({props.total_memory / 2**30:.0f} GiB, sm_{props.major}{props.minor})"
        )
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20,
            )  # fmt: skip
            lines.append(f"driver {smi.stdout.strip() or smi.stderr.strip()}")
        except (OSError, subprocess.SubprocessError) as err:
            lines.append(f"driver: nvidia-smi failed ({err})")
    else:
        lines.append(f"device cpu ({platform.processor() or platform.machine()}), no GPU used")
    return lines


def _layout_tensor(layout: str, device, dtype, tiny: bool) -> tuple[torch.Tensor, str]:
    g = torch.Generator().manual_seed(0)
    c, side, n = (16, 6, 4) if tiny else (256, 28, 8)
    mix = torch.eye(c) + 0.3 * torch.randn(c, c, generator=g)
    base = torch.randn(n * side * side, c, generator=g) @ mix + 1.0
    x = base.view(n, side, side, c)
    if layout == "nd":
        return base.to(device, dtype), "nd"
    if layout == "nhwc":
        return x.to(device, dtype).contiguous(), "nhwc"
    if layout == "ntd":
        return base.view(n, side * side, c).to(device, dtype), "ntd"
    nchw = x.permute(0, 3, 1, 2).to(device, dtype)
    if layout == "nchw":
        return nchw.contiguous(), "nchw"
    return nchw.contiguous(memory_format=torch.channels_last), "nchw"


def check_agreement(device, tiny: bool) -> list[Target]:
    """The fast op's gradient against autograd of vcr_loss (in float64 on the same values)."""
    from vcr.regularizer import VCRLayer, vcr_loss, vcr_penalty

    out = []
    for dtype, matmul, tol in (
        (torch.float32, "fp32", 1e-4),
        (torch.bfloat16, "fp32", 2e-2),
        (torch.bfloat16, "bf16", 2e-2),
    ):
        worst = 0.0
        for layout in LAYOUTS:
            h, lay = _layout_tensor(layout, device, dtype, tiny)
            ref_in = h.detach().double().requires_grad_(True)
            (ref,) = torch.autograd.grad(vcr_loss(ref_in, 0.64, 0.04, layout=lay), ref_in)
            x = h.detach().clone().requires_grad_(True)
            layer = VCRLayer(0.64, 0.04, layout=lay, matmul=matmul, rounding="nearest")
            layer(x)
            (g,) = torch.autograd.grad(vcr_penalty(layer), x)
            err = float((g.double() - ref).norm() / ref.norm())
            worst = max(worst, err)
            print(f"  fast op vs autograd, {str(dtype)[6:]:>8} matmul={matmul:<4} {layout:<20} "
                  f"relative error {err:.1e}")  # fmt: skip
        out.append(
            Target(
                f"fast op = autograd ({str(dtype)[6:]}, matmul={matmul}, {len(LAYOUTS)} layouts)",
                f"<= {tol:.0e}",
                f"{worst:.1e}",
                worst <= tol,
            )  # fmt: skip
        )
    return out


def check_overhead(device, tiny: bool, steps: int) -> list[Target]:
    from vcr import bench

    out = []
    archs = ("mini_resnet", "mini_convnext", "mini_vit") if tiny else (
        "resnet50", "convnext_tiny", "vit_base_patch32_224")  # fmt: skip
    for arch in archs:
        argv = [
            "--model", arch, "--batch", "16" if tiny else "128", "--size", "32" if tiny else "224",
            "--steps", str(steps), "--warmup", "1" if tiny else "3", "--device", device.type,
            "--max-samples", "256" if tiny else "16384",
        ]  # fmt: skip
        if device.type == "cuda":
            argv += ["--amp", "bf16", "--channels-last", "--matmul", "bf16"]
        res = bench.main(argv)
        for mode in ("exact", "approx"):
            r, fl = res["ratio"][mode], res["floor_ratio"][mode]
            verdict = None if device.type != "cuda" else r <= 1.1 * fl
            out.append(Target(f"{arch} {mode} step ratio", f"floor {fl:.3f} (x1.1)", f"{r:.3f}",
                              verdict))  # fmt: skip
        if device.type == "cuda":
            out.append(Target(f"{arch} approx overhead", "<= 1.10", f"{res['ratio']['approx']:.3f}",
                              res["ratio"]["approx"] <= 1.10))  # fmt: skip
    return out


def _per_gpu_batches() -> dict[str, int]:
    """Each paper recipe's per-GPU batch: its global batch over the paper scale's GPUs per job."""
    from vcr.plan import build_plan, load_config
    from vcr.recipes import get_recipe

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    plan = build_plan(load_config(os.path.join(root, "config.yaml")), "paper")
    out = {}
    for key, job in plan.pretrain.items():
        if job.init_weights or job.spec.recipe in out:
            continue
        gpus = max(1, int(plan.pretrain_resources(key)["gpu"]))
        out[job.spec.recipe] = (get_recipe(job.spec.recipe).batch_size // gpus, job.spec)
    return out


def check_recipes(device, tiny: bool, steps: int) -> list[Target]:
    from vcr.attach import attach_vcr
    from vcr.optim import build_optimizer
    from vcr.recipes import get_recipe
    from vcr.train import build_model, ssl_loss_fn, supervised_loss, training_step

    out = []
    small = {"projector_hidden": 64, "projector_out": 32, "projector_dims": [64, 64]}
    for name, (batch, spec) in sorted(_per_gpu_batches().items()):
        recipe = get_recipe(name, **(small if tiny and spec.method != "supervised" else {}))
        side = 32 if (tiny or spec.dataset.startswith("cifar")) else recipe.train_crop_size
        arch = _tiny_twin(spec.arch) if tiny else spec.arch
        batch = min(batch, 16) if tiny else batch
        torch.manual_seed(0)
        run_spec = spec if not tiny else type(spec)(**{**spec.to_dict(), "arch": arch})
        model = build_model(run_spec, recipe, 100).to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        target = model.backbone if hasattr(model, "projector") else model
        attach_vcr(
            target,
            "blocks",
            alpha=0.64,
            beta=0.04,
            matmul="bf16" if device.type == "cuda" else "fp32",
        )
        opt = build_optimizer(model, recipe, 0.01)
        x = torch.randn(batch, 3, side, side, device=device)
        y = torch.randint(0, 100, (batch,), device=device)
        if spec.method == "supervised":
            loss_fn, data = supervised_loss(nn.CrossEntropyLoss()), (x, y)
        else:
            loss_fn, data = ssl_loss_fn(spec.method, recipe), ((x, x.flip(-1)), y)
        amp = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else None
        times, warmup = [], 1 if tiny else 2
        for i in range(steps + warmup):
            _sync(device)
            t0 = time.perf_counter()
            training_step(model, loss_fn, data, opt, autocast=amp)
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        ips = batch / statistics.median(times)
        print(f"  {name:<24} {arch:<22} {side:>3} px, per-GPU batch {batch:>4}: {ips:8.1f} img/s")
        out.append(
            Target(f"{name} training step (VCR on)", f"batch {batch}", f"{ips:.0f} img/s", None)
        )
    return out


def _tiny_twin(arch: str) -> str:
    """The mini model standing in for a paper architecture (as at the mini scale)."""
    for prefix, mini in (("convnext", "mini_convnext"), ("vit", "mini_vit")):
        if arch.startswith(prefix):
            return mini
    return "mini_resnet"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_training(device, tiny: bool) -> list[Target]:
    """bf16 training with VCR on generated images whose class shows in a colour: the loss goes
    down; a checkpoint at the middle; a fresh model resumed from it takes the same next step."""
    from vcr.attach import attach_vcr
    from vcr.checkpoint import TrainState, rng_state, set_rng_state
    from vcr.models import create_model
    from vcr.optim import build_optimizer
    from vcr.recipes import get_recipe
    from vcr.train import supervised_loss, training_step

    steps, side, batch = (20, 32, 16) if tiny else (200, 224, 64)
    arch = "mini_resnet" if tiny else "resnet50"
    recipe = get_recipe("tv_resnet50_v1")
    torch.backends.cudnn.deterministic = True
    g = torch.Generator().manual_seed(0)

    def batch_at(i):
        y = torch.randint(0, 10, (batch,), generator=g)
        x = torch.randn(batch, 3, side, side, generator=g) * 0.5
        x[torch.arange(batch), y % 3] += (y.float() / 5 - 1).view(-1, 1, 1)
        return x.to(device), y.to(device)

    data = [batch_at(i) for i in range(steps)]

    def build():
        torch.manual_seed(0)
        model = create_model(arch, num_classes=10).to(device)
        attach_vcr(model, "blocks", alpha=0.64, beta=0.04)
        opt = build_optimizer(model, recipe, 0.05)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        return TrainState(model, model, opt, sched, None, None)

    amp = torch.autocast(device.type, dtype=torch.bfloat16)
    loss_fn = supervised_loss(nn.CrossEntropyLoss())
    state, losses, mid = build(), [], steps // 2
    saved = None
    for i, b in enumerate(data):
        if i == mid:
            saved = {
                "model": _clone(state.model.state_dict()),
                "opt": _clone(state.optimizer.state_dict()),
                "rng": rng_state(),
            }
        losses.append(
            float(training_step(state.model, loss_fn, b, state.optimizer, autocast=amp)["loss"])
        )
    resumed = build()
    resumed.model.load_state_dict(saved["model"])
    resumed.optimizer.load_state_dict(saved["opt"])
    set_rng_state(saved["rng"])
    again = float(
        training_step(resumed.model, loss_fn, data[mid], resumed.optimizer, autocast=amp)["loss"]
    )
    first, last = statistics.fmean(losses[:5]), statistics.fmean(losses[-5:])
    print(f"  {arch} bf16 + VCR, {steps} steps of {batch} x {side} px: loss {first:.3f} -> {last:.3f}; "
          f"step {mid} loss {losses[mid]:.6f}, after resume {again:.6f}")  # fmt: skip
    return [
        Target(f"{steps}-step bf16 training: loss goes down", "last 5 < first 5", f"{first:.3f} -> {last:.3f}", last < first),
        Target("resume: identical next-step loss", "equal", f"{losses[mid]:.6f} vs {again:.6f}", again == losses[mid]),
    ]  # fmt: skip


def _clone(sd):
    import copy

    return copy.deepcopy(sd)


def check_ddp(device) -> list[Target]:
    """``torchrun --nproc_per_node=1`` running the DDP smoke step below, NCCL on a GPU."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--standalone",
           "-m", "vcr.gpu_check", "--ddp-smoke", "--device", device.type]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    ok = proc.returncode == 0 and "ddp smoke ok" in proc.stdout
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
    backend = "nccl" if device.type == "cuda" else "gloo"
    print(
        f"  torchrun --nproc_per_node=1 ({backend}): rc {proc.returncode} in {time.perf_counter() - t0:.1f} s: {tail[0]}"
    )
    return [
        Target(f"torchrun {backend} all-reduce + DDP step", "rc 0", f"rc {proc.returncode}", ok)
    ]


def _ddp_smoke(device_type: str) -> int:
    import torch.distributed as dist

    from vcr.distributed import dist_info_from_env

    info = dist_info_from_env()  # torchrun's RANK, WORLD_SIZE, LOCAL_RANK (world 1 here)
    dev = torch.device("cuda", info.local_rank) if device_type == "cuda" else torch.device("cpu")
    if device_type == "cuda":
        torch.cuda.set_device(dev)
    # one process: vcr.distributed would not start a group, the smoke test wants one
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    t = torch.ones(3, device=dev) * (info.rank + 1)
    dist.all_reduce(t)
    model = nn.parallel.DistributedDataParallel(
        nn.Linear(8, 2).to(dev), device_ids=[dev.index] if device_type == "cuda" else None
    )
    model(torch.randn(4, 8, device=dev)).sum().backward()
    dist.destroy_process_group()
    print(f"ddp smoke ok: world {info.world_size}, all-reduce {t.tolist()}", flush=True)
    return 0


def check_probe(device, tiny: bool) -> list[Target]:
    from vcr.bench_probe import synthetic_features
    from vcr.probes import linear_probe_lbfgs

    n, d, k = (600, 64, 10) if tiny else (10_000, 2048, 100)
    data = synthetic_features(n, n // 5, n // 5, d, k, latent=16 if tiny else 64)
    devices = ("cpu", str(device)) if device.type != "cpu" else ("cpu",)
    res = {dev: linear_probe_lbfgs(*data, device=dev, num_lambdas=15 if tiny else 45)
           for dev in devices}  # fmt: skip
    res.setdefault(str(device), res["cpu"])
    cpu, dev = res["cpu"], res[str(device)]
    print(f"  L-BFGS probe {n} x {d}, {k} classes: cpu λ* {cpu['best_lambda']:.3g} test {cpu['test']:.4f} "
          f"({cpu['seconds']:.1f} s); {device} λ* {dev['best_lambda']:.3g} test {dev['test']:.4f} ({dev['seconds']:.1f} s)")  # fmt: skip
    same = cpu["best_lambda"] == dev["best_lambda"] and abs(cpu["test"] - dev["test"]) <= 0.005
    return [Target(f"L-BFGS probe on {device.type} = on cpu", "same λ*, test within 0.5 pt",
                   f"λ* {dev['best_lambda']:.3g} vs {cpu['best_lambda']:.3g}",
                   same if device.type != "cpu" else None)]  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m vcr.gpu_check", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true", help="tiny sizes: checks the code paths (CI)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per benchmark")
    p.add_argument("--json", default=None, help="also write the targets to this file")
    p.add_argument("--ddp-smoke", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.ddp_smoke:
        return _ddp_smoke(args.device)
    device = resolve_device(args.device)  # --device cuda without a GPU: a ConfigError at once
    if args.tiny or device.type == "cpu":
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    steps = args.steps or (1 if args.tiny else 20)
    t0 = time.perf_counter()
    targets: list[Target] = []
    sections = (
        ("versions", lambda: print("\n".join("  " + s for s in _versions(device))) or []),
        ("fast op vs autograd", lambda: check_agreement(device, args.tiny)),
        ("VCR overhead per architecture", lambda: check_overhead(device, args.tiny, steps)),
        ("paper recipes: training step images/s", lambda: check_recipes(device, args.tiny, steps)),
        ("bf16 training, checkpoint and resume", lambda: check_training(device, args.tiny)),
        ("torchrun smoke test", lambda: check_ddp(device)),
        ("L-BFGS probe on the device", lambda: check_probe(device, args.tiny)),
    )
    for title, run_section in sections:
        print(f"== {title}", flush=True)
        targets += run_section()
    print(f"== targets ({time.perf_counter() - t0:.0f} s)")
    for t in targets:
        verdict = "info" if t.ok is None else ("PASS" if t.ok else "FAIL")
        print(f"  {verdict:<4}  {t.name:<56} floor/bound {t.floor:<28} measured {t.measured}")
    if args.json:
        from vcr.io import write_json

        write_json(args.json, [t.__dict__ for t in targets])
    return 1 if any(t.ok is False for t in targets) else 0


if __name__ == "__main__":
    raise SystemExit(main())
