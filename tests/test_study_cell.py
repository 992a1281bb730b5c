"""A study cell (vcr.study_cell, rule study_cell) writes what the pretrain and probe CLIs write,
one process per job: the same run folders, weights and probe records, bit for bit."""

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record_helpers import without_timings  # noqa: E402

from vcr.records import RunSpec  # noqa: E402
from vcr.study_cell import run_cell  # noqa: E402

PROBE_SETS = ["num_lambdas=3", "tol=0.001"]


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    from vcr.data import prepare_dataset

    root = tmp_path_factory.mktemp("cell_data")
    return {
        name: str(prepare_dataset(name, data_root=root / "raw", out_dir=root / name))
        for name in ("mini_objects", "mini_color")
    }


def _spec(seed):
    return RunSpec(
        scale="mini", method="supervised", arch="mini_convnext", dataset="mini_objects",
        target="super", recipe="mini_study", placement="blocks", alpha=0.16, beta=0.04,
        seed=seed, cov_scale="alg1",
    )  # fmt: skip


def _cell(root: Path, manifests) -> dict:
    runs = []
    for seed in (0, 1):
        out = root / "runs" / f"seed{seed}"
        runs.append(
            {
                "out": str(out),
                "spec": _spec(seed).to_dict(),
                "manifest": manifests["mini_objects"],
                "overrides": ["epochs=1", "warmup_epochs=0"],
                "device": "cpu",
                "probe": {
                    "protocol": "lbfgs", "datasets": ["mini_color"],
                    "manifests": [manifests["mini_color"]], "settings": PROBE_SETS,
                    "feature_cache": str(root / "features" / f"seed{seed}"), "device": "cpu",
                    "out": str(out / "eval" / "lbfgs-mini_color.json"),
                },
            }
        )  # fmt: skip
    return {"cell": "test/cell", "runs": runs}


def _one_process_per_job(root: Path, cell: dict) -> None:
    from workflow_scripts import pretrain, probe

    for r in cell["runs"]:
        s, p = r["spec"], r["probe"]
        argv = [f"--out={r['out']}", f"--manifest={r['manifest']}", "--set", *r["overrides"]]
        for key in ("scale", "method", "arch", "dataset", "target", "recipe", "placement",
                    "alpha", "beta", "lr", "seed", "cov_scale", "delta", "init"):  # fmt: skip
            argv.append(f"--{key.replace('_', '-')}={s[key]}")
        assert pretrain.main([*argv, "--device=cpu", "--threads=1"]) == 0
        assert probe.main([
            f"--run={r['out']}", f"--protocol={p['protocol']}", "--eval-dataset", *p["datasets"],
            "--manifest", *p["manifests"], "--set", *p["settings"],
            f"--feature-cache={p['feature_cache']}", f"--out={p['out']}", "--device=cpu",
            "--threads=1",
        ]) == 0  # fmt: skip


def test_a_cell_writes_what_one_process_per_job_writes(tmp_path, manifests):
    cell = _cell(tmp_path / "cell", manifests)
    jobs = json.loads(json.dumps(_cell(tmp_path / "jobs", manifests)))  # the --cell JSON trip
    run_cell(json.loads(json.dumps(cell)), threads=1, log=lambda *a, **k: None)
    _one_process_per_job(tmp_path / "jobs", jobs)
    for a, b in zip(cell["runs"], jobs["runs"], strict=True):
        wa = torch.load(Path(a["out"]) / "backbone.pt", weights_only=False)
        wb = torch.load(Path(b["out"]) / "backbone.pt", weights_only=False)
        sa, sb = wa["state_dict"], wb["state_dict"]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
        ra = json.loads(Path(a["probe"]["out"]).read_text())
        rb = json.loads(Path(b["probe"]["out"]).read_text())
        assert without_timings(ra) == without_timings(rb)
        fa = json.loads((Path(a["out"]) / "final.json").read_text())
        fb = json.loads((Path(b["out"]) / "final.json").read_text())
        assert fa["val_top1"] == fb["val_top1"] and fa["test_top1"] == fb["test_top1"]
