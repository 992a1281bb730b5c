"""Stopping a run cleanly on SLURM's pre-timeout signal (or SIGTERM): the handler only sets a
flag; the training loop writes a checkpoint after the current step and raises
:class:`Preempted`, and the CLI exits with 128 + the signal number, so the job is retried and
resumes from ``checkpoint.pt``."""

from __future__ import annotations

import contextlib
import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """Raised after the checkpoint on a stop signal was written; ``main`` exits 128+signum."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signum} after writing the checkpoint")
        self.signum = signum


class StopFlag:
    """The signal that asked the run to stop (0: none yet)."""

    def __init__(self):
        self.signum = 0

    def __bool__(self) -> bool:
        return bool(self.signum)


@contextlib.contextmanager
def stop_on_signals(flag: StopFlag, signals=STOP_SIGNALS):
    """Route ``signals`` to ``flag`` inside the block; the previous handlers come back after."""

    def handler(signum, frame):
        flag.signum = signum

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield flag
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
