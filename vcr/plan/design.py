"""The paper's experimental design: ``vcr/design.yaml`` read into frozen dataclasses.

The YAML is the one place where "Table 2 probes ``*/sub`` with AdamW after pretraining on
``*/super``" is written; this module validates it (``vcr/design.schema.yaml``, then the names it
must share with the code: recipes, archs, datasets, protocols) and resolves the two references a
config fills in (``@vcr`` = config ``placement``, ``@resnet50`` = config
``table1.resnet50_recipe``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

from vcr.errors import ConfigError
from vcr.names import PROBE_PROTOCOLS, TABLES
from vcr.plan.config import check_schema

DESIGN_PATH = Path(__file__).resolve().parents[1] / "design.yaml"
SCHEMA_PATH = DESIGN_PATH.with_name("design.schema.yaml")
VCR_PLACEMENT = "@vcr"  # the config's `placement` (the paper's VCR rows: every block)
RESNET50_RECIPE = "@resnet50"  # the config's table1.resnet50_recipe


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    protocol: str  # a probe protocol, or classifier | collapse (measured on the run itself)
    eval_key: str | None = None  # the dataset key probed; None: the run's own dataset
    pretrain_key: str | None = None  # the column's own pretraining dataset (Tables 2, 3)
    metric: str | None = None  # None: from the eval dataset (top1 / mean_per_class)

    @property
    def kind(self) -> str:
        """probe | classifier | collapse."""
        return "probe" if self.protocol in PROBE_PROTOCOLS else self.protocol


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    method: str
    arch: str  # a design `archs` name
    recipe: str  # a vcr.recipes name (or @resnet50 before resolve())
    placement: str  # none | a placement (or @vcr before resolve())
    pretrain_key: str | None  # the table's pretraining dataset; None: per column
    baseline: str = "train"  # train | table1 (the config's table1_baseline applies)


@dataclass(frozen=True)
class TableDesign:
    name: str
    rows: tuple[Row, ...]
    columns: tuple[Column, ...]
    sweep_lr: bool  # the paper sweeps lr for this table


@dataclass(frozen=True)
class Design:
    alphas: tuple[float, ...]
    betas: tuple[float, ...]
    lrs: tuple[float, ...]
    archs: tuple[str, ...]
    datasets: tuple[str, ...]  # every dataset key; a scale maps each
    tables: dict[str, TableDesign]
    figure2_methods: tuple[str, ...]

    def resolve(self, *, vcr_placement: str, resnet50_recipe: str) -> dict[str, TableDesign]:
        """The tables with the config's references filled in."""

        def row(r: Row) -> Row:
            return replace(
                r,
                placement=vcr_placement if r.placement == VCR_PLACEMENT else r.placement,
                recipe=resnet50_recipe if r.recipe == RESNET50_RECIPE else r.recipe,
            )

        return {
            name: replace(t, rows=tuple(row(r) for r in t.rows)) for name, t in self.tables.items()
        }


@functools.lru_cache(maxsize=4)
def load_design(path: str | Path = DESIGN_PATH) -> Design:
    """Read and check the design file (cached: the Snakefile and the tests read it often)."""
    import yaml

    with open(path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    check_schema(raw, SCHEMA_PATH, what=str(path))
    tables = {name: _table(name, raw["tables"][name]) for name in TABLES}
    design = Design(
        alphas=tuple(float(a) for a in raw["grid"]["alpha"]),
        betas=tuple(float(b) for b in raw["grid"]["beta"]),
        lrs=tuple(float(x) for x in raw["grid"]["lr"]),
        archs=tuple(raw["archs"]),
        datasets=tuple(raw["datasets"]),
        tables=tables,
        figure2_methods=tuple(raw["figure2"]["methods"]),
    )
    _check_names(design, path)
    return design


def _table(name: str, raw: dict) -> TableDesign:
    pretrain = raw.get("pretrain")
    rows = tuple(
        Row(
            key=r["key"],
            label=r["label"],
            method=r["method"],
            arch=r["arch"],
            recipe=r["recipe"],
            placement=r["placement"],
            pretrain_key=pretrain,
            baseline=r.get("baseline", "train"),
        )
        for r in raw["rows"]
    )
    columns = tuple(
        Column(
            key=c["key"],
            label=c["label"],
            protocol=c["protocol"],
            eval_key=c.get("eval"),
            pretrain_key=c.get("pretrain"),
            metric=c.get("metric"),
        )
        for c in raw["columns"]
    )
    return TableDesign(name, rows, columns, bool(raw["sweep_lr"]))


def _check_names(design: Design, path) -> None:
    """What the schema cannot check: names shared with the code and within the file."""
    from vcr.recipes import RECIPES

    problems = []
    for t in design.tables.values():
        where = f"{path}: tables.{t.name}"
        for r in t.rows:
            if r.arch not in design.archs:
                problems.append(f"{where}.rows.{r.key}: arch {r.arch!r} not in archs")
            if r.recipe != RESNET50_RECIPE and r.recipe not in RECIPES:
                problems.append(f"{where}.rows.{r.key}: recipe {r.recipe!r} is not in vcr.recipes")
            if r.baseline == "table1" and r.placement != "none":
                problems.append(f"{where}.rows.{r.key}: baseline applies to placement none only")
        for c in t.columns:
            for key in (c.eval_key, c.pretrain_key):
                if key is not None and key not in design.datasets:
                    problems.append(f"{where}.columns.{c.key}: {key!r} not in datasets")
            if (c.kind == "probe") != (c.eval_key is not None):
                problems.append(f"{where}.columns.{c.key}: a probe needs `eval`, only a probe")
            if (c.protocol == "collapse") != (c.metric is not None):
                problems.append(f"{where}.columns.{c.key}: `metric` is for collapse columns")
            if (t.rows[0].pretrain_key or c.pretrain_key) is None:
                problems.append(f"{where}.columns.{c.key}: no pretraining dataset")
        if len({r.key for r in t.rows}) != len(t.rows):
            problems.append(f"{where}: row keys repeat")
        if len({c.key for c in t.columns}) != len(t.columns):
            problems.append(f"{where}: column keys repeat")
    if problems:
        raise ConfigError("; ".join(problems))
