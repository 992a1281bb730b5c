"""The two records every stage agrees on: a run's parameters and a metric record.

A *run* is one pretraining job. Its parameters (``RunSpec``) decide its folder, so every path is
a function of the experiment (Snakemake wildcards, partial reruns and up-to-date checks work
without bookkeeping), and identical experiments requested by two tables share one folder.

A *metric record* is one number (with its validation counterpart) measured on one run. The table
renderer reads nothing else; selection of alpha/beta/lr uses ``val``, the table reports ``test``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from vcr import io
from vcr.errors import ConfigError
from vcr.names import COV_SCALES, PLACEMENTS, PRETRAIN_METHODS, RUN_INITS


def fmt_float(x: float) -> str:
    """Shortest round-trip text of a float, stable across runs ("0.64", "1e-05", "0")."""
    x = float(x)
    if x == 0:
        return "0"
    return repr(x)


@dataclass(frozen=True)
class RunSpec:
    scale: str  # mini | cifar | paper
    method: str  # supervised | simclr | vicreg
    arch: str  # a name create_model() knows
    dataset: str  # pretraining dataset name (vcr.data registry)
    target: str  # label set used for pretraining: default | super | sub
    recipe: str  # a name in vcr.recipes
    placement: str = "none"  # one of PLACEMENTS; "none" = baseline
    alpha: float = 0.0
    beta: float = 0.0
    lr: float = 0.0  # 0 = the recipe's own lr
    seed: int = 0
    cov_scale: str = "eq2"  # eq2 (paper eq. 2) | alg1 (Algorithm 1 as printed)
    delta: float = 0.0  # smooth-L1 covariance threshold; 0 = plain squares
    # scratch: trained by this code | torchvision: torchvision's released weights, imported
    # (Table 1's baselines; a run of its own, beside a trained baseline of the same recipe)
    init: str = "scratch"

    def __post_init__(self):
        if self.method not in PRETRAIN_METHODS:
            raise ConfigError(f"run.method={self.method!r}: expected one of {PRETRAIN_METHODS}")
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"run.placement={self.placement!r}: expected one of {PLACEMENTS}")
        if self.cov_scale not in COV_SCALES:
            raise ConfigError(f"run.cov_scale={self.cov_scale!r}: expected one of {COV_SCALES}")
        if self.init not in RUN_INITS:
            raise ConfigError(f"run.init={self.init!r}: expected one of {RUN_INITS}")
        if self.init != "scratch" and self.placement != "none":
            raise ConfigError(f"run.init={self.init!r} is for baselines (placement none) only")
        for key in ("alpha", "beta", "lr", "delta"):
            v = getattr(self, key)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"run.{key}={v!r}: expected a finite number >= 0")

    @property
    def vcr(self) -> bool:
        return self.placement != "none"

    def reg_tag(self) -> str:
        """``none`` for the baseline (``torchvision`` for an imported one), else
        ``<placement>.<cov_scale>[.huber<delta>]``."""
        if not self.vcr:
            return "none" if self.init == "scratch" else self.init
        tag = f"{self.placement}.{self.cov_scale}"
        if self.delta:
            tag += f".huber{fmt_float(self.delta)}"
        return tag

    def relpath(self) -> str:
        """The run's folder below ``work/<scale>/runs/``; a pure function of the parameters."""
        hp = f"a{fmt_float(self.alpha)}_b{fmt_float(self.beta)}_lr{fmt_float(self.lr)}"
        return (
            f"{self.method}/{self.arch}/{self.dataset}-{self.target}/{self.recipe}/"
            f"{self.reg_tag()}/{hp}/seed{self.seed}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown run parameter(s): {sorted(unknown)}")
        return cls(**d)


RECORD_KEYS = ("run", "eval_dataset", "protocol", "metric", "val", "test", "extra")


def make_record(
    run: RunSpec | dict,
    *,
    eval_dataset: str,
    protocol: str,
    metric: str,
    test: float,
    val: float | None = None,
    extra: dict | None = None,
) -> dict:
    """Build a metric record. Accuracies are fractions in [0, 1]; other metrics in their unit."""
    run_d = run.to_dict() if isinstance(run, RunSpec) else dict(run)
    RunSpec.from_dict(run_d)  # validates
    for name, v in (("test", test), ("val", val)):
        if v is not None and not math.isfinite(float(v)):
            raise ValueError(f"metric record {metric}/{eval_dataset}: {name}={v} is not finite")
    return {
        "run": run_d,
        "eval_dataset": eval_dataset,
        "protocol": protocol,
        "metric": metric,
        "val": None if val is None else float(val),
        "test": float(test),
        "extra": dict(extra or {}),
    }


def write_record(path, record: dict) -> None:
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise ValueError(f"metric record misses keys {missing}")
    io.write_json(path, record)


def write_records(path, records: list[dict]) -> None:
    """One record as itself, several (a probe job over several eval datasets) as a JSON list
    (:func:`read_records` reads both)."""
    if len(records) == 1:
        write_record(path, records[0])
        return
    for rec in records:
        missing = [k for k in RECORD_KEYS if k not in rec]
        if missing:
            raise ValueError(f"metric record misses keys {missing}")
    io.write_json(path, records)


def read_records(paths) -> list[dict]:
    out = []
    for p in paths:
        rec = io.read_json(Path(p))
        if isinstance(rec, list):
            out.extend(rec)
        else:
            out.append(rec)
    return out


def run_params_and_final(run_dir) -> tuple[dict, dict]:
    """(RunSpec params from run.json, final.json) of a finished pretraining run."""
    run_dir = Path(run_dir)
    run_json, final_json = run_dir / "run.json", run_dir / "final.json"
    for p in (run_json, final_json):
        if not p.is_file():
            raise FileNotFoundError(
                f"{p} is missing: is {run_dir} a finished pretraining run "
                "(workflow_scripts/pretrain.py writes run.json and final.json)?"
            )
    params = RunSpec.from_dict(io.read_json(run_json)["params"]).to_dict()
    return params, io.read_json(final_json)


STRENGTH_KEYS = ("vcr_grad_ratio_median", "vcr_grad_ratio_median_first_epoch")


def run_strength(final: dict) -> dict:
    """How strongly VCR acted in a run (final.json: the median over sites of ||g_vcr|| /
    ||g_task||, last and first epoch), for a record's ``extra`` (empty without VCR)."""
    return {k: final[k] for k in STRENGTH_KEYS if final.get(k) is not None}


def classifier_record(run_dir, dataset: str | None = None) -> dict:
    """Table 3: the run's own classifier, from final.json (protocol ``classifier``, ``top1``);
    ``dataset`` defaults to the run's pretraining dataset. Here, not in vcr.metrics: it needs no
    torch, so its CLI is a 0.1 s process instead of ~3 s."""
    params, final = run_params_and_final(run_dir)
    if final.get("test_top1") is None:
        raise ValueError(
            f"{run_dir}/final.json has no test_top1 (SSL run or import-only run?): the "
            "classifier metric needs a supervised run"
        )
    return make_record(
        params,
        eval_dataset=dataset or params["dataset"],
        protocol="classifier",
        metric="top1",
        val=final.get("val_top1"),
        test=final["test_top1"],
        extra={"source": "final.json", **run_strength(final)},
    )
