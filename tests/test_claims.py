"""The claims ledger (vcr.claims): evidence, verdicts and the claims, on constructed records."""

from __future__ import annotations

import csv
import io as pyio
import math

import numpy as np
import pytest

from vcr import claims as C
from vcr.records import RunSpec, make_record


def test_verdict_follows_the_interval_and_the_paper_direction():
    ev = lambda lo, hi, n=3: C.Evidence((lo + hi) / 2, n, (lo, hi), 0.01, "paired")  # noqa: E731
    assert C.verdict(1, ev(0.5, 2.0)) == C.SUPPORTED
    assert C.verdict(-1, ev(0.5, 2.0)) == C.NOT_SUPPORTED
    assert C.verdict(1, ev(-2.0, -0.5)) == C.NOT_SUPPORTED
    assert C.verdict(-1, ev(-2.0, -0.5)) == C.SUPPORTED
    assert C.verdict(1, ev(-0.5, 2.0)) == C.INCONCLUSIVE
    assert C.verdict(1, C.Evidence(1.0, 1, None, None, "paired")) == C.INCONCLUSIVE  # n = 1
    assert C.verdict(1, None) == C.NOT_RUN
    with pytest.raises(ValueError):
        C.verdict(0, ev(0.5, 2.0))


def test_paired_evidence_is_the_t_interval_of_the_seed_differences():
    from scipy import stats

    ours = {0: 71.0, 1: 72.5, 2: 70.0}
    base = {0: 69.0, 1: 70.0, 2: 69.5, 3: 99.0}  # seed 3 has no partner: left out
    ev = C.difference_evidence(ours, base)
    d = np.array([2.0, 2.5, 0.5])
    assert ev.pairing == "paired" and ev.n == 3
    assert ev.mean == pytest.approx(d.mean())
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    assert ev.ci == pytest.approx((d.mean() - half, d.mean() + half))
    assert ev.p == pytest.approx(stats.ttest_rel([71.0, 72.5, 70.0], [69.0, 70.0, 69.5]).pvalue)


def test_one_baseline_value_gives_a_one_sample_comparison():
    from scipy import stats

    ev = C.difference_evidence({0: 71.0, 1: 72.0, 2: 73.0}, {0: 70.0})  # imported baseline
    assert ev.pairing == "one-sample" and ev.n == 3 and ev.mean == pytest.approx(2.0)
    assert ev.p == pytest.approx(stats.ttest_1samp([71.0, 72.0, 73.0], 70.0).pvalue)
    one = C.difference_evidence({0: 71.0}, {0: 70.0})
    assert one.n == 1 and one.ci is None and C.verdict(1, one) == C.INCONCLUSIVE


# --- the claims, from records -------------------------------------------------------------------
def _spec():
    match = {"method": "supervised", "arch": "mini_resnet", "recipe": "resnet32_lt"}
    return {
        "table": "table3",
        "scale": "mini",
        "rows": [
            {"key": "resnet32", "label": "ResNet-32", "match": {**match, "placement": "none"}},
            {
                "key": "resnet32_vcr",
                "label": "ResNet-32 (VCR)",
                "match": {**match, "placement": "blocks"},
            },
        ],
        "columns": [
            {
                "key": key,
                "label": key,
                "eval_dataset": "mini_objects_lt",
                "metric": "top1",
                "protocol": "classifier",
                "match": {"dataset": "mini_objects_lt", "target": target},
            }
            for key, target in (("cifar10_lt", "super"), ("cifar100_lt", "sub"))
        ],
    }


def _record(target, placement, seed, test, alpha=0.0, beta=0.0):
    run = RunSpec(
        scale="mini",
        method="supervised",
        arch="mini_resnet",
        dataset="mini_objects_lt",
        target=target,
        recipe="resnet32_lt",
        placement=placement,
        alpha=alpha,
        beta=beta,
        seed=seed,
    )
    return make_record(
        run,
        eval_dataset="mini_objects_lt",
        protocol="classifier",
        metric="top1",
        val=test,
        test=test,
    )


def test_table_claims_from_constructed_records():
    recs = []
    for s in range(3):
        # cifar10_lt: VCR +3 points on every seed (+- noise): supported (paper +1.6)
        recs.append(_record("super", "none", s, 0.50 + 0.01 * s))
        recs.append(_record("super", "blocks", s, 0.53 + 0.01 * s + 0.001 * s**2, 0.64, 0.04))
    # cifar100_lt: no VCR records at all -> "not run"
    recs += [_record("sub", "none", s, 0.2) for s in range(3)]
    claims = C.build_ledger([_spec()], recs, [])
    by_id = {c["claim_id"]: c for c in claims}
    c10 = by_id["table3/resnet32_vcr-resnet32/cifar10_lt"]
    assert c10["paper_delta"] == pytest.approx(71.2 - 69.6)
    assert c10["ours_delta"] == pytest.approx(3.0 + 0.1 * 5 / 3, abs=1e-9)
    assert c10["n"] == 3 and c10["pairing"] == "paired" and c10["verdict"] == C.SUPPORTED
    assert by_id["table3/resnet32_vcr-resnet32/cifar100_lt"]["verdict"] == C.NOT_RUN
    # Fig. 2 without two-moons files: not run
    assert by_id["figure2/largest_margin"]["verdict"] == C.NOT_RUN
    # rendering: every claim has a verdict, the CSV parses back
    md = C.render_markdown(claims, scale="mini", selection="per_cell")
    assert "not run: 2" in md and "supported: 1" in md
    rows = list(csv.DictReader(pyio.StringIO(C.render_csv(claims))))
    assert [r["verdict"] for r in rows] == [c["verdict"] for c in claims]


def test_a_vcr_loss_in_the_paper_direction_is_not_supported():
    recs = []
    for s in range(3):
        recs.append(_record("super", "none", s, 0.60 + 0.01 * s))
        recs.append(_record("super", "blocks", s, 0.50 + 0.012 * s, 0.64, 0.04))
    claim = C.build_ledger([_spec()], recs)[0]
    assert claim["verdict"] == C.NOT_SUPPORTED and claim["ours_delta"] < 0


def _moons(method, margins):
    return {"method": method, "seeds": list(range(len(margins))), "margins": np.array(margins)}


def test_margin_claim_compares_vcr_with_the_largest_other_method():
    results = [
        _moons("none", [0.10, 0.12, 0.11]),
        _moons("sd", [0.20, 0.21, 0.19]),
        _moons("vcr", [0.30, 0.33, 0.31]),
    ]
    c = C.margin_claim(results, "cifar")
    assert c["verdict"] == C.SUPPORTED and "sd" in c["detail"]
    assert c["ours_delta"] == pytest.approx(0.11333333, abs=1e-6)
    results[2] = _moons("vcr", [0.15, 0.16, 0.14])
    assert C.margin_claim(results, "cifar")["verdict"] == C.NOT_SUPPORTED
    results[2] = _moons("vcr", [0.25, 0.16, 0.22])
    assert C.margin_claim(results, "cifar")["verdict"] == C.INCONCLUSIVE


def test_best_row_claim_uses_the_mean_over_columns():
    spec = {
        "table": "table6",
        "scale": "mini",
        "rows": [
            {"key": k, "label": k, "match": {"placement": p}}
            for k, p in (("vcr1", "final"), ("vcr2", "blocks"))
        ],
        "columns": [{"key": "food101"}, {"key": "cars"}],
    }

    def cell(row, col, tests, paper):
        return {
            "row": row,
            "column": col,
            "status": "ok",
            "seeds": "0 1 2",
            "tests": tests,
            "paper": paper,
        }

    cells = [
        cell("vcr1", "food101", [60, 61, 62], 63.2),
        cell("vcr1", "cars", [40, 41, 42], 39.6),
        cell("vcr2", "food101", [64, 65, 66], 66.8),
        cell("vcr2", "cars", [44, 45, 47], 48.1),
    ]
    c = C.best_row_claim(spec, cells)
    assert "vcr2" in c["claim"] and c["verdict"] == C.SUPPORTED
    assert c["paper_delta"] == pytest.approx((66.8 + 48.1 - 63.2 - 39.6) / 2)
    cells[2]["status"] = "no records"
    assert C.best_row_claim(spec, cells)["verdict"] == C.NOT_RUN
