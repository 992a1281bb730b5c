"""The claims ledger: every claim of the paper, the paper's own delta, ours, and a verdict.

``results/claims.md`` (and ``.csv``) is rendered by the pipeline's ``claims_ledger`` rule from
the metric records, the table specs and the two-moons files of one scale; nothing is typed.
One row per claim:

* Tables 1-4: "VCR moves X in the paper's direction", one row per (VCR row, its baseline row,
  column). A VCR row's baseline is the row with the same method, architecture and recipe and no
  VCR (at the paper scale Table 1 has two: torchvision's weights and ours, trained like the VCR
  row; each pairing is its own claim). The direction is the sign of the paper's delta, so a
  column where the paper's VCR number is lower (e.g. Table 4, SimCLR Aircraft) is tested as
  "lower".
* Table 5: CDNV, NCC and MI, each in the direction of the paper's numbers (CDNV 0.28 -> 0.56
  up, NCC 0.99 -> 0.81 down, MI 2.8 -> 4.6 up: the text's "lower neural collapse ... more
  information").
* Table 6: the placement with the best mean over the columns (the paper's: VCR2, every block).
* Fig. 2: VCR has the largest two-moons margin of the six methods (the paper gives no number).

Ours: the cells of the tables under the configured selection rule (``vcr.select``), so the
ledger says what the published tables say. Evidence per claim: the difference (VCR minus
baseline, in the table's unit) per seed, paired by seed when both sides have two or more seeds;
a one-sample comparison against the baseline's single value when it has one (an imported
baseline); its mean, n, and the two-sided 95% Student-t confidence interval and p-value.

Verdict (per claim, no correction for the many claims; read a lone "supported" among ~60 rows
with that in mind):

* ``not run``: a cell the claim needs has no records at this scale;
* ``supported``: the 95% CI lies entirely on the paper's side of 0;
* ``not supported``: the 95% CI lies entirely on the other side;
* ``inconclusive``: the CI contains 0, or n < 2 (no spread to test with).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from vcr import io
from vcr.errors import ConfigError

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_RUN = (
    "supported",
    "not supported",
    "inconclusive",
    "not run",
)
VERDICTS = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_RUN)
BASELINE_KEYS = ("method", "arch", "recipe")  # a VCR row's baseline shares these
CSV_COLUMNS = (
    "claim_id", "source", "claim", "direction", "paper_delta", "scale", "ours_delta", "n",
    "pairing", "ci_low", "ci_high", "p_value", "verdict", "detail",
)  # fmt: skip


@dataclass(frozen=True)
class Evidence:
    """A difference measured over seeds (or against one baseline value)."""

    mean: float | None
    n: int
    ci: tuple[float, float] | None
    p: float | None
    pairing: str  # paired | one-sample | none


def difference_evidence(ours: dict[int, float], base: dict[int, float]) -> Evidence:
    """``ours - base`` from per-seed values: paired by seed when both sides have >= 2 seeds,
    against the single value when one side has one; 95% t interval and two-sided p."""
    if not ours or not base:
        return Evidence(None, 0, None, None, "none")
    if len(base) == 1:
        (b,) = base.values()
        return _t_evidence([v - b for v in ours.values()], "one-sample")
    if len(ours) == 1:
        (o,) = ours.values()
        return _t_evidence([o - v for v in base.values()], "one-sample")
    common = sorted(set(ours) & set(base))
    return _t_evidence([ours[s] - base[s] for s in common], "paired")


def _t_evidence(diffs: list[float], pairing: str) -> Evidence:
    from scipy import stats

    n = len(diffs)
    if n == 0:
        return Evidence(None, 0, None, None, pairing)
    mean = statistics.fmean(diffs)
    if n < 2:
        return Evidence(mean, n, None, None, pairing)
    sd = statistics.stdev(diffs)
    if sd == 0:  # every seed moved by the same amount: no spread, the sign is the evidence
        return Evidence(mean, n, (mean, mean), 0.0 if mean else 1.0, pairing)
    se = sd / math.sqrt(n)
    half = float(stats.t.ppf(0.975, n - 1)) * se
    p = float(2 * stats.t.sf(abs(mean / se), n - 1))
    return Evidence(mean, n, (mean - half, mean + half), p, pairing)


def verdict(direction: int, ev: Evidence | None) -> str:
    """The ledger's verdict for a claim that the difference has sign ``direction`` (+1 / -1)."""
    if direction not in (1, -1):
        raise ValueError(f"direction={direction!r}: expected +1 or -1")
    if ev is None or ev.mean is None:
        return NOT_RUN
    if ev.n < 2 or ev.ci is None:
        return INCONCLUSIVE
    lo, hi = (direction * ev.ci[0], direction * ev.ci[1])
    lo, hi = min(lo, hi), max(lo, hi)
    if lo > 0:
        return SUPPORTED
    if hi < 0:
        return NOT_SUPPORTED
    return INCONCLUSIVE


# ---------------------------------------------------------------------------------------------
# The claims
# ---------------------------------------------------------------------------------------------
def _per_seed(cell: dict) -> dict[int, float]:
    if cell is None or cell.get("status") != "ok":
        return {}
    seeds = [int(s) for s in str(cell["seeds"]).split()]
    return dict(zip(seeds, cell["tests"]))


def _claim(cid, source, text, direction, paper_delta, scale, ev, detail=""):
    v = verdict(direction, ev)
    return {
        "claim_id": cid,
        "source": source,
        "claim": text,
        "direction": "higher" if direction > 0 else "lower",
        "paper_delta": paper_delta,
        "scale": scale,
        "ours_delta": None if ev is None else ev.mean,
        "n": 0 if ev is None else ev.n,
        "pairing": "none" if ev is None else ev.pairing,
        "ci_low": None if ev is None or ev.ci is None else ev.ci[0],
        "ci_high": None if ev is None or ev.ci is None else ev.ci[1],
        "p_value": None if ev is None else ev.p,
        "verdict": v,
        "detail": detail,
    }


def _is_vcr(row: dict) -> bool:
    return row["match"].get("placement", "none") != "none"


def table_claims(spec: dict, cells: list[dict]) -> list[dict]:
    """Tables 1-5: one claim per (VCR row, baseline row, column) with a paper delta."""
    table, scale = spec["table"], spec.get("scale")
    by = {(c["row"], c["column"]): c for c in cells}
    rows = spec["rows"]
    out = []
    for vrow in (r for r in rows if _is_vcr(r)):
        bases = [
            b
            for b in rows
            if not _is_vcr(b)
            and all(b["match"].get(k) == vrow["match"].get(k) for k in BASELINE_KEYS)
        ]
        for brow in bases:
            for col in spec["columns"]:
                vc, bc = by[(vrow["key"], col["key"])], by[(brow["key"], col["key"])]
                if vc["paper"] is None or bc["paper"] is None:
                    continue
                paper_delta = vc["paper"] - bc["paper"]
                if paper_delta == 0:
                    continue  # the paper claims no change in this column
                direction = 1 if paper_delta > 0 else -1
                ours, base = _per_seed(vc), _per_seed(bc)
                ev = difference_evidence(ours, base) if ours and base else None
                text = (
                    f"{vrow.get('label', vrow['key'])} vs {brow.get('label', brow['key'])}: "
                    f"{col.get('label', col['key'])} {'higher' if direction > 0 else 'lower'}"
                )
                detail = ""
                if vc.get("eval_dataset") and scale == "mini":
                    detail = f"stand-in {vc['eval_dataset']}"
                out.append(
                    _claim(
                        f"{table}/{vrow['key']}-{brow['key']}/{col['key']}",
                        table,
                        text,
                        direction,
                        paper_delta,
                        scale,
                        ev,
                        detail,
                    )
                )
    return out


def best_row_claim(spec: dict, cells: list[dict]) -> dict:
    """Table 6: the row with the best mean over the columns is the paper's best one."""
    table, scale = spec["table"], spec.get("scale")
    by = {(c["row"], c["column"]): c for c in cells}
    cols = [c["key"] for c in spec["columns"]]
    keys = [r["key"] for r in spec["rows"]]
    label = {r["key"]: r.get("label", r["key"]) for r in spec["rows"]}
    paper_means = {
        k: statistics.fmean(by[(k, c)]["paper"] for c in cols)
        for k in keys
        if all(by[(k, c)]["paper"] is not None for c in cols)
    }
    best = max(paper_means, key=paper_means.get)
    runner = max((k for k in paper_means if k != best), key=paper_means.get)
    text = f"{label[best]} has the best mean over {', '.join(cols)}"
    cid = f"{table}/best_row"
    # ours: per seed, the mean over the columns (seeds run in every column)
    per_row = {}
    for k in keys:
        seeds = [_per_seed(by[(k, c)]) for c in cols]
        if any(not s for s in seeds):
            continue
        common = sorted(set.intersection(*(set(s) for s in seeds)))
        if common:
            per_row[k] = {s: statistics.fmean(d[s] for d in seeds) for s in common}
    if best not in per_row or len(per_row) < 2:
        return _claim(cid, table, text, 1, paper_means[best] - paper_means[runner], scale, None)
    means = {k: statistics.fmean(v.values()) for k, v in per_row.items()}
    ours_best = max(means, key=means.get)
    rival = max((k for k in means if k != best), key=means.get)
    ev = difference_evidence(per_row[best], per_row[rival])
    detail = f"ours best: {label[ours_best]}; compared with {label[rival]}; means " + ", ".join(
        f"{label[k]} {means[k]:.2f}" for k in keys if k in means
    )
    return _claim(cid, table, text, 1, paper_means[best] - paper_means[runner], scale, ev, detail)


def margin_claim(results: list[dict], scale: str | None, method: str = "vcr") -> dict:
    """Fig. 2: ``method`` has the largest two-moons margin (paired by seed vs the runner-up)."""
    text = "VCR gives the largest two-moons margin of the six methods"
    cid = "figure2/largest_margin"
    per = {}
    for r in results:
        per[r["method"]] = {
            int(s): float(m) for s, m in zip(r["seeds"], r["margins"]) if math.isfinite(float(m))
        }
    if method not in per or len(per) < 2:
        return _claim(cid, "figure2", text, 1, None, scale, None, "qualitative in the paper")
    means = {k: statistics.fmean(v.values()) for k, v in per.items() if v}
    rival = max((k for k in means if k != method), key=means.get)
    ev = difference_evidence(per[method], per[rival])
    detail = (
        "qualitative in the paper (no number); VCR minus the largest other, "
        f"{rival}; means " + ", ".join(f"{k} {v:.3f}" for k, v in means.items())
    )
    return _claim(cid, "figure2", text, 1, None, scale, ev, detail)


def build_ledger(
    specs: list[dict],
    records: list[dict],
    two_moons: list[dict] | None = None,
    *,
    selection: str = "per_cell",
    numbers: dict | None = None,
) -> list[dict]:
    """Every claim, in paper order (Tables 1-6, then Fig. 2)."""
    from vcr.tables.render import build_cells

    scales = {s.get("scale") for s in specs}
    if len(scales) > 1:
        raise ConfigError(f"claims: table specs of several scales {sorted(map(str, scales))}")
    scale = scales.pop() if scales else None
    claims = []
    for spec in sorted(specs, key=lambda s: s["table"]):
        cells = build_cells(spec, records, numbers, selection)
        if any(_is_vcr(r) for r in spec["rows"]) and not all(_is_vcr(r) for r in spec["rows"]):
            claims += table_claims(spec, cells)
        else:
            claims.append(best_row_claim(spec, cells))
    claims.append(margin_claim(two_moons or [], scale))
    return claims


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
def _num(x, digits=2, sign=False) -> str:
    if x is None:
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _p(p) -> str:
    if p is None:
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def render_markdown(claims: list[dict], *, scale: str | None, selection: str) -> str:
    from tabulate import tabulate

    counts = {v: sum(c["verdict"] == v for c in claims) for v in VERDICTS}
    rows = []
    for c in claims:
        ours = "not run"
        if c["ours_delta"] is not None:
            ci = (
                f" [{_num(c['ci_low'], sign=True)}, {_num(c['ci_high'], sign=True)}]"
                if c["ci_low"] is not None
                else ""
            )
            ours = f"{_num(c['ours_delta'], sign=True)}{ci}"
        rows.append(
            [
                c["claim"],
                _num(c["paper_delta"], sign=True),
                ours,
                c["n"] or "–",
                c["pairing"] if c["ours_delta"] is not None else "–",
                _p(c["p_value"]),
                c["verdict"],
                c["detail"],
            ]
        )
    headers = [
        "claim",
        "paper Δ",
        f"ours Δ [95% CI] ({scale})",
        "n",
        "pairing",
        "p",
        "verdict",
        "note",
    ]
    body = tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True)
    other = [s for s in ("mini", "cifar", "paper") if s != scale]
    return (
        f"### Claims ledger ({scale} scale)\n\n"
        "Every claim of the paper against this pipeline's records (vcr/claims.py; rendered by "
        "the `claims_ledger` rule, target `claims`; never typed). Δ = VCR minus baseline in the table's unit "
        "(accuracy points, or the metric's own unit for Table 5), per seed, paired by seed "
        "(one-sample against an imported baseline's single value); 95% Student-t interval; "
        "two-sided p. Verdict: supported = the interval lies on the paper's side of 0, not "
        "supported = on the other side, inconclusive = it contains 0 or n < 2, not run = a "
        "cell has no records at this scale. No correction for the number of claims. "
        f"Cells as in the published tables (selection={selection}). "
        f"Scales {', '.join(other)}: not run in this ledger (each scale's pipeline renders "
        "its own)."
        + (
            " Mini-scale numbers come from stand-in data and tiny models: they test the "
            "chain, not the paper."
            if scale == "mini"
            else ""
        )
        + "\n\n"
        + ", ".join(f"{v}: {counts[v]}" for v in VERDICTS)
        + f" (of {len(claims)} claims)\n\n{body}\n"
    )


def render_csv(claims: list[dict]) -> str:
    import pandas as pd

    df = pd.DataFrame(claims, columns=list(CSV_COLUMNS))
    df["n"] = df["n"].astype("Int64")
    for col in ("paper_delta", "ours_delta", "ci_low", "ci_high", "p_value"):
        df[col] = df[col].astype(float).round(6)
    return df.to_csv(index=False)


def write_ledger(claims: list[dict], md_path, csv_path, *, scale, selection) -> None:
    """Both files, built before the first write."""
    md = render_markdown(claims, scale=scale, selection=selection)
    csv = render_csv(claims)
    io.write_text(md_path, md)
    io.write_text(csv_path, csv)
