"""Start a trainer with one process per GPU, on one node or, inside a SLURM ``srun`` step, on
each node of the job:

    python -m vcr.launch --nproc-per-node 8 workflow_scripts/pretrain.py ARGS...
    srun --nodes=2 --ntasks=2 --ntasks-per-node=1 ... \\
        python -m vcr.launch --nnodes 2 --nproc-per-node 8 workflow_scripts/pretrain.py ARGS...

One node: ``torchrun --standalone`` (a free rendezvous port on localhost). Several nodes: this
runs once per node inside the ``srun`` step and replaces itself with ``torchrun`` (static
rendezvous: node rank = ``SLURM_NODEID``, so global ranks follow the node order). Everything
about the allocation is read here, inside the step, never inherited from the rule's shell: the
slurm-jobstep executor plugin (0.6.1) strips every ``SLURM_*`` variable but the job's identity
before it runs an ``mpi`` job's shell, and the step gets them back from ``srun``. The host list
is parsed by ``scontrol show hostnames`` (any SLURM host-list syntax), the first node's address
is its ``NodeAddr`` (``scontrol show node``), and the rendezvous port is a function of the job
id, so two jobs sharing a node never meet on one port.

Imports nothing heavy (``vcr.plan`` builds these command lines; torch is only exec'ed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

# Rendezvous ports: PORT_BASE + job id % PORT_SPAN, below Linux's ephemeral range (32768-60999)
# so no outgoing connection of another process holds it.
PORT_BASE, PORT_SPAN = 20000, 10000
# torchrun polls its workers every MONITOR_S seconds; a failed worker makes it stop the others.
MONITOR_S = 1.0


class LaunchError(RuntimeError):
    """The allocation does not fit the launch (raised before any trainer starts)."""


def rendezvous_port(job_id: int | str) -> int:
    return PORT_BASE + int(job_id) % PORT_SPAN


def _scontrol(*args: str) -> str:
    if shutil.which("scontrol") is None:
        raise LaunchError("scontrol is not on PATH: a multi-node launch needs SLURM's client tools")
    proc = subprocess.run(
        ["scontrol", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise LaunchError(f"scontrol {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def hostnames(nodelist: str) -> list[str]:
    """``"rack[1-2]-n[01-02]"`` -> the four host names, as SLURM expands them."""
    if not nodelist:
        raise LaunchError(
            "SLURM_JOB_NODELIST is empty: start the launcher inside the job step (srun ... "
            "python -m vcr.launch ...), where SLURM sets it"
        )
    return _scontrol("show", "hostnames", nodelist).split()


def node_address(node: str) -> str:
    """The node's ``NodeAddr`` (how SLURM itself reaches it; often the name itself)."""
    for field in _scontrol("show", "node", "-o", node).split():
        if field.startswith("NodeAddr="):
            return field.split("=", 1)[1] or node
    return node


def torchrun_args(nnodes: int, nproc: int, env=None) -> list[str]:
    """torchrun's arguments for this node (one node: standalone; several: the SLURM step's)."""
    if nnodes == 1:
        return ["--standalone", f"--nproc-per-node={nproc}", f"--monitor-interval={MONITOR_S}"]
    env = os.environ if env is None else env
    missing = [k for k in ("SLURM_JOB_ID", "SLURM_NODEID", "SLURM_NNODES") if not env.get(k)]
    if missing:
        raise LaunchError(
            f"--nnodes {nnodes}: {', '.join(missing)} not set; a multi-node launch runs inside "
            f"a SLURM step: srun --nodes={nnodes} --ntasks={nnodes} --ntasks-per-node=1 "
            "python -m vcr.launch ..."
        )
    if int(env["SLURM_NNODES"]) != nnodes:
        raise LaunchError(
            f"--nnodes {nnodes} but this srun step spans {env['SLURM_NNODES']} node(s) "
            f"({env.get('SLURM_JOB_NODELIST', '?')}): pass srun --nodes={nnodes} "
            f"--ntasks={nnodes} --ntasks-per-node=1"
        )
    first = hostnames(env.get("SLURM_JOB_NODELIST", ""))[0]
    return [
        f"--nnodes={nnodes}",
        f"--node-rank={int(env['SLURM_NODEID'])}",
        f"--nproc-per-node={nproc}",
        f"--master-addr={node_address(first)}",
        f"--master-port={rendezvous_port(env['SLURM_JOB_ID'])}",
        f"--monitor-interval={MONITOR_S}",
    ]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vcr.launch", description=__doc__.split("\n\n")[0])
    p.add_argument("--nnodes", type=int, default=1, help="nodes of the job (srun step)")
    p.add_argument("--nproc-per-node", type=int, required=True, help="processes (GPUs) per node")
    p.add_argument("script", help="the trainer script")
    p.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        targs = torchrun_args(args.nnodes, args.nproc_per_node)
    except LaunchError as err:
        print(f"vcr.launch: {err}", file=sys.stderr, flush=True)
        return 2
    cmd = [sys.executable, "-m", "torch.distributed.run", *targs, args.script, *args.args]
    node = os.environ.get("SLURMD_NODENAME", "")
    where = f" on {node}" if node else ""
    print(
        f"vcr.launch{where}: torchrun {' '.join(targs)} {args.script}", file=sys.stderr, flush=True
    )
    os.execv(sys.executable, cmd)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
