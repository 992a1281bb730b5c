"""probe_in_pretrain (vcr/probe_staging.py): a pretraining job that probes its run itself hands
its probe job records identical (but for the wall time) to the ones that job computes on its own, and a probe job
never takes records made for other arguments, another backbone or other code."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record_helpers import without_timings  # noqa: E402

from vcr import probe_staging  # noqa: E402

PROBE_SETS = ["num_lambdas=3", "tol=0.001"]
# a record with every key vcr.records.write_records checks
RECORD = {"run": {}, "protocol": "lbfgs", "metric": "top1", "val": 0.5, "test": 0.5, "extra": {}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One finished mini run whose pretraining job probed it (lbfgs on mini_color) and staged
    the records, as the pretrain rule runs it with probe_in_pretrain."""
    import json

    from vcr.data import prepare_dataset
    from workflow_scripts import pretrain

    root = tmp_path_factory.mktemp("staging")
    man = {
        name: str(prepare_dataset(name, data_root=root / "raw", out_dir=root / name))
        for name in ("mini_objects", "mini_color")
    }
    out = root / "runs" / "r"
    probe = {
        "protocol": "lbfgs", "datasets": ["mini_color"], "manifests": [man["mini_color"]],
        "settings": PROBE_SETS, "feature_cache": str(root / "features"), "device": "cpu",
        "out": str(out / "eval" / "lbfgs-mini_color.json"),
    }  # fmt: skip
    argv = [
        f"--out={out}", f"--manifest={man['mini_objects']}", "--set", "epochs=1",
        "warmup_epochs=0", "--scale=mini", "--method=supervised", "--arch=mini_convnext",
        "--dataset=mini_objects", "--target=super", "--recipe=mini_study", "--placement=blocks",
        "--alpha=0.16", "--beta=0.04", "--seed=0", "--device=cpu", "--threads=1",
        f"--then-probe={json.dumps([probe])}",
    ]  # fmt: skip
    assert pretrain.main(argv) == 0
    return out, probe


def _probe_argv(probe, out, feature_cache):
    return [
        f"--run={Path(probe['out']).parents[1]}", f"--protocol={probe['protocol']}",
        "--eval-dataset", *probe["datasets"], "--manifest", *probe["manifests"],
        "--set", *probe["settings"], f"--feature-cache={feature_cache}", f"--out={out}",
        "--device=cpu", "--threads=1",
    ]  # fmt: skip


def test_the_probe_job_takes_records_identical_to_its_own(run, tmp_path, capsys):
    from vcr import io
    from workflow_scripts import probe as probe_cli

    out, probe = run
    staged = probe_staging.staged_path(probe["out"])
    assert staged.is_file()
    backbone = out / "backbone.pt"
    st = backbone.stat()  # Snakemake touches a finished job's outputs: a new mtime is no change
    os.utime(backbone, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert probe_cli.main(_probe_argv(probe, probe["out"], probe["feature_cache"])) == 0
    assert not staged.exists()  # taken once
    assert "staged for this job" in capsys.readouterr().out
    # the same job on its own, from scratch (its own feature cache, no staged records)
    alone = tmp_path / "eval" / "lbfgs-mini_color.json"
    assert probe_cli.main(_probe_argv(probe, alone, tmp_path / "features")) == 0
    assert without_timings(io.read_json(probe["out"])) == without_timings(io.read_json(alone))


@pytest.mark.parametrize("change", ["settings", "backbone", "code"])
def test_staged_records_are_never_taken_for_another_job(run, tmp_path, monkeypatch, change):
    from vcr import io

    out, probe = run
    call = {**probe, "out": str(tmp_path / "eval" / "lbfgs-mini_color.json")}
    record = {"key": probe_staging.probe_key(out, call), "records": [{"test": 0.5}]}
    io.write_json(probe_staging.staged_path(call["out"]), record)
    backbone = out / "backbone.pt"
    weights = backbone.read_bytes()
    try:
        if change == "settings":
            call["settings"] = ["num_lambdas=4", "tol=0.001"]
        elif change == "backbone":  # retrained since
            backbone.write_bytes(weights + b"\0")
        else:
            monkeypatch.setattr(probe_staging, "_code_fingerprint", lambda: "other code")
        assert probe_staging.take_staged(out, call) is False
    finally:
        backbone.write_bytes(weights)
    assert not Path(call["out"]).exists()
    assert not probe_staging.staged_path(call["out"]).exists()


def test_staged_records_for_this_job_are_taken(run, tmp_path):
    from vcr import io

    out, probe = run
    call = {**probe, "out": str(tmp_path / "eval" / "lbfgs-mini_color.json")}
    records = [{**RECORD, "eval_dataset": "mini_color"}]
    staged = {"key": probe_staging.probe_key(out, call), "records": records}
    io.write_json(probe_staging.staged_path(call["out"]), staged)
    assert probe_staging.take_staged(out, call) is True
    assert io.read_json(call["out"]) == records[0]
    assert not probe_staging.staged_path(call["out"]).exists()
