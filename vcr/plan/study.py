"""The eq. 2 / Algorithm 1 study (``snakemake study``): config ``study`` -> its runs, probe jobs,
spec and outputs.

The question: the paper's beta grid (0.01-0.16) is meaningful under Algorithm 1's constant
(beta x (n-1)) and nearly inert under eq. 2's 1/(n-1) (``VCR_MATH.md``); which does the grid
mean? The study trains the whole alpha x beta grid under both conventions, plus the baseline, on
the CPU mini data, and measures the pretraining accuracy and transfer probes of factors the
pretraining labels do not determine. It is not a paper table, so it is not in
``vcr/design.yaml``; the grid defaults to that file's ``grid`` (the paper's) and everything else
is config ``study`` (validated by ``config.schema.yaml``).

Its runs are ordinary ``RunSpec`` runs (the folders, recipes and probe records a ``pretrain`` and
a ``probe`` job would make: one probe record per run for every probe dataset, L-BFGS as Table
1), looked up through the :class:`vcr.plan.jobs.Plan` like the tables' jobs but kept apart from
them (the tables' job counts and ``all`` do not include the study). Snakemake runs them by
**cell** (rule ``study_cell``, :mod:`vcr.study_cell`): the seeds of one (arch, convention,
alpha, beta) setting, trained and probed one after the other in one process, because a process
costs ~3 CPU s of start-up (torch, and torch._dynamo through the optimizer), as much as a mini
ConvNeXt run's training (README "The eq. 2 / Algorithm 1 study"). The recipe ``mini_study`` is
the study's own, so its run folders never meet a table's run (the folder is a function of the RunSpec, and
``cov_scale`` is part of it for VCR runs). The study is planned at one scale (``study.scale``,
``mini``); at another, ``snakemake study`` stops with a message naming the key.
"""

from __future__ import annotations

import itertools
import posixpath
from dataclasses import dataclass, field

from vcr import io
from vcr.errors import ConfigError
from vcr.names import COV_SCALES
from vcr.plan.jobs import Evaluation, Pretrain, dataset_ref, format_sets
from vcr.records import RunSpec

# The study's defaults; config.yaml `study` sets or overrides each (schema: config.schema.yaml).
DEFAULTS = {
    "scale": "mini",
    "archs": ["mini_convnext", "mini_vit"],
    "pretrain": "mini_objects/super",
    "probes": ["mini_color", "mini_count", "mini_size"],
    "protocol": "lbfgs",
    "cov_scales": list(COV_SCALES),
    "seeds": [0, 1, 2],
    "recipe": "mini_study",
    "recipe_overrides": {},
    "probe_overrides": {},
}
# The pretraining metric's name in the study's outputs (the probes are named by their dataset).
PRETRAIN_METRIC = "pretrain"


@dataclass
class StudyPlan:
    """Every job and file of the study at one scale."""

    settings: dict  # the resolved study config (+ alphas, betas, placement, delta)
    pretrain: dict = field(default_factory=dict)  # relpath -> vcr.plan.jobs.Pretrain
    evals: dict = field(default_factory=dict)  # record path -> vcr.plan.jobs.Evaluation
    runs: list[dict] = field(default_factory=list)  # {run, final, record} per run (the spec)
    cells: dict = field(default_factory=dict)  # cell (a run folder less its seed) -> run keys
    record_of: dict = field(default_factory=dict)  # run key -> its probe record
    record_name: str = ""  # every run's probe record, below its folder: eval/<protocol>-<sets>.json
    datasets: list[str] = field(default_factory=list)
    results: str = ""  # the study's results folder

    @property
    def finals(self) -> list[str]:
        return [r["final"] for r in self.runs]

    @property
    def records(self) -> list[str]:
        return [r["record"] for r in self.runs]

    def spec(self) -> dict:
        """What the report reads (``work/<scale>/study/spec.json``): the settings and, per run,
        its parameters, its final.json and its probe record."""
        return {"settings": self.settings, "runs": self.runs}

    def cell_members(self) -> list[str]:
        """The last part of every cell's run folders (``seed0`` ...), the same in every cell."""
        first = next(iter(self.cells.values()))
        return [posixpath.basename(k) for k in first]

    def cell_job(self, cell: str, plan) -> dict:
        """What ``workflow_scripts/study_cell.py`` runs (its ``--cell`` JSON): per run, the
        arguments the ``pretrain`` and ``probe`` rules would give their CLIs."""
        runs = []
        for key in self.cells[cell]:
            job, ev = self.pretrain[key], self.evals[self.record_of[key]]
            launcher = plan.launcher(key)
            if launcher != "python":
                raise ConfigError(
                    f"study run {key}: its resources ask for {launcher!r}, but a study cell "
                    "trains its runs one after the other in one plain process (study.scale)"
                )
            runs.append(
                {
                    "out": plan.run_dir(key),
                    "spec": job.spec.to_dict(),
                    "manifest": job.manifest,
                    "overrides": list(job.overrides),
                    "device": plan.device("pretrain", key),
                    "probe": plan.probe_call(ev, key),
                }
            )
        return {"cell": cell, "runs": runs}

    def cell_manifests(self, cell: str) -> list[str]:
        """The prepared datasets a cell reads: the pretraining set, then the probe sets."""
        key = self.cells[cell][0]
        probe_manifests = self.evals[self.record_of[key]].manifests
        return list(dict.fromkeys([self.pretrain[key].manifest, *probe_manifests]))

    def metrics(self) -> list[str]:
        return [PRETRAIN_METRIC, *self.settings["probes"]]

    def outputs(self) -> dict[str, list[str]]:
        """The report's files by kind (tables, heatmaps), under the results folder."""
        r = self.results
        heatmaps = [
            f"{r}/heatmap_{m}_{c}.png" for m in self.metrics() for c in self.settings["cov_scales"]
        ]
        tables = [
            f"{r}/{name}"
            for name in ("study.md", "settings.csv", "best.csv", "effects.csv", "conventions.csv")
        ]
        return {"tables": tables, "heatmaps": heatmaps}

    def write_spec(self, path: str, log: str | None = None) -> None:
        io.write_json(path, self.spec())
        if log:
            io.write_text(log, f"wrote {path} from vcr.plan.study ({len(self.runs)} runs)\n")


def study_settings(config: dict, design) -> dict:
    """The ``study`` block with its defaults, the grid and the VCR form the tables use."""
    st = {**DEFAULTS, **(config.get("study") or {})}
    st["alpha"] = [float(a) for a in st.get("alpha", design.alphas)]
    st["beta"] = [float(b) for b in st.get("beta", design.betas)]
    st["placement"] = config.get("placement", "blocks")
    st["delta"] = float(config.get("delta", 0.0))
    if st["protocol"] == "finetune":
        raise ConfigError("study.protocol=finetune: the study probes frozen features")
    return st


def plan_study(plan) -> StudyPlan | None:
    """The study's jobs at ``plan``'s scale (a :class:`vcr.plan.jobs.Plan` whose tables are
    planned), or None when the study runs at another scale."""
    st = study_settings(plan.config, plan.design)
    if st["scale"] != plan.scale:
        return None
    study = StudyPlan(settings=st, results=st.get("results") or f"{plan.results}/study")
    dataset, target = dataset_ref(st["pretrain"])
    probes = [dataset_ref(p) for p in st["probes"]]
    if len({t for _, t in probes}) > 1:
        raise ConfigError(f"study.probes={st['probes']}: one probe job cannot mix label sets")
    study.datasets = list(dict.fromkeys([dataset, *(d for d, _ in probes)]))
    manifest = _manifest_path(plan, dataset)
    protocol = st["protocol"]
    overrides_by_arch = st["recipe_overrides"] or {}
    # a key may name an arch the study does not run (a config merged over this one runs fewer)
    known = {"default", *st["archs"]}
    known |= {m for sc in (plan.config.get("scales") or {}).values() for m in sc["archs"].values()}
    unknown = set(overrides_by_arch) - known
    if unknown:
        raise ConfigError(
            f"study.recipe_overrides: unknown key(s) {sorted(unknown)} (default, or an arch: "
            f"study.archs or a model of scales.<scale>.archs)"
        )
    probe_sets = format_sets(st["probe_overrides"])
    name = "+".join(d if t == "default" else f"{d}.{t}" for d, t in probes)
    study.record_name = f"{protocol}-{name}.json"
    for arch in st["archs"]:
        merged = {**(overrides_by_arch.get("default") or {}), **(overrides_by_arch.get(arch) or {})}
        sets = format_sets(merged)
        base = dict(
            scale=plan.scale, method="supervised", arch=arch, dataset=dataset, target=target,
            recipe=st["recipe"], delta=st["delta"],
        )  # fmt: skip
        specs = [RunSpec(**base, seed=s) for s in st["seeds"]]
        for cov, a, b, s in itertools.product(
            st["cov_scales"], st["alpha"], st["beta"], st["seeds"]
        ):
            specs.append(
                RunSpec(**base, placement=st["placement"], alpha=a, beta=b, seed=s, cov_scale=cov)
            )
        for spec in specs:
            key = spec.relpath()
            if key in study.pretrain:
                raise ConfigError(f"study: two study runs share the folder {key}")
            if key in plan.pretrain:
                raise ConfigError(
                    f"study run {key} is also a table's run: give the study a recipe of its own "
                    "(study.recipe)"
                )
            study.pretrain[key] = Pretrain(spec, manifest, sets)
            run_dir = plan.run_dir(key)
            record = f"{run_dir}/eval/{study.record_name}"
            study.evals[record] = Evaluation(
                "probe",
                key,
                protocol,
                tuple(probes),
                tuple(_manifest_path(plan, d) for d, _ in probes),
                (record,),
                probe_sets,
            )
            study.runs.append(
                {"run": spec.to_dict(), "final": f"{run_dir}/final.json", "record": record}
            )
            study.record_of[key] = record
            study.cells.setdefault(posixpath.dirname(key), []).append(key)
    return study


def _manifest_path(plan, dataset: str) -> str:
    # not plan.manifest(): that adds the dataset to the tables' datasets (their job counts)
    return f"{plan.work}/data/{dataset}/manifest.json"
