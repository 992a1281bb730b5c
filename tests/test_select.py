"""The one selection rule (vcr.select): chosen on validation, reported on test."""

import random
import statistics

import pytest

from vcr.records import RunSpec, make_record
from vcr.select import SelectionError, group_records, select, select_row


def _rec(alpha, beta, lr, seed, val, test, **run_kw):
    run = RunSpec(
        scale="mini",
        method="supervised",
        arch="mini_resnet",
        dataset="mini_objects",
        target="default",
        recipe="mini",
        placement=run_kw.pop("placement", "blocks"),
        alpha=alpha,
        beta=beta,
        lr=lr,
        seed=seed,
        **run_kw,
    )
    return make_record(
        run, eval_dataset="mini_texture", protocol="lbfgs", metric="top1", val=val, test=test
    )


def _grid_records(rng, n_seeds=3):
    """Four (alpha, beta, lr) groups x seeds with random val/test."""
    recs = []
    for alpha in (0.16, 0.32):
        for beta in (0.01, 0.02):
            for seed in range(n_seeds):
                recs.append(_rec(alpha, beta, 0.0, seed, rng.random(), rng.random()))
    return recs


def _best_by_val(records):
    groups = group_records(records)
    return max(groups, key=lambda k: statistics.fmean(r["val"] for r in groups[k]))


def test_choice_is_argmax_of_mean_val_and_reports_that_groups_test():
    rng = random.Random(0)
    recs = _grid_records(rng)
    sel = select(recs)
    best = _best_by_val(recs)
    assert (sel.alpha, sel.beta, sel.lr) == best
    tests = [r["test"] for r in recs if (r["run"]["alpha"], r["run"]["beta"], 0.0) == best]
    assert sel.n == len(tests) == 3
    assert sel.mean == pytest.approx(statistics.fmean(tests))
    assert sel.std == pytest.approx(statistics.stdev(tests))  # sample std, ddof=1
    assert sel.n_groups == 4
    assert sel.seeds == (0, 1, 2)


def test_changing_test_values_never_changes_the_choice():
    rng = random.Random(1)
    recs = _grid_records(rng)
    chosen = select(recs).hparams
    for trial in range(50):
        shuffled = [dict(r) for r in recs]
        for r in shuffled:
            # adversarial: the groups not chosen get the best test numbers
            not_chosen = (r["run"]["alpha"], r["run"]["beta"]) != (chosen["alpha"], chosen["beta"])
            r["test"] = (10.0 if not_chosen else -10.0) * rng.random() + trial
        assert select(shuffled).hparams == chosen


def test_ties_go_to_the_first_group_in_sorted_order():
    recs = [
        _rec(0.32, 0.01, 0.0, 0, val=0.5, test=0.1),
        _rec(0.16, 0.02, 0.0, 0, val=0.5, test=0.9),
        _rec(0.16, 0.01, 0.0, 0, val=0.5, test=0.3),
    ]
    for order in (recs, recs[::-1]):
        sel = select(order)
        assert (sel.alpha, sel.beta) == (0.16, 0.01)


def test_single_seed_gives_no_std():
    sel = select([_rec(0.16, 0.01, 0.0, 0, val=0.4, test=0.7)])
    assert sel.n == 1 and sel.std is None and sel.mean == pytest.approx(0.7)


def test_val_none_allowed_only_for_one_group():
    one = [_rec(0.0, 0.0, 0.0, s, val=None, test=0.5 + s / 10, placement="none") for s in (0, 1)]
    sel = select(one)
    assert sel.val_mean is None and sel.n == 2
    two = [*one, _rec(0.16, 0.01, 0.0, 0, val=0.3, test=0.2, placement="none")]
    with pytest.raises(SelectionError, match="has no `val`"):
        select(two, where="table1/resnet50/food101")


def test_mixed_experiments_and_duplicate_seeds_are_errors():
    a = _rec(0.16, 0.01, 0.0, 0, val=0.4, test=0.7)
    b = _rec(0.16, 0.01, 0.0, 1, val=0.4, test=0.7, cov_scale="alg1")
    with pytest.raises(SelectionError, match="cov_scale"):
        select([a, b])
    with pytest.raises(SelectionError, match="duplicate seed"):
        select([a, dict(a)])


def test_no_records_is_none():
    assert select([]) is None


# --- per_row: one (alpha, beta, lr) per row -----------------------------------------------------
def _row_records(rng, columns=("a", "b", "c"), n_seeds=3):
    return {
        col: [
            {**r, "eval_dataset": col}
            for r in _grid_records(rng, n_seeds)  # same four groups in every column
        ]
        for col in columns
    }


def test_per_row_chooses_one_setting_on_the_mean_val_over_the_columns():
    rng = random.Random(2)
    by_col = _row_records(rng)
    sels = select_row(by_col)
    chosen = {(s.alpha, s.beta, s.lr) for s in sels.values()}
    assert len(chosen) == 1  # one setting for the whole row
    groups = {col: group_records(recs) for col, recs in by_col.items()}
    row_mean = {
        k: statistics.fmean(statistics.fmean(r["val"] for r in groups[col][k]) for col in by_col)
        for k in groups["a"]
    }
    assert chosen.pop() == max(row_mean, key=row_mean.get)
    for col, sel in sels.items():  # each column reports its own test of that setting
        recs = groups[col][(sel.alpha, sel.beta, sel.lr)]
        assert sel.mean == pytest.approx(statistics.fmean(r["test"] for r in recs))
        assert sel.val_mean == pytest.approx(statistics.fmean(r["val"] for r in recs))
        assert sel.tests == tuple(r["test"] for r in recs) and sel.n_groups == 4


def test_per_row_never_reads_test():
    """Adversarial test values (the settings not chosen get the best ones) never move it."""
    rng = random.Random(3)
    by_col = _row_records(rng)
    chosen = {col: s.hparams for col, s in select_row(by_col).items()}
    best = (chosen["a"]["alpha"], chosen["a"]["beta"])

    def test_value(r, trial):
        not_chosen = (r["run"]["alpha"], r["run"]["beta"]) != best
        return (10.0 if not_chosen else -10.0) * rng.random() + trial

    for trial in range(50):
        changed = {
            col: [{**r, "test": test_value(r, trial)} for r in recs] for col, recs in by_col.items()
        }
        assert {col: s.hparams for col, s in select_row(changed).items()} == chosen


def test_per_row_weighs_each_column_once_whatever_its_seeds():
    # column a: 3 seeds prefer setting 1, column b: 1 seed prefers setting 2 more strongly
    a = [_rec(0.16, 0.01, 0.0, s, val=0.6, test=0.0) for s in range(3)]
    a += [_rec(0.32, 0.01, 0.0, s, val=0.5, test=0.0) for s in range(3)]
    b = [_rec(0.16, 0.01, 0.0, 0, val=0.3, test=0.0), _rec(0.32, 0.01, 0.0, 0, val=0.5, test=0)]
    sels = select_row({"a": a, "b": b})  # means: setting 1 0.45, setting 2 0.5
    assert {(s.alpha, s.beta) for s in sels.values()} == {(0.32, 0.01)}
    assert sels["a"].n == 3 and sels["b"].n == 1


def test_per_row_only_settings_run_in_every_column_compete():
    a = [_rec(0.16, 0.01, 0.0, 0, val=0.1, test=0), _rec(0.32, 0.01, 0.0, 0, val=0.9, test=0)]
    b = [_rec(0.16, 0.01, 0.0, 0, val=0.2, test=0)]
    sels = select_row({"a": a, "b": b, "c": []})
    assert sels["a"].alpha == sels["b"].alpha == 0.16 and sels["a"].n_groups == 1
    assert sels["c"] is None
    with pytest.raises(SelectionError, match="share none"):
        select_row({"a": a[1:], "b": b})
