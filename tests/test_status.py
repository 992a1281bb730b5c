"""vcr.plan.status: where a run stands, from the work folder only (outputs, logs, run folders,
benchmark files); squeue only with --slurm."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from vcr import plan as P
from vcr.plan import budget as B
from vcr.plan import status as S
from vcr.plan.__main__ import main

ROOT = Path(__file__).resolve().parents[1]

TRACEBACK = """run work/x: supervised mini_resnet on mini_objects_lt, 1 process(es)
Traceback (most recent call last):
  File "workflow_scripts/pretrain.py", line 60, in main
    final = run(spec, args.out)
vcr.errors.ConfigError: checkpoint.pt was written with other recipe values (epochs 3 != 8)
"""


@pytest.fixture()
def mini(tmp_path):
    cfg = P.load_config(ROOT / "config.yaml")
    roots = {"work_root": str(tmp_path / "work"), "results_root": str(tmp_path / "results")}
    return P.build_plan({**cfg, **roots}, "mini")


def _write(path, text=""):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


def _table3_pretrain(plan):
    jobs = B.job_costs(plan, B.Figures("mini"))
    ids = sorted(j for j in B.target_jobs(plan, jobs, "table3") if jobs[j].rule == "pretrain")
    return jobs, ids


def test_first_error_line_and_last_attempt():
    assert S.first_error(TRACEBACK).startswith("vcr.errors.ConfigError: checkpoint.pt was")
    assert S.first_error("epoch 0 step 50/100 loss 0.3 lr 0.01\nstderr is fine\n") == ""
    assert S.first_error("slurmstepd: error: *** JOB 7 CANCELLED AT 12:00 DUE TO TIME LIMIT ***")
    # an appended log: the first attempt failed, the second started again (no error since)
    text = TRACEBACK + "run work/x: supervised mini_resnet on mini_objects_lt, again\n"
    assert S.first_error(S.last_attempt(text)) == ""
    # the second attempt failed before its start line: its error follows the first start
    assert S.first_error(S.last_attempt("run work/x: a\n" + TRACEBACK.split("\n", 1)[1]))


def test_status_counts_done_running_failed_interrupted_and_names_the_error(mini):
    jobs, ids = _table3_pretrain(mini)
    done, failed, stopped, running, killed = (jobs[i] for i in ids[:5])
    for p in done.outputs:
        _write(p, "{}")
    _write(done.id, "s\th:m:s\tcpu_time\n30.0\t0:00:30\t20.0\n")  # its benchmark file
    _write(done.log, "run x: ...\n")
    _write(failed.log, TRACEBACK)
    _write(stopped.log, "run x: ...\nwork/x: stopped by signal 15 after writing the checkpoint\n")
    run_dir = Path(running.outputs[0]).parent
    _write(running.log, "run x: ...\nepoch 1 step 20/24 loss 0.61 lr 0.003\n")
    _write(run_dir / "run.json", json.dumps({"recipe": {"epochs": 8}}))
    _write(run_dir / "log.jsonl", json.dumps({"epoch": 0, "loss": 0.7, "val_top1": 0.4}) + "\n")
    _write(killed.log, "run x: ...\n")  # started, then nothing for an hour
    old = time.time() - 3600
    os.utime(killed.log, (old, old))

    st = S.make_status(mini, ["table3"], active_minutes=30)
    by_state = {}
    for j in st.jobs.values():
        by_state.setdefault(j.state, []).append(j.id)
    assert by_state["done"] == [done.id]
    assert by_state["failed"] == [failed.id]
    assert sorted(by_state["interrupted"]) == sorted([stopped.id, killed.id])
    assert by_state["running"] == [running.id]
    assert len(by_state["not started"]) == len(st.jobs) - 5
    assert st.jobs[running.id].epoch == "epoch 1/8 loss 0.7 val_top1 0.4"
    assert st.jobs[running.id].epochs_left == pytest.approx(7 / 8)

    text = S.format_status(st)
    assert f"log: {failed.log}" in text
    assert "error: vcr.errors.ConfigError: checkpoint.pt was written" in text
    assert "| table3   | 28     | 1      | 1         | 1        | 2             | 23" in text
    assert "ETA: " in text and "jobs left" in text


def test_slurm_comment_matches_the_slurm_plugin(mini):
    jobs = B.job_costs(mini, B.Figures("mini"))
    probe = next(j for j in jobs.values() if j.rule == "probe")
    run, name = probe.id.split("/benchmarks/probe/")[1].rsplit("/", 1)
    protocol, evalname = name.removesuffix(".tsv").split("-", 1)
    # the plugin: "rule_<rule>_wildcards_" + "_".join(wildcards).replace("/", "_")
    expect = "rule_probe_wildcards_" + "_".join([run, protocol, evalname]).replace("/", "_")
    assert S.slurm_comment(probe, mini) == expect
    plot = next(j for j in jobs.values() if j.rule == "plot_figure2")
    assert S.slurm_comment(plot, mini) == "rule_plot_figure2"


def test_slurm_states_mark_queued_and_running(mini, monkeypatch):
    jobs, ids = _table3_pretrain(mini)
    queued, running = jobs[ids[0]], jobs[ids[1]]
    states = {S.slurm_comment(queued, mini): "PENDING", S.slurm_comment(running, mini): "RUNNING"}
    monkeypatch.setattr(S, "slurm_states", lambda user_only=True: states)
    st = S.make_status(mini, ["table3"], slurm=True)
    assert st.jobs[queued.id].state == "queued" and st.jobs[running.id].state == "running"
    assert "queued" in S.format_status(st)


def test_cli_status_on_an_empty_work_folder(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"work_root: {tmp_path / 'work'}\nresults_root: {tmp_path / 'results'}\n")
    assert main(["--configfile", str(cfg), "--status", "--targets", "figure2"]) == 0
    out = capsys.readouterr().out
    assert "| figure2  | 7      | 0      | 0         | 0        | 0             | 7" in out


def test_snakemake_incomplete_markers_are_read_where_snakemake_writes_them(tmp_path):
    """The marker path is snakemake's own (FilePersistence._record_path, the pinned snakemake),
    for a short output path and one whose base64 name exceeds the file-name limit."""
    import types

    from snakemake.persistence.file import FilePersistence

    from vcr.plan.status import snakemake_incomplete

    subject = tmp_path / ".snakemake" / "incomplete"
    subject.mkdir(parents=True)
    fake = types.SimpleNamespace(_fetch_max_len=lambda s: os.pathconf(s, "PC_NAME_MAX"))
    short = "work/mini/runs/a/final.json"
    long = "work/mini/runs/" + "x" * 300 + "/eval/lbfgs.json"
    for out in (short, long):
        marker = Path(FilePersistence._record_path(fake, str(subject), out))
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("{}")
        assert snakemake_incomplete(out, workdir=tmp_path)
    assert not snakemake_incomplete("work/mini/runs/b/final.json", workdir=tmp_path)
    assert not snakemake_incomplete(short, workdir=tmp_path / "elsewhere")
