"""A run's probes computed inside its pretraining job, then handed to the probe jobs (config
``scales.<scale>.probe_in_pretrain``; on at the mini scale).

Why: a mini probe job spends ~1.5-2.5 CPU s starting up (importing torch, and torch._dynamo for
the AdamW and fine-tuning heads: every torch optimizer imports it) for 1-3 s of work, and the
mini pipeline has 63 of them. With ``probe_in_pretrain`` the pretraining job, once its run has
finished, makes the same ``vcr.probes.evaluate_run`` calls the run's probe jobs would
(``workflow_scripts/pretrain.py --then-probe``) and stages each job's records at
RUN_DIR/eval/staged/<the job's output name>. The probe job (``workflow_scripts/probe.py``) takes
them, without importing torch, only when they were made for exactly its arguments, the backbone
now on disk and the vcr code now installed; otherwise it probes as always. The DAG, the rules'
outputs and the records are unchanged (tests/test_probe_staging.py: equal to the probe job's
own but for the probe's wall time, ``seconds``). A probe that fails inside the pretraining job
is logged there and left to its probe job, which then raises the error itself. The price: a
mini pretraining job's params now hold its probes' arguments, so changing a mini probe setting
retrains the run (seconds at mini; off at every other scale).
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from vcr import io
from vcr.cli import parse_sets

STAGED_DIR = "staged"


def staged_path(out) -> Path:
    """Where the pretraining job stages the records of the probe job writing ``out``."""
    out = Path(out)
    return out.parent / STAGED_DIR / out.name


@lru_cache(maxsize=1)
def _code_fingerprint() -> str:
    # any change to the installed vcr code invalidates staged records (~5 ms to read)
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def probe_key(run_dir, call: dict) -> str:
    """What a probe job's records depend on: its arguments (a ``Plan.probe_call`` dict, less
    ``out``), the backbone's content, the code."""
    # the backbone's bytes, not its mtime: Snakemake touches a job's outputs after it ends
    backbone = hashlib.sha256(Path(run_dir, "backbone.pt").read_bytes()).hexdigest()
    cache = call["feature_cache"]
    ident = {
        "run": os.path.normpath(str(run_dir)),
        "protocol": call["protocol"],
        "datasets": list(call["datasets"]),
        "manifests": [os.path.normpath(str(m)) for m in call["manifests"]],
        "sets": parse_sets(list(call["settings"])),
        "feature_cache": None if cache is None else os.path.normpath(str(cache)),
        "device": call["device"],
        "backbone": backbone,
        "code": _code_fingerprint(),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


def probe_ahead(run_dir, calls: list[dict], *, threads: int | None = None, log=print) -> None:
    """Run the probe jobs ``calls`` (``Plan.probe_call`` dicts) of the finished run ``run_dir``
    here and stage their records; a failure is logged and left to the probe job."""
    from vcr.preemption import Preempted
    from vcr.probes import evaluate_call

    for call in calls:
        name = Path(call["out"]).name
        try:
            records = evaluate_call(run_dir, call, threads=threads)
            staged = {"key": probe_key(run_dir, call), "records": records}
            io.write_json(staged_path(call["out"]), staged)
            log(f"probe {name}: staged for its probe job", flush=True)
        except Preempted:
            raise
        except Exception as e:  # the probe job runs it again and raises it there
            log(f"probe {name} failed here, left to its probe job: {e!r}", flush=True)


def take_staged(run_dir, call: dict) -> bool:
    """Write the staged records of the probe job ``call`` to its ``out`` when they were made for
    exactly its arguments, this backbone and this code; True when it did. The staged file is
    removed either way (a later run of the job probes afresh)."""
    from vcr.records import write_records

    path = staged_path(call["out"])
    if not path.is_file():
        return False
    try:
        staged = io.read_json(path)
        ok = staged["key"] == probe_key(run_dir, call)
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if ok:
        write_records(call["out"], staged["records"])
    path.unlink()
    return ok
