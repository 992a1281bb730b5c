"""What a cluster run depends on, on CPU: the launcher reads the allocation inside the step
(vcr.launch), a job that asked for CUDA fails at once with the reason, one failed rank ends
every rank, and the SIGTERM watchdog ends a process stuck where no Python handler can run."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vcr import launch
from vcr.plan import resources as R

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = Path(__file__).with_name("test_train_support.py")


# ---------------------------------------------------------------------------------------------
# vcr.launch
# ---------------------------------------------------------------------------------------------
def _fake_scontrol(monkeypatch, hosts, addr="10.0.0.7"):
    calls = []

    def fake(*args):
        calls.append(args)
        if args[:2] == ("show", "hostnames"):
            return "\n".join(hosts) + "\n"
        if args[:2] == ("show", "node"):
            return f"NodeName={args[-1]} Arch=x86_64 NodeAddr={addr} NodeHostName={args[-1]}\n"
        raise AssertionError(args)

    monkeypatch.setattr(launch, "_scontrol", fake)
    return calls


def test_multi_node_launch_reads_the_step_and_asks_scontrol(monkeypatch):
    calls = _fake_scontrol(monkeypatch, ["rack1-n01", "rack1-n02"])
    env = {
        "SLURM_JOB_ID": "123456",
        "SLURM_NODEID": "1",
        "SLURM_NNODES": "2",
        "SLURM_JOB_NODELIST": "rack1-n[01-02]",
    }
    args = launch.torchrun_args(2, 8, env)
    assert args == [
        "--nnodes=2",
        "--node-rank=1",
        "--nproc-per-node=8",
        "--master-addr=10.0.0.7",  # the first node's NodeAddr
        f"--master-port={20000 + 123456 % 10000}",
        f"--monitor-interval={launch.MONITOR_S}",
    ]
    # the host list is SLURM's to expand (any syntax), the address its NodeAddr
    assert calls == [("show", "hostnames", "rack1-n[01-02]"), ("show", "node", "-o", "rack1-n01")]


def test_rendezvous_ports_differ_per_job_and_stay_below_the_ephemeral_range():
    ports = {launch.rendezvous_port(j) for j in range(1000, 1100)}
    assert len(ports) == 100
    assert all(20000 <= p < 30000 for p in ports)


def test_launch_outside_a_step_or_on_the_wrong_layout_fails_with_the_fix():
    # what the rule's shell sees under the slurm-jobstep plugin: only the job's identity
    with pytest.raises(launch.LaunchError, match=r"SLURM_NODEID, SLURM_NNODES not set.*srun"):
        launch.torchrun_args(2, 8, {"SLURM_JOB_ID": "7"})
    env = {"SLURM_JOB_ID": "7", "SLURM_NODEID": "0", "SLURM_NNODES": "1"}
    with pytest.raises(launch.LaunchError, match=r"spans 1 node.*srun --nodes=2"):
        launch.torchrun_args(2, 8, env)
    with pytest.raises(launch.LaunchError, match="SLURM_JOB_NODELIST is empty"):
        launch.hostnames("")


def test_one_node_is_torchrun_standalone():
    assert launch.torchrun_args(1, 4)[:2] == ["--standalone", "--nproc-per-node=4"]


def _scontrol_works() -> bool:
    """scontrol on PATH and able to run (it needs a slurm.conf even for `show hostnames`; the CI
    SLURM's is moved aside by .ci/slurm_down.sh)."""
    if shutil.which("scontrol") is None:
        return False
    proc = subprocess.run(["scontrol", "show", "hostnames", "n1"], capture_output=True, check=False)
    return proc.returncode == 0


@pytest.mark.skipif(not _scontrol_works(), reason="no working scontrol (SLURM client + config)")
def test_scontrol_expands_host_lists_a_regex_would_misparse():
    assert launch.hostnames("rack[1-2]-n[01-02]") == [
        "rack1-n01",
        "rack1-n02",
        "rack2-n01",
        "rack2-n02",
    ]


def test_the_launcher_line_reads_nothing_from_the_rules_shell():
    res = {**R.RESOURCE_DEFAULTS, "nodes": 2, "gres": "gpu:8", "cpus_per_gpu": 8, "mpi": "srun"}
    line = R.launcher(res)
    assert "$" not in line
    assert re.match(
        r"srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --cpus-per-task=64 --mem=0 "
        r"--kill-on-bad-exit=1 python -m vcr.launch --nnodes 2 --nproc-per-node 8$",
        line,
    )


# ---------------------------------------------------------------------------------------------
# CUDA asked for, none usable
# ---------------------------------------------------------------------------------------------
def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def test_a_job_that_asks_for_cuda_without_one_fails_within_10_s_with_the_reason(tmp_path):
    # no usable GPU, even on a GPU machine
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    cmd = [
        sys.executable, str(ROOT / "workflow_scripts" / "pretrain.py"), "--out", str(tmp_path),
        "--scale", "mini", "--method", "supervised", "--arch", "mini_resnet",
        "--dataset", "mini_objects", "--recipe", "resnet32_lt", "--device", "cuda",
    ]  # fmt: skip
    # The machine is shared: time the failure beyond what importing torch costs right now
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True, env=env, timeout=120)
    t_import = time.perf_counter() - t0
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    elapsed = time.perf_counter() - t0
    assert proc.returncode != 0
    assert _children_cpu() - cpu0 < 10, "CPU seconds"
    assert elapsed - t_import < 10, f"took {elapsed:.1f} s, {t_import:.1f} s of it importing torch"
    err = proc.stderr
    assert "--device cuda: no usable CUDA device" in err, err[-2000:]
    assert "torch " in err and ("built for CUDA" in err or "CPU-only build" in err)
    assert "CUDA_VISIBLE_DEVICES=''" in err and "does not fall back to the CPU" in err
    assert not (tmp_path / "run.json").exists()


# ---------------------------------------------------------------------------------------------
# one rank fails: every rank ends
# ---------------------------------------------------------------------------------------------
def _two_rank_run(tmp_path, hook: str):
    """A 2-process gloo run through vcr.launch (torchrun) whose rank 1 fails at step 3."""
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "vcr.launch", "--nproc-per-node", "2", str(SUPPORT), str(out),
        "--set", "epochs=3", "batch_size=16", "num_workers=1", f"{hook}=3", "inject_fault_rank=1",
        "--sleep", "0.05",
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines, t_fault = [], None
    for line in proc.stdout:
        lines.append(line)
        if t_fault is None and ("injected fault" in line or "non-finite loss" in line):
            t_fault = time.perf_counter()
    rc = proc.wait(timeout=120)
    return rc, "".join(lines), t_fault, time.perf_counter(), str(out)


@pytest.mark.parametrize("hook", ["inject_error_step", "inject_nan_step"])
def test_one_failed_rank_ends_every_rank_within_30_s(tmp_path, hook):
    rc, out, t_fault, t_end, run_dir = _two_rank_run(tmp_path, hook)
    assert rc != 0, out[-3000:]
    assert t_fault is not None, out[-3000:]
    assert t_end - t_fault < 30, f"{t_end - t_fault:.1f} s from the fault to the last exit"
    # both trainers (and their DataLoader workers) are gone, and the log says why
    left = subprocess.run(["pgrep", "-f", run_dir], capture_output=True, text=True).stdout
    assert not left.strip(), left
    assert len(re.findall(r"^\s*exitcode\s+:", out, re.M)) == 2, out[-3000:]  # torchrun's summary
    if hook == "inject_nan_step":  # every rank names the rank whose loss was NaN
        assert out.count("NonFiniteError: non-finite loss on rank(s) [1]") == 2, out[-3000:]
    else:
        assert "RuntimeError: injected fault at step 3 on rank 1" in out


# ---------------------------------------------------------------------------------------------
# SIGTERM while blocked where Python cannot run its handler
# ---------------------------------------------------------------------------------------------
STUCK = """
import threading
from vcr.preemption import StopFlag, stop_on_signals
with stop_on_signals(StopFlag(), grace={15: 1.0}):
    print("waiting", flush=True)
    threading.Event().wait()  # never set: the stop flag alone cannot end this block
"""


def test_sigterm_watchdog_ends_a_process_that_cannot_stop_by_itself():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "waiting"
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=30)
    assert rc == 128 + signal.SIGTERM
    assert 0.9 < time.perf_counter() - t0 < 10
    assert "no clean stop within 1 s of SIGTERM" in proc.stderr.read()
