"""Cost before launch: jobs, GPU-hours and wall-clock hours per table (``python -m vcr.plan
--budget``), from the plan and the figures of ``vcr/plan/throughput.yaml`` (the cost model is
written at the top of that file).

Every job of the plan gets an estimated duration (:func:`job_costs`); a table's cost is the sum
over the jobs its target runs from scratch, the total counts a job two tables share once. Wall
clock at a cluster size is a list schedule of the jobs on ``gpus`` GPUs and ``cpus`` CPU cores
(:func:`simulate`): a job starts when its inputs are done and its GPUs (or cores) are free,
longest remaining chain first; a job that needs more GPUs than the cluster has makes it
infeasible (printed as such).

Measured costs come from the benchmark files Snakemake writes for every finished job
(``work/<scale>/benchmarks/**.tsv``, one per job: its ``s`` and ``cpu_time``). The job ids here
are those paths, so the estimate and the measurement are compared job by job
(:func:`measured_costs`); ``vcr.plan.derive`` turns a finished work folder into figures
(``--derive-figures``). Nothing here imports torch.
"""

from __future__ import annotations

import csv
import heapq
import math
from dataclasses import dataclass, field
from pathlib import Path

from vcr.errors import ConfigError
from vcr.names import LEDGERS, TABLES, TARGETS
from vcr.plan.resources import gpus_per_node

FIGURES_FILE = Path(__file__).with_name("throughput.yaml")
BASES = ("measured", "published", "assumed")
# The rules that turn a table's records into its published files (one job each per table).
TABLE_RULES = ("render_table", "report_figures")
# FinetuneConfig().epochs (vcr.probes.finetune imports torch; tests/test_budget.py checks it)
FINETUNE_EPOCHS = 20


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Figure:
    name: str  # "train_images_per_s.tv_convnext_tiny"
    value: float
    basis: str
    source: str


class Figures:
    """The figures of one scale (``inherit`` resolved), and the record of which were used."""

    def __init__(self, scale: str, path: str | Path = FIGURES_FILE):
        import yaml

        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
        scales = data.get("scales") or {}
        if scale not in scales:
            raise ConfigError(f"{path}: no figures for scale {scale!r} (scales: {sorted(scales)})")
        self.scale, self.path = scale, Path(path)
        sc = scales[scale]
        chain = [sc]
        while chain[-1].get("inherit"):
            chain.append(scales[chain[-1]["inherit"]])
        self.figures: dict[str, dict] = {}
        for level in reversed(chain):  # the inherited scale first, this scale's own on top
            for group, entries in (level.get("figures") or {}).items():
                if "value" in entries:  # a single figure
                    self.figures[group] = entries
                else:
                    self.figures.setdefault(group, {}).update(entries)
        self.device = sc.get("device", "")
        self.cluster = {**{"gpus": 0, "cpus": 1}, **(sc.get("cluster") or {})}
        self.paper_total = sc.get("paper_total_gpu_h")
        self.datasets = data.get("datasets") or {}
        self.used: dict[str, Figure] = {}
        self.missing: set[str] = set()

    def get(self, group: str, *keys: str, missing_ok: bool = False) -> float | None:
        """The first of ``group.<key>`` (or the single figure ``group``) that exists; None if
        none does (recorded in ``missing`` unless ``missing_ok``: a figure that may be folded
        into another)."""
        entries = self.figures.get(group)
        if entries is not None and "value" in entries:
            return self._use(group, entries)
        for key in keys:
            if entries is not None and key in entries:
                return self._use(f"{group}.{key}", entries[key])
        if not missing_ok:
            self.missing.add(f"{group}.{keys[-1]}" if keys else group)
        return None

    def _use(self, name: str, entry: dict) -> float:
        basis = entry.get("basis")
        if basis not in BASES:
            raise ConfigError(f"{self.path}: {self.scale} {name}: basis {basis!r} not in {BASES}")
        self.used[name] = Figure(name, float(entry["value"]), basis, str(entry.get("source", "")))
        return float(entry["value"])

    def split_sizes(self, dataset: str) -> dict[str, int]:
        if dataset not in self.datasets:
            raise ConfigError(f"{self.path}: datasets.{dataset}: no split sizes for the budget")
        return self.datasets[dataset]


# ---------------------------------------------------------------------------------------------
# Jobs and their estimated cost
# ---------------------------------------------------------------------------------------------
@dataclass
class JobCost:
    id: str  # the job's benchmark file (or "<rule>/<wildcards>" for a rule without one)
    rule: str
    seconds: float  # wall seconds of the job on its devices
    gpus: int
    cpus: int
    deps: tuple[str, ...] = ()
    note: str = ""  # what the estimate is made of
    outputs: tuple[str, ...] = ()  # the files that mark it done
    hosted_s: float = 0.0  # of ``seconds``: other jobs' work it runs (probe_in_pretrain)

    @property
    def log(self) -> str:
        """The job's log file (``rules/*.smk``: the benchmark path under ``logs/``)."""
        if self.rule == "table_spec":
            work, _, table = self.id.rpartition("/table_spec/")
            return f"{work}/logs/table_spec/{table}.log"
        if self.rule == "plot_figure2":
            return self.id.replace("/benchmarks/plot_figure2.tsv", "/logs/figure2.log")
        return self.id.replace("/benchmarks/", "/logs/", 1).removesuffix(".tsv") + ".log"

    @property
    def gpu_s(self) -> float:
        return self.seconds * self.gpus

    @property
    def cpu_s(self) -> float:
        return 0.0 if self.gpus else self.seconds * self.cpus


def _sets(items) -> dict[str, str]:
    return dict(s.split("=", 1) for s in items)


def _images(fig: Figures, dataset: str, *splits: str) -> int:
    sizes = fig.split_sizes(dataset)
    return sum(int(sizes[s]) for s in splits)


def _rate_time(images: float, rate: float | None, devices: int, *, folded=False) -> float:
    """Seconds for ``images`` at ``rate`` per device; a missing rate is unknown (nan), or 0 when
    the figures fold that work into a per-job figure (``folded``: feature extraction and
    fine-tuning epochs in ``probe_s``/``collapse_s`` where no rate is given, as at mini)."""
    if not images:
        return 0.0
    if rate is None or rate <= 0:
        return 0.0 if folded else math.nan
    return images / (rate * max(1, devices))


def _probes_in_pretrain(jobs: dict[str, JobCost], start: float, taken_s: float, share) -> None:
    """probe_in_pretrain (vcr/probe_staging.py): each probe job's work, its estimate less the
    start-up, runs inside its run's pretraining job at ``share`` of that cost (what a probe
    process pays besides ``start_s``, loading the backbone and the optimizer imports among it,
    is paid once there); the probe job only takes the staged records (``job_s["probe_staged"]``)."""
    for job in [j for j in jobs.values() if j.rule == "probe"]:
        host = jobs[job.deps[0]]
        work = (job.seconds - start) * (math.nan if share is None else share)
        host.seconds += work
        host.hosted_s += work
        host.note += f" + {Path(job.id).stem.split('-', 1)[0]} probe"
        host.deps = tuple(dict.fromkeys((*host.deps, *job.deps[1:])))  # its probe datasets
        job.seconds = taken_s
        job.note += ", staged in pretrain"


def job_costs(plan, fig: Figures) -> dict[str, JobCost]:
    """Every job of ``plan`` with its estimated duration and devices, keyed by job id."""
    from vcr.recipes import get_recipe

    bench = f"{plan.work}/benchmarks"
    jobs: dict[str, JobCost] = {}
    start = fig.get("start_s") or 0.0

    def job_s(rule, *keys):
        v = fig.get("job_s", *keys, rule)
        return math.nan if v is None else v

    def units(res):
        gpus = gpus_per_node(res) * int(res.get("nodes") or 1)  # gpu is per node
        return gpus, (0 if gpus else max(1, int(res.get("cpus_per_task") or 1)))

    for ds in sorted(plan.datasets):
        g, c = units(plan.resources.merged("prepare_data"))
        jid = f"{bench}/prepare_data/{ds}.tsv"
        secs = job_s("prepare_data", f"prepare_data:{ds}")
        jobs[jid] = JobCost(jid, "prepare_data", secs, g, c, outputs=(plan.manifest(ds),))
    for key, pre in plan.pretrain.items():
        spec = pre.spec
        g, c = units(plan.pretrain_resources(key))
        jid = f"{bench}/pretrain/{key}.tsv"
        deps = (f"{bench}/prepare_data/{spec.dataset}.tsv",)
        outs = (f"{plan.run_dir(key)}/backbone.pt", f"{plan.run_dir(key)}/final.json")
        if pre.init_weights:
            secs = job_s("import_weights")
            jobs[jid] = JobCost(jid, "pretrain", secs, g, c, deps, "import", outs)
            continue
        recipe = get_recipe(spec.recipe, **_sets(pre.overrides))
        images = recipe.epochs * _images(fig, spec.dataset, "train")
        rate = fig.get("train_images_per_s", f"{spec.recipe}:{spec.dataset}", spec.recipe)
        secs = start + _rate_time(images, rate, g or c)
        note = f"{recipe.epochs} ep x {images // max(1, recipe.epochs)} img"
        jobs[jid] = JobCost(jid, "pretrain", secs, g, c, deps, note, outs)
    seen = set()
    for ev in plan.evals.values():
        if id(ev) in seen:
            continue
        seen.add(id(ev))
        spec = plan.pretrain[ev.run].spec
        run_job = f"{bench}/pretrain/{ev.run}.tsv"
        deps = (run_job, *(f"{bench}/prepare_data/{d}.tsv" for d, _ in ev.datasets))
        if ev.kind == "classifier":
            evalname = Path(ev.outputs[0]).stem.removeprefix("classifier-")
            jid = f"{bench}/classifier_metric/{ev.run}/{evalname}.tsv"
            g, c = units(plan.resources.merged("classifier_metric"))
            secs = job_s("classifier_metric")
            jobs[jid] = JobCost(jid, "classifier_metric", secs, g, c, deps[:1], "", ev.outputs)
            continue
        infer = fig.get("infer_images_per_s", spec.arch, missing_ok=True)
        if ev.kind == "collapse":
            jid = f"{bench}/collapse/{ev.run}.tsv"
            g, c = units(plan.resources.merged("collapse"))
            ds = ev.datasets[0][0]
            secs = start + _rate_time(_images(fig, ds, "train"), infer, g or c, folded=True)
            secs += fig.get("collapse_s") or 0.0
            jobs[jid] = JobCost(jid, "collapse", secs, g, c, deps, "", ev.outputs)
            continue
        name = Path(ev.outputs[0]).stem  # "<protocol>-<evalname>"
        jid = f"{bench}/probe/{ev.run}/{name}.tsv"
        g, c = units(plan.resources.merged("probe", ev.protocol))
        per_ds = fig.get("probe_s", ev.protocol)
        secs = start
        for d, _ in ev.datasets:
            if infer is not None:
                images = _images(fig, d, "train", "val", "test")
                secs += _rate_time(images, infer, g or c, folded=True)
            secs += math.nan if per_ds is None else per_ds
            if ev.protocol == "finetune":
                epochs = int(_sets(ev.overrides).get("epochs", FINETUNE_EPOCHS))
                rate = fig.get("finetune_images_per_s", missing_ok=True)
                images = epochs * _images(fig, d, "train")
                secs += _rate_time(images, rate, g or c, folded=True)
        note = f"{len(ev.datasets)} dataset(s)"
        jobs[jid] = JobCost(jid, "probe", secs, g, c, deps, note, ev.outputs)
    if plan.sc.get("probe_in_pretrain"):
        share = fig.get("hosted_probe_share")
        _probes_in_pretrain(jobs, start, job_s("probe_staged"), share)
    for method in plan.two_moons:
        jid = f"{bench}/two_moons/{method}.tsv"
        g, c = units(plan.resources.merged("two_moons"))
        n_seeds = len(_seed_list(plan.two_moons_seeds()))
        epochs = int(_sets(plan.two_moons_sets()).get("epochs", 10_000))
        secs = start + _rate_time(n_seeds * epochs, fig.get("two_moons_epochs_per_s"), c)
        note = f"{n_seeds} seeds x {epochs} ep"
        jobs[jid] = JobCost(jid, "two_moons", secs, g, c, (), note, (plan.two_moons[method],))
    if plan.two_moons:
        jid = f"{bench}/plot_figure2.tsv"
        deps = tuple(f"{bench}/two_moons/{m}.tsv" for m in plan.two_moons)
        g, c = units(plan.resources.merged("plot_figure2"))
        outs = tuple(plan.figure_outputs())
        jobs[jid] = JobCost(jid, "plot_figure2", job_s("plot_figure2"), g, c, deps, "", outs)
    for table in TABLES:
        deps = tuple(_table_eval_jobs(plan, table, bench))
        spec_id = f"{plan.work}/table_spec/{table}"
        outs = (plan.spec_path(table),)
        jobs[spec_id] = JobCost(spec_id, "table_spec", job_s("table_spec"), 0, 0, outputs=outs)
        for rule in TABLE_RULES:
            g, c = units(plan.resources.merged(rule))
            jid = f"{bench}/{rule}/{table}.tsv"
            outs = tuple(plan.table_outputs(table) if rule == "render_table" else
                         plan.report_outputs(table))  # fmt: skip
            jobs[jid] = JobCost(jid, rule, job_s(rule), g, c, (spec_id, *deps), "", outs)
    # the claims ledger: every table's records and specs, and the two-moons runs
    deps = [f"{plan.work}/table_spec/{t}" for t in TABLES]
    deps += [j for t in TABLES for j in _table_eval_jobs(plan, t, bench)]
    deps += [f"{bench}/two_moons/{m}.tsv" for m in plan.two_moons]
    g, c = units(plan.resources.merged("claims_ledger"))
    jid = f"{bench}/claims.tsv"  # rules/tables.smk claims_ledger's benchmark
    outs = tuple(plan.table_outputs("claims"))
    jobs[jid] = JobCost(
        jid, "claims_ledger", job_s("claims_ledger"), g, c, tuple(dict.fromkeys(deps)), "", outs
    )
    return jobs


def _seed_list(text: str) -> list[int]:
    lo, _, hi = str(text).partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def _table_eval_jobs(plan, table, bench) -> list[str]:
    """The ids of the jobs that write a table's records."""
    out = []
    for rec in plan.tables[table].records:
        ev = plan.evals[rec]
        if ev.kind == "classifier":
            evalname = Path(ev.outputs[0]).stem.removeprefix("classifier-")
            out.append(f"{bench}/classifier_metric/{ev.run}/{evalname}.tsv")
        elif ev.kind == "collapse":
            out.append(f"{bench}/collapse/{ev.run}.tsv")
        else:
            out.append(f"{bench}/probe/{ev.run}/{Path(ev.outputs[0]).stem}.tsv")
    return list(dict.fromkeys(out))


def target_jobs(plan, jobs: dict[str, JobCost], target: str) -> set[str]:
    """The jobs a target's files need from scratch (its rendering jobs and everything upstream)."""
    bench = f"{plan.work}/benchmarks"
    if target == "figure2":
        roots = [f"{bench}/plot_figure2.tsv"] if plan.two_moons else []
    elif target in LEDGERS:
        roots = [f"{bench}/claims.tsv"]
    else:
        roots = [f"{bench}/{rule}/{target}.tsv" for rule in TABLE_RULES]
    out: set[str] = set()
    todo = [r for r in roots if r in jobs]
    while todo:
        j = todo.pop()
        if j in out:
            continue
        out.add(j)
        todo.extend(d for d in jobs[j].deps if d in jobs)
    return out


# ---------------------------------------------------------------------------------------------
# Wall clock at a cluster size
# ---------------------------------------------------------------------------------------------
def simulate(jobs: dict[str, JobCost], ids, *, gpus: int, cpus: int) -> float:
    """Makespan in seconds of ``ids`` on ``gpus`` GPUs and ``cpus`` cores (inf: infeasible).

    List scheduling: ready jobs by longest remaining chain (critical path) first; a job waits
    until its GPUs (or cores) are free. Jobs with no devices (local rules) take no slot.
    """
    ids = set(ids)
    for j in ids:
        job = jobs[j]
        if job.gpus > gpus or (not job.gpus and job.cpus > cpus) or math.isnan(job.seconds):
            return math.inf
    children: dict[str, list[str]] = {j: [] for j in ids}
    waiting = {j: 0 for j in ids}
    for j in ids:
        for d in jobs[j].deps:
            if d in ids:
                children[d].append(j)
                waiting[j] += 1
    chain = _chains(jobs, ids, children)
    ready = [(-chain[j], j) for j in ids if waiting[j] == 0]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    free = {"gpu": gpus, "cpu": cpus}
    now, done = 0.0, 0
    while done < len(ids):
        blocked = []
        while ready:
            prio, j = heapq.heappop(ready)
            kind, n = ("gpu", jobs[j].gpus) if jobs[j].gpus else ("cpu", jobs[j].cpus)
            if n <= free[kind]:
                free[kind] -= n
                heapq.heappush(running, (now + jobs[j].seconds, j))
            else:
                blocked.append((prio, j))
        for item in blocked:
            heapq.heappush(ready, item)
        if not running:
            return math.inf  # nothing can start (cannot happen after the checks above)
        now, j = heapq.heappop(running)
        kind, n = ("gpu", jobs[j].gpus) if jobs[j].gpus else ("cpu", jobs[j].cpus)
        free[kind] += n
        done += 1
        for c in children[j]:
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(ready, (-chain[c], c))
    return now


def _chains(jobs, ids, children) -> dict[str, float]:
    """Each job's longest chain to the end (its seconds + its slowest child's chain)."""
    chain: dict[str, float] = {}
    for root in ids:
        stack = [(root, False)]
        while stack:
            j, expanded = stack.pop()
            if j in chain:
                continue
            if expanded:
                chain[j] = jobs[j].seconds + max((chain[c] for c in children[j]), default=0.0)
                continue
            stack.append((j, True))
            stack.extend((c, False) for c in children[j] if c not in chain)
    return chain


# ---------------------------------------------------------------------------------------------
# Measured costs (benchmark files)
# ---------------------------------------------------------------------------------------------
def read_benchmark(path) -> dict[str, float] | None:
    """``{"s": wall seconds, "cpu_time": CPU seconds or nan}`` of one benchmark TSV."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except OSError:
        return None
    if not rows:
        return None
    out = {}
    for key in ("s", "cpu_time"):
        try:
            out[key] = float(rows[-1].get(key) or "nan")
        except ValueError:
            out[key] = math.nan
    return out


# Snakemake's benchmark sampler (snakemake.benchmark): one sample every 0.5 s for the first 31
# ticks, then one every 30 s, none at the end; cpu_time is the CPU time seen at the last sample.
SAMPLE_SHORT_S, SAMPLE_SHORT_N, SAMPLE_LONG_S = 0.5, 31, 30.0


def last_sample_s(wall_s: float) -> float:
    """When the benchmark sampler last looked at a job that ran ``wall_s`` seconds."""
    short_end = SAMPLE_SHORT_S * SAMPLE_SHORT_N
    if wall_s <= short_end:
        return math.floor(wall_s / SAMPLE_SHORT_S) * SAMPLE_SHORT_S
    return short_end + math.floor((wall_s - short_end) / SAMPLE_LONG_S) * SAMPLE_LONG_S


def job_cpu_s(b: dict[str, float], cpus: int) -> float:
    """A job's CPU seconds from its benchmark record: ``cpu_time`` extrapolated from the last
    sample to the end at the same CPU share (the sampler misses up to 30 s of a long job), or
    wall x cores when no CPU time was collected."""
    wall, cpu = b["s"], b["cpu_time"]
    if not math.isfinite(cpu):
        return wall * cpu_count(cpus)
    seen = last_sample_s(wall)
    return cpu * wall / seen if seen > 0 else cpu


def cpu_count(cpus: int) -> int:
    return max(1, int(cpus))


def measured_costs(jobs: dict[str, JobCost]) -> dict[str, dict[str, float]]:
    """Per job with a benchmark file: ``{"s", "cpu_time", "gpu_s", "cpu_s"}``. A GPU job's
    GPU-seconds are its wall seconds x GPUs; a CPU job's CPU-seconds are :func:`job_cpu_s`
    (CPU time, not wall: other work on a shared machine does not inflate it)."""
    out = {}
    for jid, job in jobs.items():
        if not jid.endswith(".tsv"):
            continue
        b = read_benchmark(jid)
        if b is None:
            continue
        cpu = 0.0 if job.gpus else job_cpu_s(b, job.cpus)
        out[jid] = {**b, "gpu_s": b["s"] * job.gpus, "cpu_s": cpu}
    return out


# ---------------------------------------------------------------------------------------------
# The budget
# ---------------------------------------------------------------------------------------------
@dataclass
class BudgetRow:
    target: str
    jobs: int
    gpu_h: float
    cpu_h: float
    wall_h: float
    measured_jobs: int = 0
    measured_gpu_h: float = 0.0
    measured_cpu_h: float = 0.0
    estimate_of_measured_h: float = 0.0  # GPU-h + CPU-h estimated for the measured jobs only


@dataclass
class Budget:
    scale: str
    gpus: int
    cpus: int
    rows: list[BudgetRow]
    total: BudgetRow
    figures: Figures
    jobs: dict[str, JobCost] = field(repr=False)
    unknown: list[str] = field(default_factory=list)  # jobs without an estimate


def make_budget(plan, targets=TARGETS, *, gpus=None, cpus=None, figures=None) -> Budget:
    fig = figures or Figures(plan.scale)
    gpus = fig.cluster["gpus"] if gpus is None else int(gpus)
    cpus = fig.cluster["cpus"] if cpus is None else int(cpus)
    jobs = job_costs(plan, fig)
    measured = measured_costs(jobs)

    def row(name, ids):
        ids = set(ids)
        m = [measured[j] for j in ids if j in measured]
        return BudgetRow(
            target=name,
            jobs=len(ids),
            gpu_h=sum(jobs[j].gpu_s for j in ids) / 3600,
            cpu_h=sum(jobs[j].cpu_s for j in ids) / 3600,
            wall_h=simulate(jobs, ids, gpus=gpus, cpus=cpus) / 3600,
            measured_jobs=len(m),
            measured_gpu_h=sum(x["gpu_s"] for x in m) / 3600,
            measured_cpu_h=sum(x["cpu_s"] for x in m) / 3600,
            estimate_of_measured_h=sum(jobs[j].gpu_s + jobs[j].cpu_s for j in ids if j in measured)
            / 3600,
        )

    per = {t: target_jobs(plan, jobs, t) for t in targets}
    rows = [row(t, ids) for t, ids in per.items()]
    every = set().union(*per.values()) if per else set()
    unknown = sorted(j for j in every if math.isnan(jobs[j].seconds))
    return Budget(plan.scale, gpus, cpus, rows, row("total", every), fig, jobs, unknown)


def check_estimate(b: Budget, max_error: float) -> str:
    """'' when the total estimate of the measured jobs is within ``max_error`` (a fraction) of
    their measured cost, else the problem."""
    t = b.total
    measured = t.measured_gpu_h + t.measured_cpu_h
    if not t.measured_jobs or measured <= 0:
        return f"no benchmark files under work/{b.scale}/benchmarks to compare with"
    ratio = t.estimate_of_measured_h / measured
    if not math.isfinite(ratio) or abs(ratio - 1) > max_error:
        return (
            f"estimate {t.estimate_of_measured_h:.4g} h vs measured {measured:.4g} h over "
            f"{t.measured_jobs} jobs: ratio {ratio:.2f}, outside 1 +- {max_error}"
        )
    return ""


def _h(x: float) -> str:
    if math.isnan(x):
        return "?"
    if math.isinf(x):
        return "infeasible"
    return f"{x:,.1f}" if x >= 10 else f"{x:.3g}"


def format_budget(b: Budget) -> str:
    from tabulate import tabulate

    has_measured = b.total.measured_jobs > 0
    headers = ["target", "jobs", "GPU-h", "CPU-h", f"wall-h ({b.gpus} GPUs, {b.cpus} cores)"]
    if has_measured:
        headers += ["measured jobs", "measured GPU-h", "measured CPU-h", "estimate / measured"]
    lines = []
    for r in [*b.rows, b.total]:
        line = [r.target, r.jobs, _h(r.gpu_h), _h(r.cpu_h), _h(r.wall_h)]
        if has_measured:
            est = r.estimate_of_measured_h
            meas = r.measured_gpu_h + r.measured_cpu_h
            ratio = f"{est / meas:.2f}" if meas > 0 and math.isfinite(est) else "-"
            line += [r.measured_jobs, _h(r.measured_gpu_h), _h(r.measured_cpu_h), ratio]
        lines.append(line)
    out = [
        f"Budget at scale {b.scale}: {b.figures.device}; cluster {b.gpus} GPUs, {b.cpus} CPU "
        f"cores (figures: {b.figures.path.name}; 'total' counts a job two tables share once)",
        "",
        tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True),
    ]
    if b.figures.paper_total:
        p = b.figures.paper_total
        out += [
            "",
            f"The paper's own total: {p['value']:,.0f} GPU-hours ({p['source']}); this plan: "
            f"{b.total.gpu_h:,.0f} GPU-hours = {b.total.gpu_h / p['value']:.2f} x the paper's.",
        ]
    wf = b.figures.get("workflow_cpu_s_per_job", missing_ok=True)
    if wf:
        extra = wf * b.total.jobs / 3600
        out += [
            "",
            f"Snakemake's own CPU on the submit host: {b.total.jobs} jobs x {wf:g} s = "
            f"{_h(extra)} CPU-h; with the jobs' {_h(b.total.cpu_h)}: {_h(extra + b.total.cpu_h)} "
            "CPU-h for the whole run.",
        ]
    if has_measured:
        out += [
            "",
            "estimate / measured: the estimate of the measured jobs only (GPU-h + CPU-h) over "
            "their benchmark files (GPU jobs: wall s x GPUs; CPU jobs: cpu_time, extrapolated to the end).",
        ]
    if b.unknown:
        out += ["", f"{len(b.unknown)} job(s) have no estimate: missing figure(s) "
                    f"{sorted(b.figures.missing)}"]  # fmt: skip
    out += ["", "Figures used (basis: measured = ours, published = a source's number, assumed):"]
    figs = [
        [f.name, f"{f.value:g}", f.basis, f.source]
        for f in sorted(b.figures.used.values(), key=_fk)
    ]
    out.append(tabulate(figs, headers=["figure", "value", "basis", "source"], tablefmt="github"))
    return "\n".join(out)


def _fk(f: Figure):
    return (f.name.split(".")[0], f.name)
