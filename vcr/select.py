"""The selection rules: choose alpha/beta/lr on validation, report test.

Two rules (config ``selection``, names in ``vcr.names.SELECTION_RULES``):

* ``per_cell`` (:func:`select`, the default): for one table cell (the metric records of one
  row x column), records are grouped by the run's ``(alpha, beta, lr)``; each group's ``val`` is
  averaged over its seeds; the group with the highest mean ``val`` is chosen (ties: the first
  group in ascending ``(alpha, beta, lr)`` order); the cell reports mean and sample standard
  deviation (ddof=1) of ``test`` over the chosen group's seeds, with n and the chosen
  hyperparameters. Each VCR cell picks the best of its 20-40 settings, while a baseline has one:
  the rule favours the VCR rows.
* ``per_row`` (:func:`select_row`): ONE ``(alpha, beta, lr)`` per table row, the group with the
  highest mean over the row's columns of the per-column seed-mean ``val`` (each column weighs
  the same, whatever its number of seeds). Only groups run in every column of the row that has
  records compete (a column whose runs have other seeds still counts once, through its own
  seed mean); a row whose columns share no group is an error. Each column then reports its
  ``test`` statistics for that group, as ``per_cell`` does.

``test`` is never read before the choice is made: ``_choose`` only sees the ``val`` values
(tests/test_select.py proves that changing test values never changes the choice, per rule).

Choices where the paper is silent:
- n = 1 gives ``std=None`` (rendered "–"), not 0: one seed says nothing about the spread.
- ``val=None`` (a run with no validation number, e.g. an imported baseline) is accepted only
  when the cell has a single (alpha, beta, lr) group, where there is nothing to choose.
- Records of one cell that differ in any other run parameter (placement, cov_scale, ...) or in
  protocol are an error: the table spec's ``match`` is too loose, and averaging them would mix
  experiments.
- Two records of the same run (same seed in one group) are an error, not silently averaged.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from vcr.errors import VCRError

HP_KEYS = ("alpha", "beta", "lr")


class SelectionError(VCRError, ValueError):
    """The records of one cell cannot be selected from (mixed experiments, missing val, ...)."""


@dataclass(frozen=True)
class Selection:
    """The outcome for one cell: the chosen group and its test statistics."""

    alpha: float
    beta: float
    lr: float
    mean: float  # mean of `test` over the chosen group's seeds
    std: float | None  # sample std (ddof=1); None when n == 1
    n: int
    val_mean: float | None  # mean `val` of the chosen group (None: single group without val)
    seeds: tuple[int, ...]
    n_groups: int  # how many (alpha, beta, lr) groups were compared
    run: dict = field(repr=False)  # the run params shared by the group (seed of the first)
    protocol: str | None = None
    tests: tuple[float, ...] = ()  # `test` per seed (order of `seeds`), for paired tests

    @property
    def hparams(self) -> dict:
        return {"alpha": self.alpha, "beta": self.beta, "lr": self.lr}


def _hp(record: dict) -> tuple[float, float, float]:
    run = record["run"]
    return tuple(float(run[k]) for k in HP_KEYS)


def _check_one_experiment(records: list[dict], where: str) -> None:
    """All records must come from one experiment up to (alpha, beta, lr, seed)."""
    ignore = {*HP_KEYS, "seed"}
    keys = sorted({k for r in records for k in r["run"]} - ignore)
    for k in keys:
        values = {repr(r["run"].get(k)) for r in records}
        if len(values) > 1:
            raise SelectionError(
                f"{where}: records differ in run parameter {k!r} ({sorted(values)}); "
                "make the table row's `match` name it"
            )
    protocols = {r.get("protocol") for r in records}
    if len(protocols) > 1:
        raise SelectionError(f"{where}: records mix protocols {sorted(map(str, protocols))}")


def group_records(records: list[dict]) -> dict[tuple[float, float, float], list[dict]]:
    """Records by ``(alpha, beta, lr)``, groups in ascending key order, seeds sorted."""
    groups: dict[tuple[float, float, float], list[dict]] = {}
    for r in records:
        groups.setdefault(_hp(r), []).append(r)
    return {k: sorted(groups[k], key=lambda r: int(r["run"]["seed"])) for k in sorted(groups)}


def _choose(val_by_group: dict[tuple, list], where: str) -> tuple[tuple, float | None]:
    """Argmax of mean val; sees only ``val`` values (never test). Ties: first in sorted order."""
    keys = list(val_by_group)
    if len(keys) == 1:
        vals = val_by_group[keys[0]]
        if any(v is None for v in vals):
            return keys[0], None
        return keys[0], statistics.fmean(vals)
    best_key, best_val = None, -math.inf
    for k in keys:  # ascending order, strict ">" keeps the first of equals
        vals = val_by_group[k]
        if any(v is None for v in vals):
            raise SelectionError(
                f"{where}: run alpha={k[0]} beta={k[1]} lr={k[2]} has no `val`, but "
                f"{len(keys)} (alpha, beta, lr) groups must be compared on validation"
            )
        m = statistics.fmean(vals)
        if not math.isfinite(m):
            raise SelectionError(f"{where}: non-finite val {vals} at alpha/beta/lr={k}")
        if m > best_val:
            best_key, best_val = k, m
    return best_key, best_val


def _cell_groups(records: list[dict], where: str) -> dict[tuple, list[dict]]:
    """The checked ``(alpha, beta, lr)`` groups of one cell's records."""
    _check_one_experiment(records, where)
    groups = group_records(records)
    for k, recs in groups.items():
        seeds = [int(r["run"]["seed"]) for r in recs]
        if len(set(seeds)) != len(seeds):
            raise SelectionError(
                f"{where}: duplicate seed(s) in alpha/beta/lr={k}: {seeds} "
                "(the same run's record given twice?)"
            )
    return groups


def _summary(key: tuple, chosen: list[dict], val_mean, n_groups: int) -> Selection:
    """The chosen group's test statistics (the only place `test` is read)."""
    tests = [float(r["test"]) for r in chosen]
    n = len(tests)
    return Selection(
        alpha=key[0],
        beta=key[1],
        lr=key[2],
        mean=statistics.fmean(tests),
        std=statistics.stdev(tests) if n > 1 else None,
        n=n,
        val_mean=val_mean,
        seeds=tuple(int(r["run"]["seed"]) for r in chosen),
        n_groups=n_groups,
        run=dict(chosen[0]["run"]),
        protocol=chosen[0].get("protocol"),
        tests=tuple(tests),
    )


def select(records: list[dict], *, where: str = "cell") -> Selection | None:
    """Apply the ``per_cell`` rule to one cell's records; None when there are no records.

    ``where`` names the cell in error messages (e.g. ``"table1/resnet50/food101"``).
    """
    records = list(records)
    if not records:
        return None
    groups = _cell_groups(records, where)
    val_by_group = {k: [r["val"] for r in recs] for k, recs in groups.items()}
    key, val_mean = _choose(val_by_group, where)
    # Only now, after the choice, is `test` read.
    return _summary(key, groups[key], val_mean, len(groups))


def select_row(
    records_by_column: dict[str, list[dict]], *, where: str = "row"
) -> dict[str, Selection | None]:
    """Apply the ``per_row`` rule to one row: ``{column: records}`` -> ``{column: Selection}``
    (None for a column without records), every column with the same ``(alpha, beta, lr)``."""
    groups_by_col = {
        col: _cell_groups(list(recs), f"{where}/{col}")
        for col, recs in records_by_column.items()
        if recs
    }
    out: dict[str, Selection | None] = {col: None for col in records_by_column}
    if not groups_by_col:
        return out
    common = set.intersection(*(set(g) for g in groups_by_col.values()))
    if not common:
        raise SelectionError(
            f"{where}: per_row selection needs an (alpha, beta, lr) run in every column, but "
            f"columns {sorted(groups_by_col)} share none"
        )
    # One list of values per group: each column's seed-mean val (None if any seed lacks val).
    val_by_group = {}
    for k in sorted(common):
        per_col = []
        for groups in groups_by_col.values():
            vals = [r["val"] for r in groups[k]]
            per_col.append(None if any(v is None for v in vals) else statistics.fmean(vals))
        val_by_group[k] = per_col
    key, _ = _choose(val_by_group, where)
    # Only now, after the choice, is `test` read. Each cell shows its own column's mean val.
    for (col, groups), col_val in zip(groups_by_col.items(), val_by_group[key]):
        out[col] = _summary(key, groups[key], col_val, len(common))
    return out
