"""The experiment plan: validated config -> every job of the pipeline, as plain data.

The Snakefile and ``rules/*.smk`` only look things up here, so everything the pipeline does is
reachable from tests without Snakemake. One :class:`Plan` per (config, scale) holds

* the pretraining runs (``vcr.records.RunSpec``; folder ``work/<scale>/runs/<relpath>``),
* the evaluation jobs (probe / collapse metrics / classifier record) and their record paths,
* the table specs (CONTRACT section 7) and the files each table's target needs,
* the resources of every job (GPU, CPUs, memory, runtime, nodes/tasks for multi-node training).

The paper's experimental design is written down once, in :data:`TABLE_DESIGNS`, in the paper's own
terms (architectures, datasets, recipes, placements). A *scale* (``mini`` | ``cifar`` | ``paper``)
maps those names to what it runs: ``archs`` and ``datasets`` substitutions (``null`` = "not run at
this scale", the renderer prints "not run"), the sweep, seeds, recipe overrides, probe grouping
and resources. So the three scales share one DAG shape and differ only by this lookup.

Design choices (the paper is silent or ambiguous; each is one config key away):

* Run folders are keyed by the RunSpec only, never by table: Table 5 reuses Table 1's
  ConvNeXt-T runs, and any experiment two tables need is one job.
* The DAG is static: the full sweep grid x seeds is planned and the selection of alpha/beta/lr
  happens at render time on validation metrics (``vcr.select``), never on test.
* Table 1 baselines (``table1_baseline``): ``torchvision_weights`` (the paper: "we abstained from
  pretraining any of the baseline models") imports the released weights through
  ``pretrain.py --init-weights`` with ``epochs=0``; such a baseline has ONE seed (a single
  download; L-BFGS probing is deterministic, repeating it would only copy the number). ``train``
  trains the baseline with the same recipe and all seeds (what the mini/cifar scales do, since
  their architectures have no released weights).
* ResNet-50 recipe (``table1.resnet50_recipe``): ``tv_resnet50_v2`` by default - torchvision's
  DEFAULT weights when the paper was written, and the label smoothing / mixup of that recipe fits
  the paper's low ResNet-50 transfer baseline (Cars 43.6 %); ``tv_resnet50_v1`` is the
  alternative.
* The learning rate is swept only where the paper sweeps it (Tables 2, 3, 6:
  {0.016, 0.008}); Tables 1 and 4 keep the recipe's lr (RunSpec ``lr=0``).
* Job granularity: one pretraining job per RunSpec; one probe job per (run, protocol, group of
  eval datasets), the group being a scale setting (``probe_grouping``: ``per_dataset`` at paper
  scale, ``per_protocol`` at mini, where each process pays seconds of start-up).
"""

from __future__ import annotations

import itertools
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vcr import io
from vcr.errors import ConfigError
from vcr.records import RunSpec, fmt_float

SCALES = ("mini", "cifar", "paper")
TABLES = ("table1", "table2", "table3", "table4", "table5", "table6")
FIGURES = ("figure2",)
TARGETS = TABLES + FIGURES
PROTOCOLS = ("lbfgs", "sgd", "adamw", "finetune")
TARGET_LABELS = ("default", "super", "sub")
TWO_MOONS_METHODS = ("none", "l2", "dropout", "batchnorm", "sd", "vcr")

# The paper's VCR grid (App. A, B.1, B.3) and its lr sweep (App. A, B.3).
PAPER_ALPHAS = (1.28, 0.64, 0.32, 0.16)
PAPER_BETAS = (0.16, 0.08, 0.04, 0.02, 0.01)
PAPER_LRS = (0.016, 0.008)

# Every dataset name the paper's design uses, "<dataset>" or "<dataset>/<target>" for a label
# set other than the default. A scale's ``datasets`` map must name each of them.
PAPER_DATASET_KEYS = (
    "imagenet",
    "imagenet_1pct",
    "cifar100/super",
    "cifar100/sub",
    "living_9/super",
    "living_9/sub",
    "mixed_10/super",
    "mixed_10/sub",
    "mixed_13/super",
    "mixed_13/sub",
    "geirhos_16/super",
    "geirhos_16/sub",
    "big_12/super",
    "big_12/sub",
    "cifar10_lt",
    "cifar100_lt",
    "inat18",
    "places205",
    "food101",
    "cars",
    "aircraft",
    "pets",
    "flowers",
    "dtd",
)
PAPER_ARCHS = ("resnet50", "convnext_tiny", "vit_b_32", "convnext_atto", "resnet32")

# Metric each evaluation dataset reports (Kornblith/SimCLR protocol: mean per-class accuracy for
# Aircraft, Pets, Flowers; top-1 elsewhere). The record's ``metric`` must equal the column's.
MEAN_PER_CLASS = frozenset({"aircraft", "pets", "flowers"})
COLLAPSE_METRICS = ("cdnv", "ncc", "mi")

# Code files of the rendering rules, declared as their inputs: editing the renderer (or the
# paper numbers) reruns the rendering jobs and nothing else. Training/probe code is not tracked
# this way on purpose (a comment edit must not retrain 1,800 runs); rerun those explicitly.
RENDER_CODE = (
    "workflow_scripts/render_table.py",
    "vcr/tables/render.py",
    "vcr/tables/paper_numbers.yaml",
    "vcr/select.py",
    "vcr/tables/paper.py",
)
FIGURE_CODE = ("workflow_scripts/figure2.py", "vcr/figures.py")

# torchvision file names of the released weights (Table 1 baselines), below data_root.
TORCHVISION_WEIGHTS = {
    "tv_resnet50_v1": "weights/resnet50-0676ba61.pth",
    "tv_resnet50_v2": "weights/resnet50-11ad3fa6.pth",
    "tv_convnext_tiny": "weights/convnext_tiny-983f1562.pth",
    "tv_vit_b_32": "weights/vit_b_32-d86f8d99.pth",
}


# ---------------------------------------------------------------------------------------------
# The paper's design, in the paper's names.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    key: str
    label: str
    kind: str  # probe | classifier | collapse
    protocol: str  # lbfgs | sgd | adamw | finetune | classifier | collapse
    eval_key: str | None  # a PAPER_DATASET_KEYS entry probed; None = the run's own dataset
    pretrain_key: str | None = None  # a column-specific pretraining dataset (Tables 2, 3)
    metric: str | None = None  # None = from the eval dataset (top1 / mean_per_class)


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    method: str
    arch: str  # a PAPER_ARCHS name, or "@resnet50" = the configured ResNet-50 recipe's arch
    recipe: str  # a vcr.recipes name; "@resnet50" = config table1.resnet50_recipe
    placement: str
    pretrain_key: str | None = "imagenet"  # None: from the column
    baseline: str = "train"  # train | table1 (the config's table1_baseline applies)


def _transfer_columns(keys):
    labels = {
        "inat18": "iNat18",
        "places205": "Places",
        "food101": "Food",
        "cars": "Cars",
        "aircraft": "Aircraft",
        "pets": "Pets",
        "flowers": "Flowers",
        "dtd": "DTD",
    }
    # iNat18/Places205: the VICReg-paper SGD linear evaluation; the six others: L-BFGS (B.1).
    return tuple(
        Column(k, labels[k], "probe", "sgd" if k in ("inat18", "places205") else "lbfgs", k)
        for k in keys
    )


T1_COLUMNS = _transfer_columns(
    ("inat18", "places205", "food101", "cars", "aircraft", "pets", "flowers", "dtd")
)


def _pair(key, label, method, arch, recipe, vcr_placement, **kw):
    return (
        Row(key, label, method, arch, recipe, "none", **kw),
        Row(f"{key}_vcr", f"{label} (VCR)", method, arch, recipe, vcr_placement, **kw),
    )


@dataclass(frozen=True)
class TableDesign:
    rows: tuple[Row, ...]
    columns: tuple[Column, ...]
    sweep_lr: bool  # the paper sweeps lr {0.016, 0.008} for this table


def table_designs(vcr_placement: str, resnet50_recipe: str) -> dict[str, TableDesign]:
    """The six tables; ``vcr_placement`` is the VCR rows' placement (paper: ``blocks``)."""
    p = vcr_placement
    sup = "supervised"
    t1_rows = (
        *_pair("resnet50", "ResNet-50", sup, "resnet50", resnet50_recipe, p, baseline="table1"),
        *_pair(
            "convnext_tiny", "ConvNeXt-T", sup, "convnext_tiny", "tv_convnext_tiny", p,
            baseline="table1",
        ),
        *_pair("vit_b_32", "ViT-Base-32", sup, "vit_b_32", "tv_vit_b_32", p, baseline="table1"),
    )  # fmt: skip
    t2_cols = tuple(
        Column(k, lab, "probe", "adamw", f"{k}/sub", pretrain_key=f"{k}/super")
        for k, lab in (
            ("cifar100", "CIFAR100"),
            ("living_9", "living_9"),
            ("mixed_10", "mixed_10"),
            ("mixed_13", "mixed_13"),
            ("geirhos_16", "geirhos_16"),
            ("big_12", "big_12"),
        )
    )
    t3_cols = tuple(
        Column(k, lab, "classifier", "classifier", None, pretrain_key=k)
        for k, lab in (("cifar10_lt", "CIFAR10-LT"), ("cifar100_lt", "CIFAR100-LT"))
    )
    t4_cols = (
        Column("in1pct", "IN 1%", "probe", "finetune", "imagenet_1pct"),
        *T1_COLUMNS,
    )
    t5_cols = tuple(
        Column(m, m.upper(), "collapse", "collapse", None, metric=m) for m in COLLAPSE_METRICS
    )
    atto = "atto_in1k_90ep"
    t6_rows = tuple(
        Row(f"vcr{i}", f"ConvNeXt-Atto (VCR{i})", sup, "convnext_atto", atto, pl)
        for i, pl in enumerate(("final", "blocks", "downsample", "blocks+downsample"), start=1)
    )
    return {
        "table1": TableDesign(t1_rows, T1_COLUMNS, sweep_lr=False),
        "table2": TableDesign(
            _pair(
                "convnext", "ConvNeXt", sup, "convnext_atto", "atto_superclass_200ep", p,
                pretrain_key=None,
            ),
            t2_cols,
            sweep_lr=True,
        ),
        "table3": TableDesign(
            _pair("resnet32", "ResNet-32", sup, "resnet32", "resnet32_lt", p, pretrain_key=None),
            t3_cols,
            sweep_lr=True,
        ),
        "table4": TableDesign(
            (
                *_pair("simclr", "SimCLR", "simclr", "resnet50", "simclr_100ep", p),
                *_pair("vicreg", "VICReg", "vicreg", "resnet50", "vicreg_100ep", p),
            ),
            t4_cols,
            sweep_lr=False,
        ),
        # Table 5 measures Table 1's ConvNeXt-T runs (same RunSpecs, so the same jobs).
        "table5": TableDesign(
            _pair(
                "convnext", "ConvNeXt", sup, "convnext_tiny", "tv_convnext_tiny", p,
                baseline="table1",
            ),
            t5_cols,
            sweep_lr=False,
        ),
        "table6": TableDesign(t6_rows, _transfer_columns(
            ("food101", "cars", "aircraft", "pets", "flowers", "dtd")), sweep_lr=True),
    }  # fmt: skip


def expected_paper_jobs() -> dict[str, dict[str, int]]:
    """Jobs each target runs from scratch at paper scale, from the paper's design, written out.

    The DAG (``snakemake -n``) must list exactly these (tests/test_pipeline_dryrun.py), so an
    accidental change to the plan fails loudly. grid = 4 alphas x 5 betas = 20 VCR settings;
    lr {0.016, 0.008} only in Tables 2, 3, 6; 3 seeds; baselines: 1 per (lr, seed), except the
    Table 1 baselines imported from torchvision (1 each). Probes: one job per (run, protocol):
    L-BFGS (6 transfer sets), SGD (iNat18 + Places205), fine-tune (IN 1%), AdamW (Table 2).
    """
    grid, lrs, seeds = len(PAPER_ALPHAS) * len(PAPER_BETAS), len(PAPER_LRS), 3
    t1_vcr = 3 * grid * seeds  # 3 architectures x grid x seeds = 180
    t2 = 6 * (grid * lrs + lrs) * seeds  # 6 datasets x (VCR grid x lr + baseline x lr) x 3 = 756
    t3 = 2 * (grid * lrs + lrs) * seeds  # 2 long-tail datasets = 252
    t4 = 2 * (grid + 1) * seeds  # SimCLR, VICReg x (grid + baseline) x 3 = 126
    t5 = grid * seeds + 1  # Table 1's ConvNeXt-T runs: 60 VCR + 1 imported baseline
    t6 = 4 * grid * lrs * seeds  # 4 placements x grid x lr x 3 = 480
    render = {"table_spec": 1, "render_table": 1}
    return {
        "table1": {
            "prepare_data": 1 + 8,  # ImageNet + 8 transfer sets
            "import_weights": 3,
            "pretrain": t1_vcr,
            "probe": (t1_vcr + 3) * 2,  # L-BFGS group + SGD group per run
            **render,
        },
        "table2": {"prepare_data": 6, "pretrain": t2, "probe": t2, **render},
        "table3": {"prepare_data": 2, "pretrain": t3, "classifier_metric": t3, **render},
        "table4": {
            "prepare_data": 1 + 1 + 8,  # ImageNet, ImageNet-1%, 8 transfer sets
            "pretrain_ssl": t4,
            "probe": t4 * 3,  # fine-tune + L-BFGS group + SGD group
            **render,
        },
        "table5": {
            "prepare_data": 1,
            "import_weights": 1,
            "pretrain": t5 - 1,
            "collapse": t5,
            **render,
        },
        "table6": {"prepare_data": 1 + 6, "pretrain": t6, "probe": t6, **render},
        "figure2": {"two_moons": 6, "plot_figure2": 1},
    }


# ---------------------------------------------------------------------------------------------
# Planned jobs
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pretrain:
    """One pretraining job (one RunSpec)."""

    spec: RunSpec
    manifest: str
    overrides: tuple[str, ...] = ()
    init_weights: str | None = None  # Table 1 baselines imported from torchvision

    @property
    def key(self) -> str:
        return self.spec.relpath()

    @property
    def stage(self) -> str:
        """The rule that runs it."""
        if self.init_weights:
            return "import_weights"
        return "pretrain" if self.spec.method == "supervised" else "pretrain_ssl"


@dataclass(frozen=True)
class Evaluation:
    """One evaluation job on one run; writes ``out`` (or the three collapse records)."""

    kind: str  # probe | classifier | collapse
    run: str  # RunSpec.relpath()
    protocol: str
    datasets: tuple[tuple[str, str], ...]  # (dataset, target) evaluated; () for classifier
    manifests: tuple[str, ...]
    outputs: tuple[str, ...]
    overrides: tuple[str, ...] = ()


@dataclass
class TablePlan:
    name: str
    spec: dict
    runs: list[str] = field(default_factory=list)  # relpaths
    records: list[str] = field(default_factory=list)  # record files the renderer reads


def dataset_ref(key: str) -> tuple[str, str]:
    """``"living_9/super"`` -> ``("living_9", "super")``; no suffix = the default label set."""
    name, _, target = key.partition("/")
    return name, (target or "default")


def eval_file_part(dataset: str, target: str) -> str:
    return dataset if target == "default" else f"{dataset}.{target}"


def metric_of(dataset: str) -> str:
    return "mean_per_class" if dataset in MEAN_PER_CLASS else "top1"


def parse_seeds(text) -> list[int]:
    """``"0-9"`` -> 0..9; ``[0, 1]`` -> [0, 1]."""
    if isinstance(text, list):
        return [int(s) for s in text]
    a, _, b = str(text).partition("-")
    return list(range(int(a), int(b or a) + 1))


def _fmt_set(overrides: dict | None) -> tuple[str, ...]:
    return tuple(f"{k}={_fmt_value(v)}" for k, v in sorted((overrides or {}).items()))


def _fmt_value(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return fmt_float(v)
    if isinstance(v, list | tuple):  # a YAML flow list, as vcr.recipes.coerce parses it
        return "[" + ",".join(_fmt_value(x) for x in v) + "]"
    return str(v)


# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------
RESOURCE_KEYS = (
    "gpu",
    "gpu_model",
    "cpus_per_gpu",
    "cpus_per_task",
    "mem_mb",
    "runtime",
    "nodes",
    "tasks",
    "tasks_per_gpu",
    "mpi",
    "gres",
    "slurm_extra",
    "disk_mb",
)
RESOURCE_DEFAULTS = {
    "gpu": 0,
    "gpu_model": "",
    "cpus_per_gpu": 0,
    "cpus_per_task": 1,
    "mem_mb": 2000,
    "runtime": 30,
    "nodes": 1,
    "tasks": 1,
    # 0 keeps the slurm plugin from turning ``tasks`` into --ntasks-per-gpu for GPU jobs.
    "tasks_per_gpu": 0,
    "mpi": "",
    "gres": "",
    "slurm_extra": "",
    # a constant: Snakemake's built-in default stats every input file of every job (dry run)
    "disk_mb": 1000,
}


class Plan:
    """Everything one scale of the pipeline runs. Build with :func:`build_plan`."""

    def __init__(self, config: dict, scale: str | None = None):
        self.config = config
        self.scale = scale or config.get("scale", "mini")
        if self.scale not in SCALES:
            raise ConfigError(f"scale={self.scale!r}: expected one of {SCALES}")
        scales = config.get("scales") or {}
        if self.scale not in scales:
            raise ConfigError(f"scales.{self.scale}: missing from the config")
        self.sc = scales[self.scale]
        self.work = f"{config.get('work_root', 'work')}/{self.scale}"
        self.results = config.get("results_root", "results")
        self.data_root = str(config.get("data_root", "data"))
        self._check_maps()
        self._res_cache: dict[tuple, dict] = {}
        self.pretrain: dict[str, Pretrain] = {}
        self.evals: dict[str, Evaluation] = {}  # keyed by each output path
        self.datasets: set[str] = set()
        self.tables: dict[str, TablePlan] = {}
        tcfg = config.get("table1", {})
        designs = table_designs(
            config.get("placement", "blocks"), tcfg.get("resnet50_recipe", "tv_resnet50_v2")
        )
        for name in TABLES:
            self.tables[name] = self._plan_table(name, designs[name])
        self.two_moons = self._plan_two_moons()

    # --- config lookups ----------------------------------------------------------------------
    def _check_maps(self):
        dmap = self.sc.get("datasets") or {}
        missing = [k for k in PAPER_DATASET_KEYS if k not in dmap]
        if missing:
            raise ConfigError(
                f"scales.{self.scale}.datasets: missing {missing} (map each to a dataset, "
                "'<dataset>/<target>', or null = not run at this scale)"
            )
        unknown = sorted(set(dmap) - set(PAPER_DATASET_KEYS))
        if unknown:
            raise ConfigError(f"scales.{self.scale}.datasets: unknown key(s) {unknown}")
        amap = self.sc.get("archs") or {}
        missing = [a for a in PAPER_ARCHS if a not in amap]
        if missing:
            raise ConfigError(f"scales.{self.scale}.archs: missing {missing}")
        for proto in self.sc.get("protocols", {}) or {}:
            if proto not in PROTOCOLS:
                raise ConfigError(f"scales.{self.scale}.protocols.{proto}: not in {PROTOCOLS}")

    def map_dataset(self, key: str) -> tuple[str, str] | None:
        """Paper dataset key -> (dataset, target) at this scale, or None (not run)."""
        value = self.sc["datasets"][key]
        if value is None:
            return None
        name, target = dataset_ref(value)
        if target not in TARGET_LABELS:
            raise ConfigError(
                f"scales.{self.scale}.datasets.{key}={value!r}: target {target!r} not in "
                f"{TARGET_LABELS}"
            )
        return name, target

    def map_arch(self, arch: str) -> str:
        return self.sc["archs"][arch]

    def protocol(self, protocol: str) -> str:
        return (self.sc.get("protocols") or {}).get(protocol, protocol)

    def seeds(self) -> list[int]:
        return [int(s) for s in self.sc.get("seeds", [0, 1, 2])]

    def sweep(self, table: str) -> dict:
        sw = dict(self.sc.get("sweep") or {})
        sw.update((self.sc.get("sweep_overrides") or {}).get(table, {}))
        return sw

    def vcr_points(self, table: str) -> list[tuple[float, float]]:
        sw = self.sweep(table)
        if sw.get("pairs"):
            return [(float(a), float(b)) for a, b in sw["pairs"]]
        alphas = sw.get("alpha", PAPER_ALPHAS)
        betas = sw.get("beta", PAPER_BETAS)
        return [(float(a), float(b)) for a in alphas for b in betas]

    def lrs(self, table: str, swept: bool) -> list[float]:
        if not swept:
            return [0.0]
        return [float(x) for x in self.sweep(table).get("lr", PAPER_LRS)]

    def manifest(self, dataset: str) -> str:
        self.datasets.add(dataset)
        return f"{self.work}/data/{dataset}/manifest.json"

    def run_dir(self, relpath: str) -> str:
        return f"{self.work}/runs/{relpath}"

    def recipe_overrides(self, recipe: str) -> tuple[str, ...]:
        ro = self.sc.get("recipe_overrides") or {}
        merged = dict(ro.get("default") or {})
        merged.update(ro.get(recipe) or {})
        return _fmt_set(merged)

    def probe_overrides(self, protocol: str) -> tuple[str, ...]:
        return _fmt_set((self.sc.get("probe_overrides") or {}).get(protocol))

    # --- runs --------------------------------------------------------------------------------
    def _add_run(self, spec: RunSpec, dataset: str, init_weights=None, extra=()) -> str:
        key = spec.relpath()
        if key not in self.pretrain:
            self.pretrain[key] = Pretrain(
                spec,
                self.manifest(dataset),
                self.recipe_overrides(spec.recipe) + tuple(extra),
                init_weights,
            )
        return key

    def _row_runs(self, table: str, row: Row, design: TableDesign, pre: tuple[str, str]):
        """The RunSpecs of one row on one pretraining dataset (sweep x lr x seeds)."""
        dataset, target = pre
        arch = self.map_arch(row.arch)
        base = dict(
            scale=self.scale,
            method=row.method,
            arch=arch,
            dataset=dataset,
            target=target,
            recipe=row.recipe,
            cov_scale=self.config.get("cov_scale", "eq2"),
            delta=float(self.config.get("delta", 0.0)),
        )
        keys = []
        if row.placement == "none":
            mode = self.sc.get("table1_baseline", "train") if row.baseline == "table1" else "train"
            if mode == "torchvision_weights":
                weights = self.config.get("table1", {}).get("weights", {}).get(row.recipe)
                weights = weights or TORCHVISION_WEIGHTS.get(row.recipe)
                if weights is None:
                    raise ConfigError(f"table1.weights.{row.recipe}: no weights file known")
                spec = RunSpec(**base, placement="none", lr=0.0, seed=0)
                keys.append(
                    self._add_run(spec, dataset, f"{self.data_root}/{weights}", ("epochs=0",))
                )
                return keys
            for lr, seed in itertools.product(self.lrs(table, design.sweep_lr), self.seeds()):
                spec = RunSpec(**base, placement="none", lr=lr, seed=seed)
                keys.append(self._add_run(spec, dataset))
            return keys
        for (a, b), lr, seed in itertools.product(
            self.vcr_points(table), self.lrs(table, design.sweep_lr), self.seeds()
        ):
            spec = RunSpec(**base, placement=row.placement, alpha=a, beta=b, lr=lr, seed=seed)
            keys.append(self._add_run(spec, dataset))
        return keys

    # --- evaluations -------------------------------------------------------------------------
    def _add_eval(self, ev: Evaluation) -> None:
        for out in ev.outputs:
            old = self.evals.get(out)
            if old is not None and old != ev:
                raise ConfigError(f"two different evaluations write {out}")
            self.evals[out] = ev

    def _probe_evals(self, run: str, cols: list[tuple[Column, str, tuple[str, str]]]):
        """Probe jobs for one run; cols = (column, protocol, (dataset, target))."""
        grouping_cfg = self.sc.get("probe_grouping", "per_dataset")
        by_proto: dict[str, list[tuple[str, str]]] = {}
        for _, proto, ds in cols:
            lst = by_proto.setdefault(proto, [])
            if ds not in lst:
                lst.append(ds)
        paths = []
        for proto, dss in by_proto.items():
            grouping = (
                grouping_cfg.get(proto, "per_dataset")
                if isinstance(grouping_cfg, dict)
                else grouping_cfg
            )
            groups = [dss] if grouping == "per_protocol" else [[d] for d in dss]
            for group in groups:
                name = "+".join(eval_file_part(*d) for d in group)
                out = f"{self.run_dir(run)}/eval/{proto}-{name}.json"
                self._add_eval(
                    Evaluation(
                        "probe",
                        run,
                        proto,
                        tuple(group),
                        tuple(self.manifest(d) for d, _ in group),
                        (out,),
                        self.probe_overrides(proto),
                    )
                )
                paths.append(out)
        return paths

    def _plan_table(self, name: str, design: TableDesign) -> TablePlan:
        columns, active = [], []
        for col in design.columns:
            pre = self._column_pretrain(design, col)
            ev = None
            if col.kind == "probe":
                ev = self.map_dataset(col.eval_key)
            elif pre is not None:
                ev = pre  # classifier / collapse: measured on the run's own dataset
            ok = pre is not None and ev is not None
            metric = col.metric or (metric_of(ev[0]) if ev else metric_of(col.key))
            column = {
                "key": col.key,
                "label": col.label,
                "eval_dataset": ev[0] if ok else None,
                "metric": metric,
                "protocol": self.protocol(col.protocol) if col.kind == "probe" else col.kind,
            }
            if ok and col.pretrain_key:
                # Tables 2, 3: each column has its own pretraining runs (CONTRACT 7 column match)
                column["match"] = {"dataset": pre[0], "target": pre[1]}
            columns.append(column)
            if ok:
                active.append((col, pre, ev))
        rows, runs, records = [], [], []
        for row in design.rows:
            match = {
                "method": row.method,
                "arch": self.map_arch(row.arch),
                "recipe": row.recipe,
                "placement": row.placement,
            }
            if row.pretrain_key is not None and self.map_dataset(row.pretrain_key):
                match["dataset"] = self.map_dataset(row.pretrain_key)[0]
            rows.append({"key": row.key, "label": row.label, "match": match})
            # group the active columns by pretraining dataset (Tables 2, 3: one per column)
            by_pre: dict[tuple[str, str], list] = {}
            for col, pre, ev in active:
                by_pre.setdefault(pre, []).append((col, ev))
            for pre, cols in by_pre.items():
                for run in self._row_runs(name, row, design, pre):
                    runs.append(run)
                    records += self._run_records(run, cols)
        spec = {"table": name, "scale": self.scale, "rows": rows, "columns": columns}
        return TablePlan(name, spec, _unique(runs), _unique(records))

    def _column_pretrain(self, design: TableDesign, col: Column):
        key = col.pretrain_key or design.rows[0].pretrain_key
        return self.map_dataset(key) if key else None

    def _run_records(self, run: str, cols) -> list[str]:
        out = []
        probes = [(c, self.protocol(c.protocol), ev) for c, ev in cols if c.kind == "probe"]
        if probes:
            out += self._probe_evals(run, probes)
        for col, ev in cols:
            d = self.run_dir(run)
            if col.kind == "classifier":
                path = f"{d}/eval/classifier-{eval_file_part(*ev)}.json"
                self._add_eval(Evaluation("classifier", run, "classifier", (ev,), (), (path,)))
                out.append(path)
            elif col.kind == "collapse":
                outs = tuple(f"{d}/eval/collapse/{m}.json" for m in COLLAPSE_METRICS)
                self._add_eval(
                    Evaluation(
                        "collapse",
                        run,
                        "collapse",
                        (ev,),
                        (self.manifest(ev[0]),),
                        outs,
                        _fmt_set(self.sc.get("collapse_overrides")),
                    )
                )
                out.append(f"{d}/eval/collapse/{col.metric}.json")
        return out

    # --- figure 2 ----------------------------------------------------------------------------
    def _plan_two_moons(self) -> dict[str, str]:
        tm = self.sc.get("two_moons") or {}
        if tm.get("run", True) is False:
            return {}
        return {m: f"{self.work}/two_moons/{m}.pt" for m in tm.get("methods", TWO_MOONS_METHODS)}

    def two_moons_args(self) -> str:
        tm = self.sc.get("two_moons") or {}
        args = f"--seeds {tm.get('seeds', '0-9')}"
        sets = _fmt_set(tm.get("set"))
        if sets:
            args += " --set " + " ".join(shlex.quote(s) for s in sets)
        return args

    # --- outputs -----------------------------------------------------------------------------
    def spec_path(self, table: str) -> str:
        return f"{self.work}/tables/{table}.json"

    def table_outputs(self, table: str) -> list[str]:
        if table == "figure2":
            return self.figure_outputs()
        return [f"{self.results}/tables/{table}.{ext}" for ext in ("md", "tex", "csv")]

    def figure_outputs(self) -> list[str]:
        return [f"{self.results}/figures/figure2.png", f"{self.results}/tables/figure2_margins.csv"]

    def all_targets(self) -> list[str]:
        return [p for t in TARGETS for p in self.table_outputs(t)]

    def write_spec(self, table: str, path: str | None = None, log: str | None = None) -> None:
        path = path or self.spec_path(table)
        io.write_json(path, self.tables[table].spec)
        if log:
            io.write_text(log, f"wrote {path} from vcr.plan (scale {self.scale})\n")

    # --- command-line arguments (the rules paste these) ---------------------------------------
    def pretrain_job(self, key: str) -> Pretrain:
        try:
            return self.pretrain[key]
        except KeyError:
            raise ConfigError(
                f"run {key!r} is not in the {self.scale} plan (check the sweep/seeds config)"
            ) from None

    def pretrain_args(self, key: str) -> str:
        job = self.pretrain_job(key)
        s = job.spec
        parts = [
            f"--scale {s.scale} --method {s.method} --arch {s.arch} --dataset {s.dataset}",
            f"--target {s.target} --recipe {s.recipe} --placement {shlex.quote(s.placement)}",
            f"--alpha {fmt_float(s.alpha)} --beta {fmt_float(s.beta)} --lr {fmt_float(s.lr)}",
            f"--seed {s.seed} --cov-scale {s.cov_scale} --delta {fmt_float(s.delta)}",
            f"--manifest {job.manifest}",
        ]
        if job.init_weights:
            parts.append(f"--init-weights {shlex.quote(job.init_weights)}")
        if job.overrides:
            parts.append("--set " + " ".join(shlex.quote(o) for o in job.overrides))
        return " ".join(parts)

    def eval_job(self, path: str) -> Evaluation:
        try:
            return self.evals[path]
        except KeyError:
            raise ConfigError(f"{path} is not an evaluation in the {self.scale} plan") from None

    def probe_args(self, path: str) -> str:
        ev = self.eval_job(path)
        parts = [
            f"--protocol {ev.protocol}",
            "--eval-dataset " + " ".join(d for d, _ in ev.datasets),
            "--manifest " + " ".join(ev.manifests),
        ]
        sets = list(ev.overrides)
        targets = {t for _, t in ev.datasets}
        if targets != {"default"}:
            if len(targets) > 1:
                raise ConfigError(f"{path}: one probe job cannot mix label sets {targets}")
            sets.append(f"target={targets.pop()}")
        if sets:
            parts.append("--set " + " ".join(shlex.quote(o) for o in sets))
        return " ".join(parts)

    def probe_manifests(self, work: str, run: str, protocol: str, evalname: str) -> tuple:
        return self.eval_job(f"{work}/runs/{run}/eval/{protocol}-{evalname}.json").manifests

    def eval_set_args(self, path: str) -> str:
        ev = self.eval_job(path)
        return ("--set " + " ".join(shlex.quote(o) for o in ev.overrides)) if ev.overrides else ""

    def eval_dataset(self, path: str) -> str:
        return self.eval_job(path).datasets[0][0]

    # --- resources ---------------------------------------------------------------------------
    def resources(self, rule: str, *keys: str) -> dict[str, Any]:
        cache_key = (rule, *keys)
        if cache_key not in self._res_cache:
            self._res_cache[cache_key] = self._resources(rule, *keys)
        return self._res_cache[cache_key]

    def _resources(self, rule: str, *keys: str) -> dict[str, Any]:
        """Resources of a rule; ``keys``: a recipe, dataset or protocol with its own entry.

        Merged: RESOURCE_DEFAULTS <- resources.default <- resources.<rule> <-
        resources.<rule>:<key> for each key in order. Multi-node entries (``nodes`` > 1) get ``mpi: srun`` and one task
        per node, so the rule's shell starts one torchrun per node.
        """
        rc = self.sc.get("resources") or {}
        merged = dict(RESOURCE_DEFAULTS)
        for name in ("default", rule, *(f"{rule}:{k}" for k in keys if k)):
            if name in rc:
                merged.update(rc[name])
        unknown = set(merged) - set(RESOURCE_KEYS)
        if unknown:
            raise ConfigError(f"scales.{self.scale}.resources: unknown key(s) {sorted(unknown)}")
        if merged["gpu"]:
            merged["cpus_per_task"] = 0  # per-GPU CPUs instead (slurm: --cpus-per-gpu)
        if int(merged["nodes"]) > 1:
            merged["mpi"] = merged["mpi"] or "srun"
            merged["tasks"] = int(merged["nodes"])
        return merged

    def rule_resources(self, rule: str) -> dict[str, Any]:
        """The ``resources:`` directive of a rule: ``{name: value or callable(wildcards)}``.

        Only the resources some job of this rule sets at this scale are declared (Snakemake
        evaluates every declared resource of every job, several times; on the 4k-job paper
        DAG that is most of the dry-run time). A callable returns None where a job does not
        use a resource, and Snakemake then leaves it out (no sbatch flag).
        """
        if rule in ("pretrain", "pretrain_ssl"):
            keys = [k for k, j in self.pretrain.items() if j.stage == rule]
            per_job = {k: _effective(self.pretrain_resources(k)) for k in keys}
            return _per_job_resources(per_job, lambda wc: wc.run)
        if rule == "probe":
            per_proto = {p: _effective(self.resources("probe", p)) for p in PROTOCOLS}
            return _per_job_resources(per_proto, lambda wc: wc.protocol)
        return _effective(self.resources(rule))

    def imported_runs_regex(self) -> str:
        """Wildcard constraint of the import_weights rule: exactly the imported runs."""
        import re

        keys = [k for k, j in self.pretrain.items() if j.init_weights]
        return "|".join(re.escape(k) for k in keys) or "(?!)"

    def pretrain_resources(self, key: str) -> dict[str, Any]:
        job = self.pretrain_job(key)
        if job.init_weights:  # importing weights needs no GPU and no time
            return self.resources("import_weights")
        return self.resources(job.stage, job.spec.recipe, job.spec.dataset)

    def launcher(self, res: dict) -> str:
        """How to start a (possibly distributed) trainer for these resources."""
        gpus = int(res["gpu"]) or _gres_count(res["gres"])
        if int(res["nodes"]) > 1:
            per_node = _gres_count(res["gres"]) or max(1, gpus // int(res["nodes"]))
            # One torchrun per node (srun starts one task per node); rendezvous on the first node.
            return (
                f"{res['mpi']} torchrun --nnodes={res['nodes']} --nproc_per_node={per_node} "
                "--rdzv_backend=c10d --rdzv_id=$SLURM_JOB_ID "
                '--rdzv_endpoint="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)'
                ':29500"'
            )
        if gpus > 1:
            return f"torchrun --standalone --nproc_per_node={gpus}"
        return "python"

    # --- counts ------------------------------------------------------------------------------
    def table_jobs(self, table: str) -> dict[str, int]:
        """Jobs a table's target runs from scratch, by rule name (what ``snakemake -n`` lists)."""
        counts: dict[str, int] = {}

        def add(rule, n=1):
            counts[rule] = counts.get(rule, 0) + n

        if table == "figure2":
            add("two_moons", len(self.two_moons))
            add("plot_figure2")
            return counts
        tp = self.tables[table]
        datasets = set()
        for run in tp.runs:
            job = self.pretrain[run]
            add(job.stage)
            datasets.add(job.spec.dataset)
        seen = set()
        for rec in tp.records:
            ev = self.evals[rec]
            if id(ev) in seen:
                continue
            seen.add(id(ev))
            add(
                {"probe": "probe", "classifier": "classifier_metric", "collapse": "collapse"}[
                    ev.kind
                ]
            )
            datasets.update(d for d, _ in ev.datasets if ev.kind != "classifier")
        if datasets:
            add("prepare_data", len(datasets))
        add("table_spec")
        add("render_table")
        return dict(sorted(counts.items()))

    def total_jobs(self) -> int:
        """Jobs of ``all`` from scratch (shared runs counted once), incl. the ``all`` rule."""
        probes = {id(e): e for e in self.evals.values()}
        n = len(self.pretrain) + len(probes) + len(self.datasets)
        n += 2 * len(TABLES)  # table_spec + render_table
        n += len(self.two_moons) + 1 if self.two_moons else 0
        return n + 1

    def summary(self) -> dict:
        return {
            "scale": self.scale,
            "pretrain_runs": len(self.pretrain),
            "evaluation_jobs": len({id(e) for e in self.evals.values()}),
            "datasets": sorted(self.datasets),
            "per_table": {t: self.table_jobs(t) for t in TARGETS},
            "total_jobs": self.total_jobs(),
        }


def _effective(res: dict) -> dict:
    """Drop the resources left at their 'unset' value (no sbatch flag for them)."""
    out = {}
    for k, v in res.items():
        if k in ("mem_mb", "runtime", "disk_mb") or (
            v and RESOURCE_DEFAULTS.get(k) != v and k != "nodes"
        ):
            out[k] = v
    if int(res.get("nodes", 1)) > 1:
        out["nodes"] = res["nodes"]
        out["tasks_per_gpu"] = 0  # else the slurm plugin turns tasks into --ntasks-per-gpu
    return out


def _per_job_resources(per_job: dict[str, dict], key_of) -> dict[str, Any]:
    """Resources that differ between a rule's jobs: a constant where every job agrees (Snakemake
    evaluates a callable resource per job, ~0.1 ms each on the 4k-job DAG), else a callable
    returning the job's value (None: no sbatch flag)."""
    out: dict[str, Any] = {}
    for n in _union(per_job.values()):
        values = {repr(r.get(n)) for r in per_job.values()}
        first = next(iter(per_job.values())).get(n)
        if len(values) == 1 and first is not None:
            out[n] = first
        else:
            out[n] = fast_signature(
                lambda wildcards, n=n: per_job.get(key_of(wildcards), {}).get(n)
            )
    return out


def _union(dicts) -> list[str]:
    names: dict[str, None] = {}
    for d in dicts:
        names.update(dict.fromkeys(d))
    return list(names)


def fast_signature(fn):
    """Give ``fn`` a precomputed ``__signature__``.

    Snakemake inspects the signature of every input/params/resources function once per job
    (to see which of wildcards/input/output/threads/attempt it wants); ``inspect.signature``
    returns a stored ``__signature__`` at once. On the 8k-job paper DAG this halves the dry run.
    """
    import inspect

    fn.__signature__ = inspect.signature(fn)
    return fn


def _gres_count(gres: str) -> int:
    if not gres or not gres.startswith("gpu"):
        return 0
    last = gres.split(":")[-1]
    return int(last) if last.isdigit() else 1


def _unique(items):
    return list(dict.fromkeys(items))


def build_plan(config: dict, scale: str | None = None) -> Plan:
    return Plan(config, scale)


def load_config(path: str | Path = "config.yaml", overrides: dict | None = None) -> dict:
    """Read config.yaml (+ top-level overrides, like ``snakemake --config k=v``)."""
    import yaml

    with open(path, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)
    cfg.update(overrides or {})
    return cfg


def check_results(plan: Plan, targets=TARGETS) -> list[str]:
    """Problems with the rendered outputs of ``targets`` (empty list = all there and complete).

    Tolerates nothing: a missing file, an empty figure, or a cell of a planned column that is
    not "ok" (no records, no number) is a problem. Used by .ci/pipeline_checks.sh after the
    mini pipeline.
    """
    import csv

    problems = []
    for target in targets:
        outs = plan.table_outputs(target)
        missing = [p for p in outs if not Path(p).is_file() or Path(p).stat().st_size == 0]
        if missing:
            problems.append(f"{target}: missing or empty {missing}")
            continue
        if target == "figure2":
            with open(outs[0], "rb") as fh:
                if fh.read(8) != b"\x89PNG\r\n\x1a\n":
                    problems.append(f"{outs[0]}: not a PNG file")
            with open(outs[1], newline="") as fh:
                rows = list(csv.DictReader(fh))
            methods = {r.get("method") for r in rows}
            if methods != set(plan.two_moons):
                problems.append(f"{outs[1]}: methods {sorted(methods)} != {sorted(plan.two_moons)}")
            continue
        planned = {c["key"] for c in plan.tables[target].spec["columns"] if c["eval_dataset"]}
        with open(outs[2], newline="") as fh:
            cells = list(csv.DictReader(fh))
        for key in sorted(planned):
            for row in plan.tables[target].spec["rows"]:
                found = [c for c in cells if c["row"] == row["key"] and c["column"] == key]
                if not found:
                    problems.append(f"{target}: no cell ({row['key']}, {key}) in {outs[2]}")
                    continue
                cell = found[0]
                if cell["status"] != "ok" or not _is_number(cell["mean"]):
                    problems.append(
                        f"{target}: cell ({row['key']}, {key}) is {cell['status']!r} "
                        f"(mean {cell['mean']!r})"
                    )
        if not planned:
            problems.append(f"{target}: no column of this table is planned at {plan.scale}")
    return problems


def _is_number(text) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return text not in ("", "nan")


def main(argv=None) -> int:
    """``python -m vcr.plan [--scale S] [--check-results]``: job counts as JSON, or check the
    rendered tables/figure of the scale (exit 1 and a list of problems when incomplete)."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--config", default="config.yaml")
    ap.add_argument("--configfile", nargs="*", default=[], help="deep-merged over --config")
    ap.add_argument("--scale", default=None)
    ap.add_argument("--check-results", action="store_true")
    ap.add_argument("--targets", nargs="*", default=list(TARGETS))
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    for extra in args.configfile:
        cfg = deep_update(cfg, load_config(extra))
    plan = build_plan(cfg, args.scale)
    if args.check_results:
        problems = check_results(plan, args.targets)
        for p in problems:
            print("PROBLEM:", p)
        print(
            f"checked {len(args.targets)} target(s) at scale {plan.scale}: "
            f"{len(problems)} problem(s)"
        )
        return 1 if problems else 0
    print(json.dumps(plan.summary(), indent=2))
    return 0


def deep_update(base: dict, new: dict) -> dict:
    """Merge ``new`` into a copy of ``base`` like Snakemake merges --configfile."""
    out = dict(base)
    for k, v in new.items():
        out[k] = (
            deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


if __name__ == "__main__":
    raise SystemExit(main())
