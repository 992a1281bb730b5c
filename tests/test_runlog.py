"""What a run writes about itself: TensorBoard scalars beside log.jsonl (with and without the
optional tensorboard package), and the progress lines of the long loops."""

from __future__ import annotations

import builtins
import json
import sys

import pytest
from test_train_support import read_log, run_tiny

from vcr import runlog


def _tags(run_dir) -> dict[str, list[tuple[int, float]]]:
    """Scalar tags of a run folder, read back with TensorBoard's own event reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_every_log_key_is_a_tensorboard_curve(tmp_path):
    pytest.importorskip("tensorboard")
    run_tiny(tmp_path / "r", overrides={"epochs": 2, "max_steps_per_epoch": 2})
    log = read_log(tmp_path / "r")
    tags = _tags(tmp_path / "r")
    keys = {k for e in log for k in runlog.scalars(e)}
    assert set(tags) == keys
    assert {"loss", "task_loss", "lr", "images_per_s", "val_top1", "vcr/l_var"} <= keys
    for key, points in tags.items():
        expected = [(e["epoch"], e[key]) for e in log if key in e]
        assert [s for s, _ in points] == [s for s, _ in expected], key
        assert [v for _, v in points] == pytest.approx([v for _, v in expected], rel=1e-6), key


def test_without_tensorboard_the_trainer_writes_only_log_jsonl(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith(("tensorboard", "torch.utils.tensorboard")):
            raise ImportError(f"No module named {name!r} (test)")
        return real_import(name, *args, **kwargs)

    for mod in [m for m in sys.modules if m.startswith(("tensorboard", "torch.utils.tensorboard"))]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    assert runlog.scalar_writer(tmp_path) is None
    run_tiny(tmp_path / "r", overrides={"epochs": 2, "max_steps_per_epoch": 2})
    assert [e["epoch"] for e in read_log(tmp_path / "r")] == [0, 1]
    assert not list((tmp_path / "r").glob("events.out.tfevents.*"))
    assert (tmp_path / "r" / "backbone.pt").is_file()


def test_a_resumed_run_replaces_the_curves_from_its_first_epoch(tmp_path):
    pytest.importorskip("tensorboard")
    first = runlog.EpochLog(tmp_path, first_epoch=0)
    for epoch in range(3):
        first.append({"epoch": epoch, "loss": 10.0 + epoch})
    first.close()
    # a resume from the checkpoint of epoch 1: epochs 1 and 2 are trained (and logged) again
    runlog.truncate_log(tmp_path, before_epoch=1)
    again = runlog.EpochLog(tmp_path, first_epoch=1)
    for epoch in (1, 2):
        again.append({"epoch": epoch, "loss": 20.0 + epoch})
    again.close()
    assert _tags(tmp_path)["loss"] == [(0, 10.0), (1, 21.0), (2, 22.0)]
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(e["epoch"], e["loss"]) for e in lines] == [(0, 10.0), (1, 21.0), (2, 22.0)]


def test_task_progress_prints_plain_lines_in_a_log(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    p = runlog.TaskProgress("lbfgs lambda path", 5, unit="lambda", every=0.0)
    for i in range(3):
        p.update(val=0.5 + i / 10)
    p.close(best_val=0.7)  # an early stop after 3 of 5
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("lbfgs lambda path: 1/5 lambda (")
    assert "val 0.5" in lines[0] and "left)" in lines[0]
    assert lines[2].startswith("lbfgs lambda path: 3/5 lambda")
    assert lines[-1].startswith("lbfgs lambda path: 3/5 lambda") and "best_val 0.7" in lines[-1]


def test_task_progress_is_quiet_between_periods_and_reports_the_end(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    p = runlog.TaskProgress("MINE", 1000, unit="step", every=3600.0)
    for _ in range(1000):
        p.update()
    p.close()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("MINE: 1000/1000 step (")
