"""Step-time benchmark of VCR: no VCR vs VCR as an autograd loss vs the fast op, exact and
approximate.

    python -m vcr.bench --model cifar_resnet32 --batch 128 --size 32 --steps 20
    python -m vcr.bench --model resnet50 --batch 8 --size 224 --steps 5
    python -m vcr.bench --model resnet50 --batch 128 --size 224 --device cuda --amp bf16 \\
        --channels-last --matmul bf16

Each mode trains the same model (same weights, same random batch) for one fwd+bwd step
(cross-entropy on random labels, no optimizer step), VCR at the chosen placement on every site:

* ``none``: the task loss only.
* ``autograd``: forward hooks collect the block outputs; ``vcr_loss`` of each is added to the
  loss (about 6*n*d^2 FLOPs per output in backward, plus the saved graph).
* ``exact``: ``attach_vcr`` + ``vcr_penalty``, the fast op (4*n*d^2 FLOPs, no saved graph).
* ``approx``: the fast op with ``max_samples=K`` (``--max-samples``): 4*K*d^2 FLOPs per output
  with more than K sample rows.

The modes run interleaved step by step (one step of each in turn), so a machine whose load
changes during the run (shared CPU) biases none of them; the median step time is reported with
the ratio to ``none``, and beside it the FLOP floor of that ratio: (step FLOPs + VCR FLOPs) /
step FLOPs, with the step's FLOPs counted by ``torch.utils.flop_counter`` and VCR's as above.
On CUDA the peak allocated memory of one step per mode is also reported.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

MODES = ("none", "autograd", "exact", "approx")


def _build(args):
    from vcr.models import create_model

    model = create_model(args.model, num_classes=args.num_classes)
    model.train()
    device = torch.device(args.device)
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def _batch(args, model, device):
    g = torch.Generator().manual_seed(0)
    if args.model == "two_moons_mlp":
        x = torch.randn(args.batch, 2, generator=g)
    else:
        x = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    y = torch.randint(0, args.num_classes, (args.batch,), generator=g)
    x, y = x.to(device), y.to(device)
    if args.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def _make_step(mode, model, args):
    """Return step() running one fwd+bwd of ``model`` in ``mode``."""
    from vcr.attach import attach_vcr, vcr_sites
    from vcr.regularizer import vcr_loss, vcr_penalty

    vcr_kwargs = dict(cov_scale=args.cov_scale, delta=args.delta, check_finite=not args.no_check)
    collected: list[torch.Tensor] = []
    if mode in ("exact", "approx"):
        extra = {"matmul": args.matmul}
        if mode == "approx":
            extra["max_samples"] = args.max_samples
        attach_vcr(model, args.placement, alpha=args.alpha, beta=args.beta, **vcr_kwargs, **extra)
    elif mode == "autograd":
        sites = vcr_sites(model)
        if args.placement == "final":
            mod = model.get_submodule(sites.classifier)
            mod.register_forward_pre_hook(lambda m, a: collected.append(a[0]))
        else:
            names = list(sites.blocks) if "blocks" in args.placement else []
            if "downsample" in args.placement:
                names += sites.downsample or []
            for name in names:
                model.get_submodule(name).register_forward_hook(lambda m, a, o: collected.append(o))
    amp = args.amp
    device_type = torch.device(args.device).type
    vcr_kw = {k: v for k, v in vcr_kwargs.items() if k != "check_finite"}
    fast = mode in ("exact", "approx")

    def step(x, y):
        model.zero_grad(set_to_none=True)
        collected.clear()
        with torch.autocast(device_type, dtype=_AMP[amp], enabled=amp is not None):
            loss = nn.functional.cross_entropy(model(x), y)
            if mode == "autograd":
                for h in collected:
                    loss = loss + vcr_loss(h, args.alpha, args.beta, **vcr_kw)
        if fast:
            loss = loss + vcr_penalty(model)
        loss.backward()
        collected.clear()

    return step


_AMP = {None: torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args) -> dict:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = _build(args)
    x, y = _batch(args, base, device)
    modes = [m for m in MODES if m in args.modes]
    models = {m: copy.deepcopy(base) for m in modes}
    steps = {m: _make_step(m, models[m], args) for m in modes}

    peak = {}
    for m in modes:  # warm-up (and, on CUDA, one isolated step per mode for peak memory)
        for _ in range(args.warmup):
            steps[m](x, y)
        _sync(device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            steps[m](x, y)
            _sync(device)
            peak[m] = torch.cuda.max_memory_allocated(device) / 2**20
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.steps):
        for m in modes:
            _sync(device)
            t0 = time.perf_counter()
            steps[m](x, y)
            _sync(device)
            times[m].append(time.perf_counter() - t0)
    med = {m: statistics.median(t) * 1000 for m, t in times.items()}
    best = {m: min(t) * 1000 for m, t in times.items()}
    ref = med.get("none")
    from vcr.attach import vcr_layers

    n_sites = len(vcr_layers(models["exact"])) if "exact" in models else None
    floor = flop_floor(base, x, y, args)
    return {
        "model": args.model,
        "batch": args.batch,
        "size": args.size,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "amp": args.amp,
        "channels_last": args.channels_last,
        "placement": args.placement,
        "sites": n_sites,
        "steps": args.steps,
        "median_ms": med,
        "ratio": {m: (med[m] / ref if ref else None) for m in modes},
        # the fastest step is the least disturbed by other load on a shared machine
        "min_ms": best,
        "min_ratio": {m: (best[m] / best["none"] if "none" in best else None) for m in modes},
        "peak_mib": peak or None,
        "flops": floor,
        "floor_ratio": {
            m: (1 + floor["vcr"][m] / floor["step"]) if m in floor["vcr"] else None for m in modes
        },
    }


def flop_floor(model, x, y, args) -> dict:
    """FLOPs of one fwd+bwd step (``torch.utils.flop_counter``) and of VCR per mode: 6*n*d^2
    (autograd), 4*n*d^2 (exact), 4*min(n, K)*d^2 (approx), summed over the sites."""
    from torch.utils.flop_counter import FlopCounterMode

    from vcr.attach import vcr_sites

    m = copy.deepcopy(model)
    shapes = []
    sites = vcr_sites(m)
    names = list(sites.blocks) if "blocks" in args.placement else []
    names += (sites.downsample or []) if "downsample" in args.placement else []
    hooks = [
        m.get_submodule(n).register_forward_hook(lambda mod, a, o: shapes.append(tuple(o.shape)))
        for n in names
    ]
    if args.placement == "final":
        hooks.append(
            m.get_submodule(sites.classifier).register_forward_pre_hook(
                lambda mod, a: shapes.append(tuple(a[0].shape))
            )
        )
    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(m(x), y).backward()
    for h in hooks:
        h.remove()

    def rows_features(shape):
        if len(shape) == 4:  # NCHW (channels-last storage keeps the logical NCHW shape)
            return shape[0] * shape[2] * shape[3], shape[1]
        return int(torch.tensor(shape[:-1]).prod()), shape[-1]

    nd = [rows_features(s) for s in shapes]
    k = args.max_samples
    vcr = {
        "autograd": sum(6 * n * d * d for n, d in nd),
        "exact": sum(4 * n * d * d for n, d in nd),
        "approx": sum(4 * min(n, k) * d * d for n, d in nd),
    }
    return {"step": counter.get_total_flops(), "vcr": vcr}


def _print(res: dict) -> None:
    head = (
        f"{res['model']} batch {res['batch']} size {res['size']} on {res['device']} "
        f"({res['threads']} threads, amp={res['amp']}, channels_last={res['channels_last']}), "
        f"VCR at {res['placement']} ({res['sites']} sites), median of {res['steps']} steps"
    )
    print(head + f"; step {res['flops']['step'] / 1e9:.1f} GFLOP")
    print(
        f"{'mode':<10}{'median ms':>10}{'ratio':>8}{'floor':>8}{'min ms':>10}{'ratio':>8}"
        f"{'peak MiB':>10}"
    )
    for m, ms in res["median_ms"].items():
        r, mr, fl = res["ratio"][m], res["min_ratio"][m], res["floor_ratio"][m]
        pk = (res["peak_mib"] or {}).get(m)
        print(
            f"{m:<10}{ms:>10.1f}{(f'{r:.3f}' if r else '-'):>8}{(f'{fl:.3f}' if fl else '-'):>8}"
            f"{res['min_ms'][m]:>10.1f}{(f'{mr:.3f}' if mr else '-'):>8}"
            f"{(f'{pk:.0f}' if pk is not None else 'n/a'):>10}"
        )


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m vcr.bench", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="cifar_resnet32")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--amp", default=None, choices=["bf16", "fp16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--placement", default="blocks")
    p.add_argument("--alpha", type=float, default=0.16)
    p.add_argument("--beta", type=float, default=0.01)
    p.add_argument("--cov-scale", default="eq2", choices=["eq2", "alg1"])
    p.add_argument("--delta", type=float, default=None)
    p.add_argument("--no-check", action="store_true", help="skip the (device-side) finite check")
    p.add_argument("--matmul", default="fp32", choices=["fp32", "bf16"], help="VCRLayer.matmul")
    p.add_argument(
        "--max-samples", type=int, default=2048, help="K of the approx mode (VCRLayer.max_samples)"
    )
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--json", default=None, help="also write the result to this JSON file")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    res = run(args)
    _print(res)
    if args.json:
        from vcr.io import write_json

        write_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
