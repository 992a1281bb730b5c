"""Training recipes as data: one frozen dataclass per named recipe, overridable by key.

A recipe holds everything the trainer needs besides the run's own parameters (``RunSpec``:
arch, dataset, placement, alpha, beta, lr, seed). ``get_recipe(name, **overrides)`` returns a
copy with overrides applied; an unknown key raises ``ConfigError`` naming it. The CPU "mini"
scale runs the paper's recipes shrunk by overrides, e.g. ``epochs=4 batch_size=128
warmup_epochs=1``.

Conventions (the paper is silent on most; each choice is stated where the recipe is defined):
- ``batch_size`` is the GLOBAL batch; each of W processes gets ``batch_size // W``.
- ``lr`` is the lr at ``batch_size`` unless ``lr_scaling="linear"``, where it is a base lr per
  256 images (SimCLR/VICReg: ``lr * batch_size / 256``). The trainer logs the resolved value.
- Schedules are evaluated per optimizer step (warmup + main), which the paper's SSL sources and
  App. A use; ``schedule_unit="epoch"`` steps them per epoch as torchvision's reference does.
- Weight decay groups follow torchvision's ``set_weight_decay``: ``norm_weight_decay``,
  ``bias_weight_decay`` and ``embedding_weight_decay`` (None = the main ``weight_decay``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vcr.cli import with_overrides
from vcr.errors import ConfigError
from vcr.names import PRETRAIN_METHODS, VCR_MATMULS, VCR_ROUNDINGS

OPTIMIZERS = ("sgd", "sgd_nesterov", "adamw", "adam", "lars", "rmsprop")
SCHEDULERS = ("cosine", "step", "constant")
TRANSFORMS = ("auto", "train_imagenet", "train_cifar", "ssl", "tv_preset", "none")
METHODS = (*PRETRAIN_METHODS, "two_moons")


@dataclass(frozen=True)
class Recipe:
    name: str
    method: str = "supervised"  # supervised | simclr | vicreg | two_moons
    source: str = ""  # where the values come from (for run.json)
    # --- length and batch
    epochs: int = 90
    batch_size: int = 256  # global batch
    # processes (GPUs) the global batch is split over, as the recipe's source ran it: the
    # per-GPU batch (BN statistics, VCR's per-GPU statistics) is then a recipe fact, checked
    # at start on GPU; 0 = not fixed (CPU, tests)
    world_size: int = 0
    # --- optimizer
    optimizer: str = "sgd"
    lr: float = 0.1
    lr_scaling: str = "none"  # none | linear (lr is per 256 images)
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-4
    norm_weight_decay: float | None = None  # None = weight_decay
    bias_weight_decay: float | None = None
    embedding_weight_decay: float | None = None  # ViT class token / position embedding
    lars_eta: float = 0.001
    lars_exclude_1d: bool = True  # LARS: no wd and no trust ratio on biases and norms
    clip_grad_norm: float = 0.0  # 0 = off
    # --- schedule
    lr_scheduler: str = "cosine"  # cosine | step | constant
    schedule_unit: str = "step"  # step | epoch
    lr_min: float = 0.0  # absolute floor of the cosine
    lr_min_ratio: float = 0.0  # floor as a fraction of the peak lr (VICReg: 0.001)
    lr_step_size: int = 30
    lr_gamma: float = 0.1
    warmup_epochs: float = 0
    warmup_method: str = "linear"  # linear | constant
    warmup_decay: float = 0.0  # start factor of the warmup (torchvision: 0.01)
    # --- loss-side regularisation
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    # --- augmentation
    train_transform: str = "auto"  # see TRANSFORMS; auto = train_cifar below 64 px else imagenet
    auto_augment: str = ""  # "" | ra | ta_wide | augmix | imagenet
    ra_magnitude: int = 9
    augmix_severity: int = 3
    random_erase: float = 0.0
    # repeated augmentation (torchvision --ra-sampler --ra-reps): every image of an epoch's
    # order appears ra_reps times in a row, each copy with its own augmentation; 0 = off
    ra_reps: int = 0
    # the two-view SSL augmentation (vcr.data.transforms.SSL_AUGMENTS): simclr | vicreg
    ssl_augment: str = "vicreg"
    interpolation: str = "bilinear"
    train_crop_size: int = 224
    val_resize_size: int = 256
    val_crop_size: int = 224
    # auto: the crop sizes above for datasets of >= 64 px, the native size for small images
    # (mini/CIFAR at 32 px: upsampling to 224 would only cost time); recipe | native force it.
    resolution: str = "auto"
    # --- EMA (torchvision reference semantics)
    model_ema: bool = False
    model_ema_steps: int = 32
    model_ema_decay: float = 0.99998
    ema_for_final: bool = True  # evaluate and save the EMA weights when EMA is on
    # --- model
    model_kwargs: dict = field(default_factory=dict)
    # --- SSL
    temperature: float = 0.1
    projector_hidden: int = 2048
    projector_out: int = 256
    projector_dims: tuple[int, ...] = (8192, 8192)
    vicreg_coeffs: tuple[float, float, float] = (25.0, 25.0, 1.0)  # sim, std, cov
    # --- VCR (the run's alpha/beta/placement come from the RunSpec)
    vcr_eps: float = 1e-4
    vcr_global_stats: bool = False  # DDP: local per-GPU stats (paper's Alg. 1 per GPU)
    # bf16 outputs: stochastic rounding of task + VCR gradient (keeps a VCR part below bf16's
    # resolution in expectation) | nearest (erases it); see vcr.regularizer.VCRLayer
    vcr_rounding: str = "stochastic"
    vcr_matmul: str = "fp32"  # fp32 | bf16 (tensor-core backward products, fp32 accumulation)
    vcr_max_samples: int = 0  # approximate VCR on this many random rows per output; 0 = exact
    # --- mechanics
    amp_dtype: str = "bf16"  # autocast dtype on GPU: bf16 | fp16 (with a GradScaler) | none
    channels_last: bool = True  # on GPU
    # also on CPU (oneDNN's NHWC convolutions: the mini ResNet trains ~1.9x faster on 1 core;
    # ConvNeXt/ViT unchanged). Off by default: on CPU the bits then differ from NCHW runs.
    channels_last_cpu: bool = False
    # bf16 autocast on CPU too (amp_dtype bf16; CPU autocast is real): the rehearsal scale runs
    # the GPU recipes' mixed-precision path on gloo processes. Off by default.
    amp_cpu: bool = False
    sync_bn: bool = False  # SyncBatchNorm under multi-GPU DDP (SSL recipes: on)
    num_workers: int = 0
    fast_array_loader: bool = True  # batched augmentation for in-memory uint8 arrays (mini)
    keep_checkpoint: bool = False  # delete checkpoint.pt once backbone.pt is written
    eval_every: int = 1  # evaluate on val every k epochs (and always after the last)
    eval_batch_size: int = 0  # 0 = batch_size per process
    print_freq: int = 50
    max_steps_per_epoch: int = 0  # 0 = whole epoch (smoke tests)
    inject_nan_step: int = -1  # fault-injection test hook: make the loss NaN at this global step
    inject_error_step: int = -1  # test hook: raise RuntimeError at this global step
    inject_fault_rank: int = -1  # the rank the two hooks above act on (-1: every rank)
    slow_step_s: float = 0.0  # test hook: sleep after each step (a run longer than its time limit)
    # --- two-moons only
    hidden: int = 500
    hidden_layers: int = 2
    dropout: float = 0.0
    batchnorm: bool = False
    sd_coef: float = 0.0
    two_moons_margin: float = 0.1
    two_moons_n: int = 300
    two_moons_vcr: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self):
        checks = {
            "method": METHODS,
            "optimizer": OPTIMIZERS,
            "lr_scheduler": SCHEDULERS,
            "train_transform": TRANSFORMS,
            "schedule_unit": ("step", "epoch"),
            "lr_scaling": ("none", "linear"),
            "warmup_method": ("linear", "constant"),
            "resolution": ("auto", "recipe", "native"),
            "auto_augment": ("", "ra", "ta_wide", "augmix", "imagenet"),
            "amp_dtype": ("bf16", "fp16", "none"),
            "vcr_rounding": VCR_ROUNDINGS,
            "vcr_matmul": VCR_MATMULS,
            "ssl_augment": ("simclr", "vicreg"),
        }
        for key, allowed in checks.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(
                    f"recipe {self.name}: {key}={getattr(self, key)!r}, expected one of {allowed}"
                )
        if self.epochs < 0 or self.batch_size <= 0:
            raise ConfigError(f"recipe {self.name}: epochs >= 0 and batch_size > 0 required")
        if self.ra_reps < 0 or self.world_size < 0:
            raise ConfigError(f"recipe {self.name}: ra_reps >= 0 and world_size >= 0 required")
        if self.world_size and self.batch_size % self.world_size:
            raise ConfigError(
                f"recipe {self.name}: batch_size={self.batch_size} is not divisible by "
                f"world_size={self.world_size}"
            )
        if self.warmup_epochs > self.epochs and self.epochs > 0:
            raise ConfigError(
                f"recipe {self.name}: warmup_epochs={self.warmup_epochs} > epochs={self.epochs}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# The named recipes. Values are the paper's / sources' (PAPER_PROTOCOLS §0.1, §3.2, §6, §7, §9).
# ---------------------------------------------------------------------------------------------
RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    RECIPES[recipe.name] = recipe
    return recipe


# torchvision references/classification (§3.2). Batch = global batch of the released weights,
# world_size = the GPUs they were trained on (8 x 32, 8 x 128, 16 x 64, 16 x 256), so the per-GPU
# batch is torchvision's. Repeated augmentation (--ra-sampler) as torchvision's RASampler, made
# a pure function of (seed, epoch) (vcr.data.loading.RepeatedAugmentationSampler): reps 4 for
# ResNet-50 V2 and ConvNeXt-T (their commands), 3 (the default) for ViT-B/32, none for V1.
# torchvision's ResNet does not zero-init the last BN of a block (zero_init_residual=False);
# timm does (zero_init_last=True): the ResNet recipes turn it off.
_TV_RESNET = {"zero_init_last": False}  # copied per recipe below
register(
    Recipe(
        name="tv_resnet50_v1",
        source="torchvision ResNet50_Weights.IMAGENET1K_V1: SGD 0.1, bs 8 x 32, 90 ep, step 30/0.1",
        epochs=90,
        batch_size=256,
        world_size=8,
        model_kwargs=dict(_TV_RESNET),
        optimizer="sgd",
        lr=0.1,
        weight_decay=1e-4,
        lr_scheduler="step",
        schedule_unit="epoch",
        lr_step_size=30,
        lr_gamma=0.1,
        train_transform="tv_preset",
        train_crop_size=224,
        val_resize_size=256,
        val_crop_size=224,
    )
)
# What the three newer torchvision recipes share (their training commands in torchvision's
# references/classification README): cosine per epoch, the preset transforms with mixup 0.2 /
# cutmix 1.0, EMA of the weights, 224-px evaluation crops.
_TV = dict(
    lr_scheduler="cosine",
    schedule_unit="epoch",
    train_transform="tv_preset",
    mixup_alpha=0.2,
    cutmix_alpha=1.0,
    model_ema=True,
    val_crop_size=224,
)
# ... and what ResNet-50 V2 and ConvNeXt-T add: 600 epochs at batch 1024, TrivialAugment, random
# erasing, label smoothing 0.1, 176-px training crops (FixRes: 232 -> 224 evaluation).
_TV_600 = dict(
    **_TV,
    epochs=600,
    batch_size=1024,
    norm_weight_decay=0.0,
    warmup_epochs=5,
    warmup_decay=0.01,
    label_smoothing=0.1,
    auto_augment="ta_wide",
    random_erase=0.1,
    ra_reps=4,
    train_crop_size=176,
    val_resize_size=232,
)
register(
    Recipe(
        name="tv_resnet50_v2",
        source="torchvision ResNet50_Weights.IMAGENET1K_V2 recipe (8 GPUs x 128)",
        world_size=8,
        model_kwargs=dict(_TV_RESNET),
        optimizer="sgd",
        lr=0.5,
        weight_decay=2e-5,
        warmup_method="linear",
        **_TV_600,
    )
)
register(
    Recipe(
        name="tv_convnext_tiny",
        source="torchvision ConvNeXt_Tiny_Weights.IMAGENET1K_V1 recipe (2 nodes x 8 GPUs x 64)",
        world_size=16,
        optimizer="adamw",
        lr=1e-3,
        weight_decay=0.05,
        model_kwargs={"drop_path_rate": 0.1},  # torchvision stochastic_depth_prob default
        **_TV_600,
    )
)
register(
    Recipe(
        name="tv_vit_b_32",
        source="torchvision ViT_B_32_Weights.IMAGENET1K_V1 recipe (2 nodes x 8 GPUs x 256)",
        epochs=300,
        batch_size=4096,
        world_size=16,
        ra_reps=3,
        optimizer="adamw",
        lr=3e-3,
        weight_decay=0.3,
        warmup_epochs=30,
        warmup_decay=0.033,
        label_smoothing=0.11,
        auto_augment="imagenet",
        clip_grad_norm=1.0,
        train_crop_size=224,
        val_resize_size=256,
        **_TV,
    )
)

# App. A (ConvNeXt-Atto on ImageNet). The paper names no optimizer: AdamW is our choice (the
# ConvNeXt family's optimizer, and the one that makes wd 0.05 meaningful). "Norm layers
# excluded" from wd: we also exclude biases (timm/ConvNeXt convention; bias_weight_decay=None
# puts them back). Warmup starts from 0 (warmup_decay=0). Augmentation is not stated: plain
# RandomResizedCrop + flip, no label smoothing/mixup/EMA ("train_imagenet"). The paper gives no
# GPU count for these runs: 8 (one node, 512 per GPU) is ours; Table 2's CIFAR-100 column runs
# on one GPU (config recipe_overrides "atto_superclass_200ep:cifar100").
_ATTO = dict(
    epochs=90,
    batch_size=4096,
    world_size=8,
    optimizer="adamw",
    lr=0.016,
    weight_decay=0.05,
    norm_weight_decay=0.0,
    bias_weight_decay=0.0,
    lr_scheduler="cosine",
    warmup_epochs=5,
    train_transform="auto",
)
register(Recipe(name="atto_in1k_90ep", source="VCR App. A; AdamW/augmentation ours", **_ATTO))
register(
    Recipe(
        name="atto_superclass_200ep",
        source="VCR App. B.2 (= App. A for 200 epochs); AdamW/augmentation ours",
        **{**_ATTO, "epochs": 200},
    )
)

# Table 3 (App. B.3): ResNet-32 on CIFAR-LT. "Adam" with wd 0.05: with plain Adam (L2 added to
# the gradient) a wd of 0.05 is divided by the adaptive denominator and dominates small
# gradients; we take AdamW (decoupled), under which 0.05 is the usual value. optimizer=adam
# switches to Adam+L2. Augmentation not stated: pad-4 crop + flip (the LDAM-DRW standard).
register(
    Recipe(
        name="resnet32_lt",
        source="VCR App. B.3; AdamW (switch: optimizer=adam), pad-4 crop + flip ours",
        epochs=100,
        batch_size=256,
        world_size=1,
        optimizer="adamw",
        lr=0.016,
        weight_decay=0.05,
        norm_weight_decay=0.0,
        bias_weight_decay=0.0,
        lr_scheduler="cosine",
        warmup_epochs=10,
        train_transform="train_cifar",
    )
)

# Table 4 (App. B.4): SimCLR / VICReg ResNet-50, LARS, 100 epochs, batch 4096, 5-epoch warmup
# as VCR says (SimCLR/VICReg themselves use 10: warmup_epochs=10). lr = base * batch / 256.
# Not given by VCR, taken from the sources: wd 1e-6, LARS eta 0.001 with biases/norms excluded,
# SimCLR temperature 0.1 (best at batch 4096, SimCLR Table 5), VICReg 25/25/1 and lr floor
# 0.001 x peak. Projectors as VCR describes them (SimCLR 2048-2048-256, VICReg 2048-8192-8192,
# BN after every layer); see vcr/ssl.py. Augmentation per method ("we closely follow the original
# setting in [10] for SimCLR and [2] for VICReg", "applied symmetrically"): SimCLR's own (colour
# jitter strength 1: (0.8, 0.8, 0.8, 0.2), no solarize), VICReg's App. B.1 (jitter (0.4, 0.4,
# 0.2, 0.1), solarize p=0.1 on both views); ssl_augment=vicreg gives SimCLR VCR's "same
# augmentation for both methods". 16 GPUs (256 per GPU) is ours: VCR gives no layout.
_SSL = dict(
    epochs=100,
    batch_size=4096,
    world_size=16,
    optimizer="lars",
    lr_scaling="linear",
    weight_decay=1e-6,
    lars_eta=0.001,
    lr_scheduler="cosine",
    warmup_epochs=5,
    train_transform="ssl",
    sync_bn=True,
)
register(
    Recipe(
        name="simclr_100ep",
        method="simclr",
        source="VCR App. B.4 + SimCLR v1 (temperature 0.1, wd 1e-6, LARS)",
        lr=0.3,
        temperature=0.1,
        projector_hidden=2048,
        projector_out=256,
        ssl_augment="simclr",
        **_SSL,
    )
)
register(
    Recipe(
        name="vicreg_100ep",
        method="vicreg",
        source="VCR App. B.4 + facebookresearch/vicreg (25/25/1, wd 1e-6, LARS)",
        lr=0.2,
        lr_min_ratio=0.001,
        projector_dims=(8192, 8192),
        vicreg_coeffs=(25.0, 25.0, 1.0),
        ssl_augment="vicreg",
        **_SSL,
    )
)

# Fig. 2 two-moons (Gradient Starvation code, §7): full batch, softplus loss on ±1 labels,
# SGD lr 1e-2 momentum 0.9, 10,000 epochs. VCR's "three-layer network" read as three Linear
# layers 2 -> 500 -> 500 -> 1 (hidden_layers=2); GS's own network is hidden_layers=1. Baseline
# strengths are GS's: wd 0.01, dropout 0.7, BN, SD 0.003 (set per method in vcr/two_moons.py).
# VCR alpha/beta are not given by the paper: ours in two_moons_vcr (see vcr/two_moons.py).
register(
    Recipe(
        name="two_moons",
        method="two_moons",
        source="Gradient Starvation moon_fig_3.py; VCR alpha/beta ours",
        epochs=10_000,
        batch_size=300,
        optimizer="sgd",
        lr=1e-2,
        momentum=0.9,
        weight_decay=0.0,
        lr_scheduler="constant",
        train_transform="none",
        hidden=500,
        hidden_layers=2,
        two_moons_margin=0.1,
        two_moons_n=300,
        two_moons_vcr=(1.28, 0.16),
    )
)


# The eq. 2 / Algorithm 1 study (`snakemake study`, README "The eq. 2 / Algorithm 1 study"):
# the mini scale's CPU recipe (config.yaml scales.mini.recipe_overrides.default) plus a warm-up,
# under a name of its own, so the study's run folders never meet the tables' runs. Its length is set per
# architecture in config.yaml study.recipe_overrides, chosen where the baseline's validation
# accuracy has plateaued (python -m vcr.study_epochs; results/study/epochs.csv).
register(
    Recipe(
        name="mini_study",
        source="eq. 2 vs Algorithm 1 study: the mini CPU recipe (AdamW 3e-3, batch 128, no "
        "augmentation, cosine) + 2 warm-up epochs, length per architecture from the baseline's "
        "plateau",
        epochs=30,  # config.yaml study.recipe_overrides sets each architecture's length
        batch_size=128,
        optimizer="adamw",
        lr=3e-3,
        weight_decay=0.05,
        lr_scheduler="cosine",
        # 2 warm-up epochs: without them the mini ViT stayed at chance (27 % val on 4 shapes)
        # for one seed in three after 10 and 15 epochs
        warmup_epochs=2,
        train_transform="none",
        eval_every=1000,  # one evaluation, after the last epoch
        channels_last_cpu=True,
    )
)


# ---------------------------------------------------------------------------------------------
def recipe_names() -> list[str]:
    return sorted(RECIPES)


def get_recipe(name: str, **overrides) -> Recipe:
    """The named recipe with ``overrides`` applied (typed values, or ``--set`` texts, parsed to
    each field's type by ``vcr.cli.coerce``); an unknown key raises ``ConfigError``."""
    if name not in RECIPES:
        raise ConfigError(f"recipe={name!r}: unknown recipe, expected one of {recipe_names()}")
    if "name" in overrides:
        raise ConfigError(f"recipe {name}: the override key 'name' cannot be changed")
    return with_overrides(RECIPES[name], overrides, where=f"recipe {name}")
