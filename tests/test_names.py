"""One definition of each name list (vcr.names): the registries, argparse choices, wildcard
constraints and schema enums are built from it or agree with it."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
from pathlib import Path

import yaml

from vcr import names

ROOT = Path(__file__).resolve().parents[1]


def _schema(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def _choices(parser: argparse.ArgumentParser, dest: str):
    return next(a.choices for a in parser._actions if a.dest == dest)


def _script_parser(name: str, builder: str = "main"):
    """The argparse parser a workflow script builds (captured without running it)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "workflow_scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    captured = {}
    original = argparse.ArgumentParser.parse_args

    def capture(self, *a, **k):
        captured["parser"] = self
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = capture
    try:
        getattr(mod, builder)([])
    except SystemExit:
        pass
    finally:
        argparse.ArgumentParser.parse_args = original
    return captured["parser"]


def test_registries_are_keyed_by_the_name_lists():
    from vcr.figures import METHOD_ORDER
    from vcr.probes import PROTOCOLS
    from vcr.two_moons import METHOD_OVERRIDES

    assert tuple(PROTOCOLS) == names.PROBE_PROTOCOLS
    assert tuple(METHOD_OVERRIDES) == names.TWO_MOONS_METHODS == METHOD_ORDER
    from vcr.select import __doc__ as select_doc

    assert all(f"``{rule}``" in select_doc for rule in names.SELECTION_RULES)


def test_cli_choices_come_from_the_name_lists():
    trainer = _script_parser("pretrain")
    assert tuple(_choices(trainer, "placement")) == names.PLACEMENTS
    assert tuple(_choices(trainer, "method")) == names.PRETRAIN_METHODS
    assert tuple(_choices(trainer, "cov_scale")) == names.COV_SCALES
    assert tuple(_choices(trainer, "init")) == names.RUN_INITS
    assert tuple(_choices(_script_parser("render_table"), "selection")) == names.SELECTION_RULES
    assert tuple(_choices(_script_parser("claims"), "selection")) == names.SELECTION_RULES
    assert tuple(_choices(_script_parser("probe"), "protocol")) == names.PROBE_PROTOCOLS
    assert tuple(_choices(_script_parser("two_moons"), "method")) == names.TWO_MOONS_METHODS


def test_snakefile_wildcards_are_built_from_the_name_lists():
    text = (ROOT / "Snakefile").read_text()
    assert "protocol=names.regex(names.PROBE_PROTOCOLS)" in text
    assert "method=names.regex(names.TWO_MOONS_METHODS)" in text
    assert "table=names.regex(names.TABLES)" in text
    rx = re.compile(f"^(?:{names.regex(names.PLACEMENTS)})$")
    assert all(rx.match(p) for p in names.PLACEMENTS) and not rx.match("blocks downsample")


def test_config_schema_enums_match_the_name_lists():
    schema = _schema("config.schema.yaml")
    props = schema["properties"]
    assert tuple(props["scale"]["enum"]) == names.SCALES
    assert set(props["placement"]["enum"]) == set(names.PLACEMENTS) - {"none"}
    assert tuple(props["cov_scale"]["enum"]) == names.COV_SCALES
    assert tuple(props["selection"]["enum"]) == names.SELECTION_RULES
    block = schema["definitions"]["scale_block"]["properties"]
    assert tuple(block["table1_baseline"]["enum"]) == names.TABLE1_BASELINES
    (cs,) = block["cov_scales"]["patternProperties"].values()
    assert tuple(cs["items"]["enum"]) == names.COV_SCALES
    assert tuple(block["two_moons"]["properties"]["methods"]["items"]["enum"]) == (
        names.TWO_MOONS_METHODS
    )
    proto = block["protocols"]["patternProperties"]
    (pattern,) = proto
    assert pattern == "^(" + "|".join(names.PROBE_PROTOCOLS) + ")$"
    assert tuple(proto[pattern]["enum"]) == names.PROBE_PROTOCOLS


def test_design_schema_enums_match_the_name_lists():
    d = _schema("vcr/design.schema.yaml")["definitions"]
    assert tuple(d["row"]["properties"]["method"]["enum"]) == names.PRETRAIN_METHODS
    assert set(d["row"]["properties"]["placement"]["enum"]) == {*names.PLACEMENTS, "@vcr"}
    protocols = d["column"]["properties"]["protocol"]["enum"]
    assert tuple(protocols) == (*names.PROBE_PROTOCOLS, *names.RUN_MEASUREMENTS)
    assert tuple(d["column"]["properties"]["metric"]["enum"]) == names.COLLAPSE_METRICS
    fig = _schema("vcr/design.schema.yaml")["properties"]["figure2"]
    assert tuple(fig["properties"]["methods"]["items"]["enum"]) == names.TWO_MOONS_METHODS


def test_the_design_and_the_data_agree_on_metrics():
    from vcr.data.transfer import TRANSFER
    from vcr.plan.jobs import metric_of

    for name, entry in TRANSFER.items():
        assert entry[4] == metric_of(name), name


def test_the_paper_grid_is_defined_once():
    from vcr.plan import load_design

    design = load_design()
    assert design.alphas == (1.28, 0.64, 0.32, 0.16)
    assert design.betas == (0.16, 0.08, 0.04, 0.02, 0.01)
    assert design.lrs == (0.016, 0.008)
    for path in (ROOT / "vcr").rglob("*.py"):  # no second copy of the grid in the code
        assert "1.28, 0.64, 0.32, 0.16" not in path.read_text(), path


def test_no_module_redefines_a_name_list():
    """Each name list is written once, in vcr/names.py: a tuple literal equal to one of them
    anywhere else in vcr/ or workflow_scripts/ is a second definition that can drift."""
    lists = {
        k: v
        for k, v in vars(names).items()
        if k.isupper()
        and isinstance(v, tuple)
        and len(v) >= 2
        and all(isinstance(x, str) for x in v)
    }
    found = []
    for path in [*(ROOT / "vcr").rglob("*.py"), *(ROOT / "workflow_scripts").glob("*.py")]:
        if path.name == "names.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Tuple) and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts
            ):
                value = tuple(e.value for e in node.elts)
                found += [
                    f"{path.relative_to(ROOT)}:{node.lineno} {k}"
                    for k, v in lists.items()
                    if v == value
                ]
    assert not found, f"name lists redefined outside vcr/names.py: {found}"
