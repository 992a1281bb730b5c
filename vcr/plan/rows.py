"""How a design row becomes the rows of a table spec: a Table 1 baseline imported and/or trained
(``table1_baseline``), a VCR row under one or several gradient conventions (``cov_scales``).

Each variant is a spec row (key, label, ``match``, ``paper_key``: the paper's row it stands
beside) and the RunSpec fields it fixes (``init`` for a baseline, ``cov_scale`` for a VCR row).
With one variant a row keeps its design key, label and match, so scales that run one variant
render exactly as before.
"""

from __future__ import annotations

from vcr.errors import ConfigError
from vcr.names import TABLE1_BASELINES

# What a variant adds to its design row's label.
INIT_LABELS = {"torchvision": "(torchvision weights)", "scratch": "(trained here)"}
COV_SCALE_LABELS = {"eq2": "[eq. 2]", "alg1": "[Alg. 1]"}
BASELINE_INITS = {
    "torchvision_weights": ("torchvision",),
    "train": ("scratch",),
    "both": ("torchvision", "scratch"),
}


def table1_baseline(plan) -> str:
    mode = plan.sc.get("table1_baseline", "train")
    if mode not in TABLE1_BASELINES:
        raise ConfigError(
            f"scales.{plan.scale}.table1_baseline={mode!r}: expected one of {TABLE1_BASELINES}"
        )
    return mode


def cov_scales(plan, table: str) -> tuple[str, ...]:
    """The VCR gradient conventions a table's VCR rows run under (one row each)."""
    listed = (plan.sc.get("cov_scales") or {}).get(table)
    return tuple(listed) if listed else (plan.cov_scale,)


def row_variants(plan, table: str, row) -> list[tuple[dict, dict]]:
    """``[(spec row, fixed RunSpec fields)]`` of one design row at the plan's scale.

    A Table 1 baseline under ``table1_baseline: both`` becomes two rows, torchvision's weights
    (the paper's row, its key) and ours trained with the same recipe (``<key>_trained``); a VCR
    row of a table with several ``cov_scales`` one row per convention (``<key>_<cov_scale>``).
    """
    match = {
        "method": row.method,
        "arch": plan.map_arch(row.arch),
        "recipe": row.recipe,
        "placement": row.placement,
    }
    if row.pretrain_key is not None and plan.map_dataset(row.pretrain_key):
        match["dataset"] = plan.map_dataset(row.pretrain_key)[0]
    if row.placement == "none":
        mode = table1_baseline(plan) if row.baseline == "table1" else "train"
        inits = BASELINE_INITS[mode]
        if len(inits) == 1:
            return [({"key": row.key, "label": row.label, "match": match}, {"init": inits[0]})]
        return [
            (
                {
                    "key": row.key if init == "torchvision" else f"{row.key}_trained",
                    "label": f"{row.label} {INIT_LABELS[init]}",
                    "paper_key": row.key,
                    "match": {**match, "init": init},
                },
                {"init": init},
            )
            for init in inits
        ]
    conventions = cov_scales(plan, table)
    if len(conventions) == 1:
        return [
            ({"key": row.key, "label": row.label, "match": match}, {"cov_scale": conventions[0]})
        ]
    return [
        (
            {
                "key": f"{row.key}_{cs}",
                "label": f"{row.label} {COV_SCALE_LABELS[cs]}",
                "paper_key": row.key,
                "match": {**match, "cov_scale": cs},
            },
            {"cov_scale": cs},
        )
        for cs in conventions
    ]
