"""Checks of the rehearsal CI part (.ci/pipeline_checks.sh rehearsal); each prints the evidence
it read and exits 1 on a failed check.

    python .ci/rehearsal_check.py layout RUN_DIR NODES PER_NODE
    python .ci/rehearsal_check.py same-weights RUN_DIR_A RUN_DIR_B
    python .ci/rehearsal_check.py slurm-jobs SNAKEMAKE_LOG RUN [--nodes N] [--min-jobs K]
    python .ci/rehearsal_check.py preempted RUN_DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path


def fail(msg: str) -> int:
    print(f"FAILED: {msg}", file=sys.stderr)
    return 1


def layout(args) -> int:
    run = json.loads((Path(args.run) / "run.json").read_text())
    want = {"nodes": args.nodes, "processes_per_node": args.per_node}
    print(
        f"{args.run}/run.json: world_size={run['world_size']} layout={run['layout']} "
        f"device={run['device']}"
    )
    if run["layout"] != want or run["world_size"] != args.nodes * args.per_node:
        return fail(f"expected world size {args.nodes * args.per_node} as {want}")
    return 0


def same_weights(args) -> int:
    import torch

    a, b = (Path(d) / "backbone.pt" for d in (args.a, args.b))
    sa, sb = (torch.load(p, weights_only=True)["state_dict"] for p in (a, b))
    if sa.keys() != sb.keys():
        return fail(f"different state-dict keys: {sorted(set(sa) ^ set(sb))[:5]}")
    differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
    sha = [hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in (a, b)]
    print(
        f"backbone.pt {a} vs {b}: {len(sa)} tensors, {len(differ)} differ "
        f"(bit-identical tensors: {not differ}); file sha256 {sha[0]} / {sha[1]}"
    )
    if differ:
        worst = max(float((sa[k].double() - sb[k].double()).abs().max()) for k in differ)
        return fail(f"{len(differ)} tensors differ, max |diff| {worst:.3g}: {differ[:3]}")
    if sha[0] != sha[1]:
        return fail("same tensors but different file bytes (the saved metadata differs)")
    return 0


def slurm_jobs(args) -> int:
    """The SLURM jobs Snakemake submitted to pretrain RUN (every attempt), as ``scontrol show
    job`` sees them, and the sbatch line of the first."""
    text = Path(args.log).read_text()
    wild = args.run.replace("/", "_")
    folder = f"rule_pretrain/{wild}/"  # the plugin's log folder of the run's pretrain jobs
    ids = re.findall(rf"submitted with SLURM jobid (\d+) \(log: \S*/{re.escape(folder)}", text)
    print(f"{args.run}: SLURM jobs {ids}")
    if len(ids) < args.min_jobs:
        return fail(f"expected >= {args.min_jobs} SLURM jobs (attempts), saw {len(ids)}")
    for jid in ids:
        out = subprocess.run(
            ["scontrol", "show", "job", jid], capture_output=True, text=True, check=False
        ).stdout
        fields = dict(re.findall(r"(\w+)=(\S+)", out))
        keep = ("JobState", "ExitCode", "NumNodes", "NumTasks", "NodeList", "TimeLimit", "RunTime")
        print(f"  scontrol show job {jid}: " + " ".join(f"{k}={fields.get(k)}" for k in keep))
        if args.nodes and fields.get("NumNodes") != str(args.nodes):
            return fail(f"job {jid}: NumNodes={fields.get('NumNodes')}, expected {args.nodes}")
    for line in re.findall(r"sbatch call: (.*)", text):
        if folder in line:
            flags = re.sub(r"--wrap=.*", "", line)
            flags = re.sub(r"--(job-name|output|comment) \S+ ", "", flags)
            print(f"  sbatch: {' '.join(flags.split())}")
            break
    return 0


def preempted(args) -> int:
    """The run's events.log (every attempt appends to it): starts, the signal, the checkpoint
    and the resume."""
    text = (Path(args.run) / "events.log").read_text()
    print(f"  {args.run}/events.log:")
    for line in text.splitlines():
        print(f"    {line}")
    stops = re.findall(
        r" stop signal \((SIG\w+) at [\d:]+\): checkpoint written at .*$", text, re.M
    )
    if "SIGURG" not in stops:
        return fail(f"no SIGURG checkpoint (stop signals seen: {stops})")
    if len(re.findall(r" start \(SLURM job \d+", text)) < 2:
        return fail("fewer than two attempts (SLURM jobs) started the run")
    if " resumed from checkpoint.pt at epoch" not in text:
        return fail("no resume")
    m = re.search(r"step-in-epoch (\d+) of (\d+)", text)
    if m and not 0 < int(m.group(1)) < int(m.group(2)):
        return fail("the first checkpoint is not mid-epoch")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("layout")
    p.add_argument("run")
    p.add_argument("nodes", type=int)
    p.add_argument("per_node", type=int)
    p = sub.add_parser("same-weights")
    p.add_argument("a")
    p.add_argument("b")
    p = sub.add_parser("slurm-jobs")
    p.add_argument("log")
    p.add_argument("run")
    p.add_argument("--nodes", type=int, default=0)
    p.add_argument("--min-jobs", type=int, default=1)
    p = sub.add_parser("preempted")
    p.add_argument("run")
    args = ap.parse_args(argv)
    return {
        "layout": layout,
        "same-weights": same_weights,
        "slurm-jobs": slurm_jobs,
        "preempted": preempted,
    }[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
