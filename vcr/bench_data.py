"""How many CPU cores does one GPU need to be fed ImageNet? (issue 14)

    python -m vcr.bench_data                    # 200 generated JPEGs, 1 core
    python -m vcr.bench_data --images 400 --gpu-rate 3000 --cpus-per-gpu 8

Generates JPEGs of ImageNet's typical size (~400 x 350, quality 90, smooth structure plus
texture, so their file size is ImageNet-like, ~60-120 KB) and measures images/s on ONE core
(one thread, no workers) of the training input pipeline, decode included:

* ``pil + v2 train_imagenet``: PIL decode, torchvision v2 RandomResizedCrop(224) + flip +
  ToDtype + Normalize (the ConvNeXt-Atto / basic recipe);
* ``pil + tv_preset (v2 recipe)``: PIL decode + torchvision's ClassificationPresetTrain of the
  ResNet-50 V2 recipe (176-px crop, TrivialAugmentWide, random erasing);
* ``decode_jpeg (cpu) + v2``: ``torchvision.io.decode_jpeg`` on the CPU, then the same v2 ops
  on uint8 tensors;
* ``decode_jpeg (cuda)``: batched decode on the GPU (when a GPU is lent), then the crops on the
  GPU: the host only reads the files.

From the per-core rate it prints how many cores a GPU consuming ``--gpu-rate`` images/s needs
(an H100 trains ResNet-50 at ~3,000 img/s in bf16), against ``--cpus-per-gpu``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_jpegs(folder: Path, n: int, seed: int = 0) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    yy, xx = np.mgrid[0:350, 0:400].astype(np.float32)
    for i in range(n):
        img = np.zeros((350, 400, 3), np.float32)
        for c in range(3):
            for _ in range(4):  # smooth structure: a few random waves
                fx, fy, ph = rng.uniform(0.005, 0.05, 2).tolist() + [rng.uniform(0, 6.3)]
                img[..., c] += np.sin(fx * xx + fy * yy + ph) * rng.uniform(20, 60)
        img += rng.normal(0, 12, img.shape)  # texture: what makes photos hard to compress
        img = np.clip(img + 128, 0, 255).astype(np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(img).save(path, quality=90)
        paths.append(path)
    return paths


def _rate(fn, paths, repeat: int = 2) -> float:
    best = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        for p in paths:
            fn(p)
        best = max(best, len(paths) / (time.perf_counter() - t0))
    return best


def pipelines(device_cuda: bool) -> dict:
    from PIL import Image
    from torchvision.io import ImageReadMode, decode_jpeg, read_file
    from torchvision.transforms import v2

    from vcr.data.transforms import tv_preset_train
    from vcr.recipes import get_recipe

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    basic = v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(224, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ]
    )
    preset = tv_preset_train(get_recipe("tv_resnet50_v2"), 176, mean, std)

    def pil(transform):
        def run(path):
            with Image.open(path) as im:
                return transform(im.convert("RGB"))

        return run

    def tv_decode(path):
        return basic(decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB))

    out = {
        "pil + v2 train_imagenet": pil(basic),
        "pil + tv_preset (v2 recipe)": pil(preset),
        "decode_jpeg (cpu) + v2": tv_decode,
    }
    if device_cuda:

        def gpu(path):
            data = read_file(str(path))
            img = decode_jpeg(data, device="cuda")
            return basic(img)

        out["decode_jpeg (cuda) + v2 on the GPU"] = gpu
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m vcr.bench_data", description=__doc__)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--gpu-rate", type=float, default=3000.0, help="images/s one GPU consumes")
    p.add_argument("--cpus-per-gpu", type=int, default=8)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), args.images)
        sizes = [os.path.getsize(x) for x in paths]
        print(
            f"{len(paths)} JPEGs 400x350 q90, median {statistics.median(sizes) / 1024:.0f} KB; "
            f"1 core, 1 thread; a GPU at {args.gpu_rate:.0f} img/s, {args.cpus_per_gpu} CPUs per GPU"
        )
        res = {}
        for name, fn in pipelines(cuda).items():
            fn(paths[0])  # warm-up (lazy imports, kernels)
            rate = _rate(fn, paths)
            cores = args.gpu_rate / rate
            res[name] = {"img_per_s_per_core": rate, "cores_per_gpu": cores}
            enough = "enough" if cores <= args.cpus_per_gpu else "NOT enough"
            print(
                f"  {name:<38} {rate:7.1f} img/s per core -> {cores:5.1f} cores per GPU "
                f"({enough} with cpus_per_gpu {args.cpus_per_gpu})"
            )
        if not cuda:
            print("  decode_jpeg (cuda): no GPU lent to this machine: not measured")
    if args.json:
        from vcr.io import write_json

        write_json(args.json, {"setup": vars(args), "results": res, "cuda": cuda})
    return res


if __name__ == "__main__":
    main()
