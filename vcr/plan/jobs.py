"""The experiment plan: validated config + the paper's design -> every job, as plain data.

The Snakefile and ``rules/*.smk`` only look things up here, so everything the pipeline does is
reachable from tests without Snakemake. One :class:`Plan` per (config, scale) holds

* the pretraining runs (``vcr.records.RunSpec``; folder ``work/<scale>/runs/<relpath>``),
* the evaluation jobs (probe / collapse metrics / classifier record) and their record paths,
* the table specs (CONTRACT section 7) and the files each table's target needs,
* the resources of every job (``vcr.plan.resources``).

The design (``vcr/design.yaml``, read by ``vcr.plan.design``) is in the paper's names; a *scale*
(``mini`` | ``cifar`` | ``paper``) maps those names to what it runs: ``archs`` and ``datasets``
substitutions (``null`` = "not run at this scale", the renderer prints "not run"), the sweep,
seeds, recipe overrides, probe grouping and resources. So the three scales share one DAG shape
and differ only by this lookup.

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
  their architectures have no released weights). ``both`` (the paper scale) plans the two as
  rows of their own (the paper's number beside each): torchvision's weights are the paper's
  comparison, the trained baseline the like-for-like control of the VCR rows (same code,
  recipe, sampler, seeds and selection machinery; only VCR differs).
* VCR gradient convention (``cov_scale``): one for all runs, except the tables listed in
  ``scales.<s>.cov_scales``, whose VCR rows run under each listed convention, one row each (the
  cifar scale plans eq. 2 and Algorithm 1 side by side for Tables 2 and 3).
* ResNet-50 recipe (``table1.resnet50_recipe``): ``tv_resnet50_v2`` by default - torchvision's
  DEFAULT weights when the paper was written, and the label smoothing / mixup of that recipe fits
  the paper's low ResNet-50 transfer baseline (Cars 43.6 %); ``tv_resnet50_v1`` is the
  alternative.
* The learning rate is swept only where the paper sweeps it (``sweep_lr`` in the design: Tables
  2, 3, 6); Tables 1 and 4 keep the recipe's lr (RunSpec ``lr=0``).
* Job granularity: one pretraining job per RunSpec; one probe job per (run, protocol, group of
  eval datasets), the group being a scale setting (``probe_grouping``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from vcr import io
from vcr.errors import ConfigError
from vcr.names import (
    COLLAPSE_METRICS,
    LEDGERS,
    MEAN_PER_CLASS_DATASETS,
    PROBE_PROTOCOLS,
    REPORT_FIGURES,
    SCALES,
    SELECTION_RULES,
    TABLES,
    TARGET_LABELS,
    TARGETS,
)
from vcr.plan import counts
from vcr.plan import resources as R
from vcr.plan.design import Column, Row, TableDesign, load_design
from vcr.plan.layout import check_world_sizes
from vcr.plan.rows import row_variants
from vcr.records import RunSpec, fmt_float


# ---------------------------------------------------------------------------------------------
# Planned jobs
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pretrain:
    """One pretraining job (one RunSpec)."""

    spec: RunSpec
    manifest: str
    overrides: tuple[str, ...] = ()  # recipe overrides, "key=value" (pretrain.py --set)
    init_weights: str | None = None  # Table 1 baselines imported from torchvision

    @property
    def key(self) -> str:
        return self.spec.relpath()

    @property
    def resource_kind(self) -> str:
        """``import_weights`` for an imported baseline (no GPU, no time), else ``pretrain``."""
        return "import_weights" if self.init_weights else "pretrain"


@dataclass(frozen=True)
class Evaluation:
    """One evaluation job on one run; writes ``outputs`` (the three collapse records, or one)."""

    kind: str  # probe | classifier | collapse
    run: str  # RunSpec.relpath()
    protocol: str
    datasets: tuple[tuple[str, str], ...]  # (dataset, target) evaluated; () for classifier
    manifests: tuple[str, ...]
    outputs: tuple[str, ...]
    overrides: tuple[str, ...] = ()  # "key=value" (--set)

    @property
    def settings(self) -> list[str]:
        """``--set`` items: the overrides, plus the label set when it is not the default."""
        sets = list(self.overrides)
        targets = {t for _, t in self.datasets}
        if self.kind == "probe" and targets != {"default"}:
            if len(targets) > 1:
                raise ConfigError(f"{self.outputs[0]}: one probe job cannot mix label sets")
            sets.append(f"target={targets.pop()}")
        return sets


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
    return "mean_per_class" if dataset in MEAN_PER_CLASS_DATASETS else "top1"


def format_sets(overrides: dict | None) -> tuple[str, ...]:
    """``{"epochs": 3, "lr": 0.003}`` -> ``("epochs=3", "lr=0.003")`` (sorted by key)."""
    return tuple(f"{k}={_fmt_value(v)}" for k, v in sorted((overrides or {}).items()))


def _fmt_value(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return fmt_float(v)
    if isinstance(v, list | tuple):  # a YAML flow list, as vcr.cli.parse_sets parses it
        return "[" + ",".join(_fmt_value(x) for x in v) + "]"
    return str(v)


# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------
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
        self._probes_by_run: dict | None = None  # Plan.then_probe's index, built on first use
        self.work = f"{config.get('work_root', 'work')}/{self.scale}"
        self.results = config.get("results_root", "results")
        self.data_root = str(config.get("data_root", "data"))
        # the VCR gradient convention of this scale's runs (scales.<s>.cov_scale, else the
        # top-level cov_scale); tables in scales.<s>.cov_scales run several (vcr.plan.rows)
        self.cov_scale = self.sc.get("cov_scale", config.get("cov_scale", "eq2"))
        self.design = load_design()
        self._check_maps()
        self.resources = R.ScaleResources(self.scale, self.sc.get("resources"))
        self.pretrain: dict[str, Pretrain] = {}
        self.evals: dict[str, Evaluation] = {}  # keyed by each output path
        self.datasets: set[str] = set()
        self.tables: dict[str, TablePlan] = {}
        tables = self.design.resolve(
            vcr_placement=config.get("placement", "blocks"),
            resnet50_recipe=config.get("table1", {}).get("resnet50_recipe", "tv_resnet50_v2"),
        )
        for name in TABLES:
            self.tables[name] = self._plan_table(name, tables[name])
        self.two_moons = self._plan_two_moons()
        from vcr.plan.study import plan_study  # (it imports this module)

        self.study = plan_study(self)  # the eq. 2 / Alg. 1 study: not a table, not in `all`
        check_world_sizes(self)

    # --- config lookups ----------------------------------------------------------------------
    def _check_maps(self):
        dmap = self.sc.get("datasets") or {}
        missing = [k for k in self.design.datasets if k not in dmap]
        if missing:
            raise ConfigError(
                f"scales.{self.scale}.datasets: missing {missing} (map each to a dataset, "
                "'<dataset>/<target>', or null = not run at this scale)"
            )
        unknown = sorted(set(dmap) - set(self.design.datasets))
        if unknown:
            raise ConfigError(f"scales.{self.scale}.datasets: unknown key(s) {unknown}")
        amap = self.sc.get("archs") or {}
        missing = [a for a in self.design.archs if a not in amap]
        if missing:
            raise ConfigError(f"scales.{self.scale}.archs: missing {missing}")
        for proto in self.sc.get("protocols", {}) or {}:
            if proto not in PROBE_PROTOCOLS:
                raise ConfigError(
                    f"scales.{self.scale}.protocols.{proto}: not in {PROBE_PROTOCOLS}"
                )

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
        alphas = sw.get("alpha", self.design.alphas)
        betas = sw.get("beta", self.design.betas)
        return [(float(a), float(b)) for a in alphas for b in betas]

    def lrs(self, table: str, swept: bool) -> list[float]:
        if not swept:
            return [0.0]
        return [float(x) for x in self.sweep(table).get("lr", self.design.lrs)]

    def manifest(self, dataset: str) -> str:
        self.datasets.add(dataset)
        return f"{self.work}/data/{dataset}/manifest.json"

    def run_dir(self, relpath: str) -> str:
        return f"{self.work}/runs/{relpath}"

    def feature_cache(self, relpath: str) -> str:
        """The run's cached frozen features (probe.py --feature-cache)."""
        return f"{self.work}/features/{relpath}"

    def recipe_overrides(self, recipe: str, dataset: str | None = None) -> tuple[str, ...]:
        """``default`` <- ``<recipe>`` <- ``<recipe>:<dataset>`` of ``recipe_overrides``."""
        ro = self.sc.get("recipe_overrides") or {}
        merged = dict(ro.get("default") or {})
        merged.update(ro.get(recipe) or {})
        if dataset:
            merged.update(ro.get(f"{recipe}:{dataset}") or {})
        return format_sets(merged)

    def probe_overrides(self, protocol: str) -> tuple[str, ...]:
        return format_sets((self.sc.get("probe_overrides") or {}).get(protocol))

    # --- runs --------------------------------------------------------------------------------
    def _add_run(self, spec: RunSpec, dataset: str, init_weights=None, extra=()) -> str:
        key = spec.relpath()
        if key not in self.pretrain:
            self.pretrain[key] = Pretrain(
                spec,
                self.manifest(dataset),
                self.recipe_overrides(spec.recipe, spec.dataset) + tuple(extra),
                init_weights,
            )
        return key

    def _row_runs(self, table: str, row: Row, design: TableDesign, pre, fixed: dict):
        """The RunSpecs of one row variant on one pretraining dataset (sweep x lr x seeds);
        ``fixed``: the variant's ``init`` (baselines) or ``cov_scale`` (VCR rows)."""
        dataset, target = pre
        base = dict(
            scale=self.scale,
            method=row.method,
            arch=self.map_arch(row.arch),
            dataset=dataset,
            target=target,
            recipe=row.recipe,
            cov_scale=fixed.get("cov_scale", self.cov_scale),
            delta=float(self.config.get("delta", 0.0)),
        )
        keys = []
        if row.placement == "none":
            if fixed.get("init") == "torchvision":
                weights = self.config.get("table1", {}).get("weights", {}).get(row.recipe)
                if weights is None:
                    raise ConfigError(
                        f"table1.weights.{row.recipe}: no weights file given for the imported "
                        "baseline (a torchvision .pth below data_root; README 'Running on SLURM')"
                    )
                spec = RunSpec(**base, placement="none", lr=0.0, seed=0, init="torchvision")
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
        # the active columns grouped by pretraining dataset (Tables 2, 3: one per column)
        by_pre: dict[tuple[str, str], list] = {}
        for col, pre, ev in active:
            by_pre.setdefault(pre, []).append((col, ev))
        for row in design.rows:
            for spec_row, fixed in row_variants(self, name, row):
                rows.append(spec_row)
                for pre, cols in by_pre.items():
                    for run in self._row_runs(name, row, design, pre, fixed):
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
                        format_sets(self.sc.get("collapse_overrides")),
                    )
                )
                out.append(f"{d}/eval/collapse/{col.metric}.json")
        return out

    # --- figure 2 ----------------------------------------------------------------------------
    def _plan_two_moons(self) -> dict[str, str]:
        tm = self.sc.get("two_moons") or {}
        if tm.get("run", True) is False:
            return {}
        methods = tm.get("methods", self.design.figure2_methods)
        return {m: f"{self.work}/two_moons/{m}.pt" for m in methods}

    def two_moons_seeds(self) -> str:
        return str((self.sc.get("two_moons") or {}).get("seeds", "0-9"))

    def two_moons_sets(self) -> list[str]:
        return list(format_sets((self.sc.get("two_moons") or {}).get("set")))

    # --- outputs -----------------------------------------------------------------------------
    def spec_path(self, table: str) -> str:
        return f"{self.work}/tables/{table}.json"

    @property
    def selection(self) -> str:
        """The selection rule of the published tables (config ``selection``)."""
        return self.config.get("selection", "per_cell")

    @property
    def other_selections(self) -> tuple[str, ...]:
        """The other rules, each rendered beside: ``results/tables/<table>.<rule>.{md,tex,csv}``."""
        return tuple(r for r in SELECTION_RULES if r != self.selection)

    def table_outputs(self, table: str) -> list[str]:
        if table == "figure2":
            return self.figure_outputs()
        if table in LEDGERS:
            return self.claims_outputs()
        prefixes = [table] + [f"{table}.{rule}" for rule in self.other_selections]
        return [f"{self.results}/tables/{p}.{ext}" for p in prefixes for ext in TABLE_FORMATS]

    def claims_outputs(self) -> list[str]:
        return [f"{self.results}/claims.md", f"{self.results}/claims.csv"]

    def claims_records(self) -> list[str]:
        """Every table's record files (each once): the claims ledger's evidence."""
        return _unique(r for t in TABLES for r in self.tables[t].records)

    def figure_outputs(self) -> list[str]:
        return [f"{self.results}/figures/figure2.png", f"{self.results}/tables/figure2_margins.csv"]

    def report_outputs(self, table: str) -> list[str]:
        """The report's page and pictures of a table (``report_figures``, ``vcr.report``)."""
        prefix = f"{self.results}/report/{table}"
        return [f"{prefix}.html"] + [f"{prefix}_{kind}.png" for kind in REPORT_FIGURES]

    def target_files(self, target: str) -> list[str]:
        """What a target builds: its published files and, for a table, its report pictures."""
        extra = self.report_outputs(target) if target in TABLES else []
        return self.table_outputs(target) + extra

    def all_targets(self) -> list[str]:
        return [p for t in TARGETS for p in self.target_files(t)]

    def write_spec(self, table: str, path: str | None = None, log: str | None = None) -> None:
        path = path or self.spec_path(table)
        io.write_json(path, self.tables[table].spec)
        if log:
            io.write_text(log, f"wrote {path} from vcr.plan (scale {self.scale})\n")

    # --- lookups by job ----------------------------------------------------------------------
    def pretrain_job(self, key: str) -> Pretrain:
        try:
            return self.pretrain[key] if key in self.pretrain else self._study("pretrain")[key]
        except KeyError:
            raise ConfigError(
                f"run {key!r} is not in the {self.scale} plan (check the sweep/seeds config)"
            ) from None

    def eval_job(self, path: str) -> Evaluation:
        try:
            return self.evals[path] if path in self.evals else self._study("evals")[path]
        except KeyError:
            raise ConfigError(f"{path} is not an evaluation in the {self.scale} plan") from None

    def _study(self, what: str) -> dict:
        """The study's ``pretrain`` or ``evals`` (empty when it is not planned at this scale)."""
        return getattr(self.study, what) if self.study is not None else {}

    def probe_job(self, run: str, protocol: str, evalname: str) -> Evaluation:
        return self.eval_job(f"{self.run_dir(run)}/eval/{protocol}-{evalname}.json")

    def classifier_job(self, run: str, evalname: str) -> Evaluation:
        return self.eval_job(f"{self.run_dir(run)}/eval/classifier-{evalname}.json")

    def collapse_job(self, run: str) -> Evaluation:
        return self.eval_job(f"{self.run_dir(run)}/eval/collapse/{COLLAPSE_METRICS[0]}.json")

    # --- counts (vcr.plan.counts) ---------------------------------------------------------------
    def table_jobs(self, table: str) -> dict[str, int]:
        """Jobs a table's target runs from scratch, by rule name (what ``snakemake -n`` lists)."""
        return counts.table_jobs(self, table)

    def total_jobs(self) -> int:
        """Jobs of ``all`` from scratch (shared runs counted once), incl. the ``all`` rule."""
        return counts.total_jobs(self)

    def summary(self) -> dict:
        return counts.summary(self)

    # --- resources ---------------------------------------------------------------------------
    def pretrain_resources(self, key: str) -> dict[str, Any]:
        job = self.pretrain_job(key)
        if job.init_weights:  # importing weights needs no GPU and no time
            return self.resources.merged("import_weights")
        return self.resources.merged("pretrain", job.spec.recipe, job.spec.dataset)

    def probe_call(self, ev: Evaluation, key: str) -> dict:
        """The arguments the ``probe`` rule gives probe.py for ``ev`` on run ``key``, as a dict
        (a study cell's and ``--then-probe``'s JSON)."""
        return {
            "protocol": ev.protocol,
            "datasets": [d for d, _ in ev.datasets],
            "manifests": list(ev.manifests),
            "settings": ev.settings,
            "feature_cache": self.feature_cache(key),
            "device": self.device("probe", ev.protocol),
            "out": ev.outputs[0],
        }

    def then_probe(self, key: str) -> list[dict]:
        """The probe jobs a pretraining job runs itself once its run has finished, their records
        staged for those jobs (``scales.<scale>.probe_in_pretrain``; vcr/probe_staging.py)."""
        if not self.sc.get("probe_in_pretrain", False):
            return []
        if self._probes_by_run is None:
            self._probes_by_run = {}
            for ev in self.evals.values():
                if ev.kind == "probe":
                    self._probes_by_run.setdefault(ev.run, {})[id(ev)] = ev
        evs = list(self._probes_by_run.get(key, {}).values())
        if evs and self.launcher(key) != "python":
            raise ConfigError(
                f"run {key}: scales.{self.scale}.probe_in_pretrain probes inside the pretraining "
                f"process, but its resources launch it with {self.launcher(key)!r}: one plain "
                "process only (set probe_in_pretrain: false at this scale)"
            )
        return [self.probe_call(ev, key) for ev in evs]

    def launcher(self, key: str) -> str:
        """``python`` or the ``vcr.launch`` line of a pretraining job's resources."""
        return R.launcher(self.pretrain_resources(key))

    def device(self, kind: str, key: str = "") -> str:
        """The explicit ``--device`` of a job: a pretraining run (``kind="pretrain"``, key = its
        folder) or an evaluation (``probe`` with key = protocol, ``collapse``). A job asking for
        GPUs gets ``scales.<scale>.gpu_device`` (cuda; cpu where the GPUs are fake)."""
        res = (
            self.pretrain_resources(key) if kind == "pretrain" else self.resources.merged(kind, key)
        )
        return R.device(res, self.sc.get("gpu_device", "cuda"))

    def rule_resources(self, rule: str) -> dict[str, Any]:
        """The ``resources:`` directive of a rule: ``{name: value or callable(wildcards)}``.

        Only the resources some job of this rule sets at this scale are declared (Snakemake
        evaluates every declared resource of every job, several times; on the 4k-job paper
        DAG that is most of the dry-run time).
        """
        if rule == "pretrain":
            keys = [*self.pretrain, *self._study("pretrain")]
            per_run = {k: R.effective(self.pretrain_resources(k)) for k in keys}
            return R.per_job(per_run, lambda wc: wc.run)
        if rule == "probe":
            per_proto = {p: R.effective(self.resources.merged("probe", p)) for p in PROBE_PROTOCOLS}
            return R.per_job(per_proto, lambda wc: wc.protocol)
        return R.effective(self.resources.merged(rule))


TABLE_FORMATS = ("md", "tex", "csv")
EVAL_RULES = counts.EVAL_RULES  # the rule that runs each kind of evaluation


def _unique(items):
    return list(dict.fromkeys(items))


def build_plan(config: dict, scale: str | None = None) -> Plan:
    return Plan(config, scale)
