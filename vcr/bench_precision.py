"""Does VCR act, and does it survive bf16? Two measurements at init, in a real CPU autocast
backward (issue 13):

    python -m vcr.bench_precision                      # the four architectures, grid corners
    python -m vcr.bench_precision --archs cifar_resnet32 --batch 64 --json out.json

1. **Strength**: at every VCR site (the block outputs), the ratio ||g_vcr|| / ||g_task|| of the
   VCR gradient to the task gradient arriving at that output, fp32, under ``cov_scale`` eq2 and
   alg1, for the paper grid's (alpha, beta) corners. g_vcr is the exact autograd gradient of
   ``vcr_loss`` of the output (the definition, independent of the fast op); g_task the gradient
   of the cross-entropy at that output without VCR.
2. **Precision**: the share of VCR's change to the parameter gradients that survives bf16
   autocast: with D = grad(with VCR) - grad(without VCR) over all parameters,
   share = <D_bf16, D_fp32> / ||D_fp32||^2 (1 = all of it, 0 = erased), and the residual
   ||D_bf16 - D_fp32|| / ||D_fp32|| (rounding noise, relative to VCR's change). The same weights,
   batch and labels in every pass; the fast op (``attach_vcr``) injects VCR, as in training;
   ``--set rounding=nearest`` measures the round-to-nearest sum instead of the default.

Models at init (seeded), random images and labels, batch-statistics BatchNorm (train mode).
Besides the corners, the variance term alone (beta = 0) and the covariance term alone
(alpha = 0) are measured at the strongest corner's values.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import nn  # noqa: E402

# (arch, image side, default batch): the paper's resolutions
ARCHS = {
    "cifar_resnet32": (32, 64),
    "resnet50": (224, 8),
    "convnext_tiny": (224, 8),
    "vit_base_patch32_224": (224, 8),
}
GRID_ALPHAS = (1.28, 0.16)  # the grid's corners (vcr/design.yaml grid: 1.28 .. 0.16)
GRID_BETAS = (0.16, 0.01)  # (0.16 .. 0.01)


def _settings():
    out = [(a, b) for a in GRID_ALPHAS for b in GRID_BETAS]
    a = GRID_ALPHAS[0]
    # the variance term alone; the covariance term alone at the grid's largest and smallest beta
    return out + [(a, 0.0), (0.0, GRID_BETAS[0]), (0.0, GRID_BETAS[-1])]


def _model(arch: str, num_classes: int):
    from vcr.models import create_model

    torch.manual_seed(0)
    return create_model(arch, num_classes=num_classes).train()


def _batch(side: int, batch: int, num_classes: int):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, side, side, generator=g)
    y = torch.randint(0, num_classes, (batch,), generator=g)
    return x, y


def _param_grads(model, x, y, *, amp: bool) -> torch.Tensor:
    from vcr.regularizer import vcr_penalty

    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        loss = nn.functional.cross_entropy(model(x), y)
    (loss + vcr_penalty(model)).backward()
    return torch.cat(
        [p.grad.reshape(-1).double() for p in model.parameters() if p.grad is not None]
    )


def site_ratios(model, x, y, alpha, beta, cov_scale) -> list[float]:
    """||g_vcr|| / ||g_task|| at every block output, fp32, by definition (see module doc)."""
    from vcr.attach import vcr_sites
    from vcr.regularizer import vcr_loss

    outs: list[torch.Tensor] = []

    def keep(module, args, out):
        out.retain_grad()
        outs.append(out)

    handles = [model.get_submodule(n).register_forward_hook(keep) for n in vcr_sites(model).blocks]
    try:
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
    finally:
        for h in handles:
            h.remove()
    ratios = []
    for h in outs:
        hd = h.detach().requires_grad_(True)
        (g_vcr,) = torch.autograd.grad(vcr_loss(hd, alpha, beta, cov_scale=cov_scale), hd)
        ratios.append(float(g_vcr.norm() / h.grad.norm().clamp_min(1e-30)))
    return ratios


def survival(model, x, y, alpha, beta, cov_scale, base: dict, **vcr_kwargs) -> float:
    from vcr.attach import attach_vcr, detach_vcr

    attach_vcr(model, "blocks", alpha=alpha, beta=beta, cov_scale=cov_scale, **vcr_kwargs)
    try:
        d32 = _param_grads(model, x, y, amp=False) - base["fp32"]
        d16 = _param_grads(model, x, y, amp=True) - base["bf16"]
    finally:
        detach_vcr(model)
    norm2 = d32.dot(d32).clamp_min(1e-300)
    # share: the projection (1 = unbiased); residual: what else the bf16 change holds (noise)
    return float(d16.dot(d32) / norm2), float((d16 - d32).norm() / norm2.sqrt())


def measure(arch: str, batch: int | None, cov_scales, settings, vcr_kwargs) -> dict:
    side, default_batch = ARCHS[arch]
    batch = batch or default_batch
    model = _model(arch, 10)
    x, y = _batch(side, batch, 10)
    base = {
        "fp32": _param_grads(model, x, y, amp=False),
        "bf16": _param_grads(model, x, y, amp=True),
    }
    rows = []
    for cov_scale in cov_scales:
        for alpha, beta in settings:
            t0 = time.perf_counter()
            r = site_ratios(model, x, y, alpha, beta, cov_scale)
            s, resid = survival(model, x, y, alpha, beta, cov_scale, base, **vcr_kwargs)
            rows.append(
                {
                    "cov_scale": cov_scale,
                    "alpha": alpha,
                    "beta": beta,
                    "ratio_min": min(r),
                    "ratio_median": statistics.median(r),
                    "ratio_max": max(r),
                    "survival": s,
                    "residual": resid,
                    "seconds": time.perf_counter() - t0,
                }
            )
            print(
                f"{arch:>22} {side}px b{batch} {cov_scale} a={alpha:<5} b={beta:<5} "
                f"ratio {min(r):.1e}..{max(r):.1e} (median {statistics.median(r):.1e})  "
                f"bf16 survival {s:.3f} (residual {resid:.2f})",
                flush=True,
            )
    return {"arch": arch, "side": side, "batch": batch, "sites": len(r), "rows": rows}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m vcr.bench_precision", description=__doc__)
    p.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    p.add_argument("--batch", type=int, default=None, help="default: per arch (module doc)")
    p.add_argument("--cov-scales", nargs="+", default=["eq2", "alg1"], choices=["eq2", "alg1"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    p.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="VCRLayer keyword arguments"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    kwargs = {}
    if args.set:  # imported only then, so the script also runs against an older vcr (README)
        from vcr.cli import parse_sets

        kwargs = parse_sets(args.set)
    out = [measure(a, args.batch, args.cov_scales, _settings(), kwargs) for a in args.archs]
    if args.json:
        from vcr.io import write_json

        write_json(args.json, {"vcr_kwargs": kwargs, "results": out})
    return out


if __name__ == "__main__":
    main()
