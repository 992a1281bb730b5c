"""The evaluation CLIs end to end on the mini data (vcr.data) and a mini backbone (vcr.models):
probe.py (every protocol, several eval datasets -> a list), collapse_metrics.py,
classifier_metric.py; valid records, cache reuse, errors raised before work is wasted."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vcr import io
from vcr.errors import ConfigError
from vcr.records import RECORD_KEYS, RunSpec, read_records

ROOT = Path(__file__).resolve().parents[1]


def load_cli(name):
    spec = importlib.util.spec_from_file_location(
        f"cli_{name}", ROOT / "workflow_scripts" / f"{name}.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two prepared mini datasets and a finished (untrained) supervised run."""
    from vcr.data import prepare_dataset
    from vcr.models import create_model, save_backbone

    tmp = tmp_path_factory.mktemp("eval")
    manifests = {}
    for name in ("mini_color", "mini_objects"):
        prepare_dataset(name, data_root=tmp / "raw", out_dir=tmp / "data" / name, seed=0)
        manifests[name] = str(tmp / "data" / name / "manifest.json")
    run = tmp / "run"
    torch.manual_seed(0)
    save_backbone(
        create_model("mini_resnet", num_classes=0), run / "backbone.pt", arch="mini_resnet"
    )
    spec = RunSpec("mini", "supervised", "mini_resnet", "mini_objects", "super", "mini_sup")
    io.write_json(run / "run.json", {"params": spec.to_dict()})
    io.write_json(run / "final.json", {"val_top1": 0.7, "test_top1": 0.65, "metric": "top1"})
    return {"tmp": tmp, "run": run, "manifests": manifests, "spec": spec}


def valid(rec, spec):
    assert set(RECORD_KEYS) <= set(rec)
    assert rec["run"] == spec.to_dict()
    assert 0.0 <= rec["test"] <= 1.0 and 0.0 <= rec["val"] <= 1.0
    return rec


def test_lbfgs_several_datasets_write_a_list_and_reuse_the_cache(world):
    probe = load_cli("probe")
    out, cache = world["tmp"] / "lbfgs.json", world["tmp"] / "feat"
    m = world["manifests"]
    argv = [
        "--run", str(world["run"]), "--protocol", "lbfgs",
        "--eval-dataset", "mini_color", "mini_objects",
        "--manifest", m["mini_color"], m["mini_objects"],
        "--out", str(out), "--feature-cache", str(cache), "--set", "num_lambdas=5",
    ]  # fmt: skip
    assert probe.main(argv) == 0
    recs = json.loads(out.read_text())
    assert isinstance(recs, list) and [r["eval_dataset"] for r in recs] == [
        "mini_color",
        "mini_objects",
    ]
    for r in recs:
        valid(r, world["spec"])
        assert r["protocol"] == "lbfgs" and r["metric"] == "top1"
        assert r["extra"]["best_lambda"] > 0 and len(r["extra"]["val_scores"]) == 5
    assert len(read_records([out])) == 2
    cached = sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*.pt"))
    assert cached == [
        f"{d}-default/{s}.pt"
        for d in ("mini_color", "mini_objects")
        for s in ("test", "train", "val")
    ]
    stamps = {p: p.stat().st_mtime_ns for p in cache.rglob("*.pt")}
    assert probe.main(argv) == 0  # second run: features come from the cache
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.pt")} == stamps
    assert json.loads(out.read_text())[0]["test"] == recs[0]["test"]


def test_mini_fast_path_equals_the_eval_transform(world):
    """At native size the cached features of the in-memory fast path are those of
    vcr.data.build_transform("eval") applied image by image."""
    from vcr.features import RunFeatures, extract_features

    feats = RunFeatures(world["run"], cache_dir=world["tmp"] / "unused", num_workers=0)
    ds, info, fast = feats.dataset("mini_color", "val", manifest=world["manifests"]["mini_color"])
    assert fast is not None and info["image_size"] == 32
    Xf, yf = extract_features(feats.backbone, ds, batch_size=64, array_normalize=fast)
    Xs, ys = extract_features(feats.backbone, ds, batch_size=64)
    assert torch.allclose(Xf, Xs, atol=1e-5) and torch.equal(yf, ys)


def test_adamw_subclass_probe_and_sgd(world):
    probe = load_cli("probe")
    m, run = world["manifests"]["mini_objects"], str(world["run"])
    out = world["tmp"] / "adamw.json"
    argv = ["--run", run, "--protocol", "adamw", "--eval-dataset", "mini_objects", "--manifest", m]
    assert probe.main([*argv, "--out", str(out), "--set", "epochs=2", "target=sub"]) == 0
    rec = valid(io.read_json(out), world["spec"])
    from vcr.data import dataset_info

    assert rec["protocol"] == "adamw" and rec["extra"]["target"] == "sub"
    assert rec["extra"]["num_classes"] == dataset_info(m, "sub")["num_classes"]
    assert rec["extra"]["config"]["epochs"] == 2
    out = world["tmp"] / "sgd.json"
    argv[3] = "sgd"
    assert probe.main([*argv, "--out", str(out), "--set", "epochs=2"]) == 0
    rec = valid(io.read_json(out), world["spec"])
    assert rec["protocol"] == "sgd" and rec["extra"]["config"]["schedule"] == "places205"


def test_finetune_cli(world):
    probe = load_cli("probe")
    out = world["tmp"] / "ft.json"
    argv = [
        "--run", str(world["run"]), "--protocol", "finetune", "--eval-dataset", "mini_color",
        "--manifest", world["manifests"]["mini_color"], "--out", str(out),
        "--set", "epochs=1", "batch_size=128",
    ]  # fmt: skip
    assert probe.main(argv) == 0
    rec = valid(io.read_json(out), world["spec"])
    assert rec["protocol"] == "finetune" and rec["extra"]["best_epoch"] == 1


def test_probe_errors_before_any_work(world, tmp_path):
    probe = load_cli("probe")
    run, m = str(world["run"]), world["manifests"]["mini_color"]
    base = ["--run", run, "--protocol", "lbfgs", "--eval-dataset", "mini_color"]
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError, match="lambda_gird"):
        probe.main([*base, "--manifest", m, "--out", str(tmp_path / "o.json"),
                    "--feature-cache", str(cache), "--set", "lambda_gird=simclr"])  # fmt: skip
    with pytest.raises(ConfigError, match="manifest"):
        probe.main([*base, "--manifest", m, m, "--out", str(tmp_path / "o.json")])
    with pytest.raises(FileNotFoundError, match="prepare_data.py"):
        probe.main(
            [*base, "--manifest", str(tmp_path / "no.json"), "--out", str(tmp_path / "o.json")]
        )
    with pytest.raises(FileNotFoundError, match="run.json"):
        probe.main(
            ["--run", str(tmp_path), *base[2:], "--manifest", m, "--out", str(tmp_path / "o.json")]
        )
    assert not cache.exists() and not (tmp_path / "o.json").exists()


def test_collapse_metrics_cli(world):
    cli = load_cli("collapse_metrics")
    out = world["tmp"] / "collapse"
    argv = [
        "--run", str(world["run"]), "--manifest", world["manifests"]["mini_objects"],
        "--out-dir", str(out), "--feature-cache", str(world["tmp"] / "feat"),
        "--set", "mine.steps=30", "mine.max_samples=300",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    recs = {m: io.read_json(out / f"{m}.json") for m in ("cdnv", "ncc", "mi")}
    for m, r in recs.items():
        assert set(RECORD_KEYS) <= set(r) and r["run"] == world["spec"].to_dict()
        assert r["protocol"] == "collapse" and r["metric"] == m
        assert r["val"] == 0.7  # final.json val_top1: the one selection rule applies
        assert r["eval_dataset"] == "mini_objects" and r["extra"]["target"] == "super"
    assert recs["cdnv"]["test"] > 0 and 0 <= recs["ncc"]["test"] <= 1
    assert recs["mi"]["extra"]["unit"] == "bits" and recs["mi"]["extra"]["n_eval"] == 60
    with pytest.raises(ConfigError, match="mine.stepz|stepz"):
        cli.main([*argv[:6], "--set", "mine.stepz=3"])
    with pytest.raises(ConfigError, match="splitt"):
        cli.main([*argv[:6], "--set", "splitt=val"])


def test_classifier_metric_cli_subprocess(world, tmp_path):
    out = tmp_path / "classifier.json"
    subprocess.run(
        [sys.executable, str(ROOT / "workflow_scripts" / "classifier_metric.py"),
         "--run", str(world["run"]), "--dataset", "cifar10_lt", "--out", str(out)],
        check=True, cwd=ROOT,
    )  # fmt: skip
    rec = valid(io.read_json(out), world["spec"])
    assert (rec["protocol"], rec["metric"], rec["val"], rec["test"]) == (
        "classifier",
        "top1",
        0.7,
        0.65,
    )
