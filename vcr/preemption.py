"""Stopping a run cleanly before SLURM's time limit: the handler only sets a flag; the training
loop writes a checkpoint after the current step and raises :class:`Preempted`, and the CLI exits
with 128 + the signal number, so the job is retried and resumes from ``checkpoint.pt``.

Which signal, and why (every process of a SLURM job step gets ``sbatch --signal`` without
``B:``: the in-step snakemake and bash, ``torchrun``, the trainers, their DataLoader workers):

- ``SIGURG`` (:data:`PREEMPT_SIGNAL`) is the pre-timeout signal the rules ask for
  (``--signal=URG@600``). Its default action is to be ignored, so only the trainer, which
  handles it, acts on it; ``SIGUSR1``'s default action is to terminate, and it kills torchrun
  (exit 138), bash and the in-step snakemake before the trainer can checkpoint.
- ``SIGTERM`` (the time limit itself, ``scancel``, or torchrun stopping its workers after one
  failed) gets :data:`TERM_GRACE_S` seconds: enough to finish the step and checkpoint, and if
  the loop is stuck (a collective whose peer died), a watchdog thread ends the process, so one
  failed rank never leaves the others waiting for a timeout.
- ``SIGUSR1`` is still handled, for a batch script that forwards it.

DataLoader workers ignore all three (:func:`ignore_stop_signals` is their ``worker_init_fn``):
a worker killed by the signal would make the trainer raise "DataLoader worker killed" before it
acts on its flag.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time

PREEMPT_SIGNAL = signal.SIGURG
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGURG)
# Below SLURM's KillWait and torchrun's 30 s between SIGTERM and SIGKILL.
TERM_GRACE_S = 20.0


class Preempted(Exception):
    """Raised after the checkpoint on a stop signal was written; ``main`` exits 128+signum."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signal_name(signum)} after writing the checkpoint")
        self.signum = signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


class StopFlag:
    """The signal that asked the run to stop (0: none yet) and when it came."""

    def __init__(self):
        self.signum = 0
        self.at = 0.0

    def __bool__(self) -> bool:
        return bool(self.signum)

    def describe(self) -> str:
        if not self.signum:
            return "another rank's"
        return f"{signal_name(self.signum)} at {time.strftime('%H:%M:%S', time.localtime(self.at))}"


@contextlib.contextmanager
def stop_on_signals(flag: StopFlag, signals=STOP_SIGNALS, grace: dict | None = None):
    """Route ``signals`` to ``flag`` inside the block; the previous handlers come back after.

    ``grace`` (default ``{SIGTERM: TERM_GRACE_S}``): seconds after such a signal before a
    watchdog thread exits the process with 128 + signum, should the block still be running. It
    sees the signal through the wakeup fd, which the C-level handler writes even while the main
    thread is blocked in a collective (where no Python handler can run).
    """
    grace = {signal.SIGTERM: TERM_GRACE_S} if grace is None else grace

    def handler(signum, frame):
        if not flag.signum:
            flag.signum, flag.at = signum, time.time()

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    done = threading.Event()
    rfd, wfd = os.pipe()
    os.set_blocking(wfd, False)
    old_wakeup = signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
    watchdog = threading.Thread(target=_watchdog, args=(rfd, grace, done), daemon=True)
    watchdog.start()
    try:
        yield flag
    finally:
        done.set()
        signal.set_wakeup_fd(old_wakeup)
        os.write(wfd, b"\0")  # wake the watchdog's select
        watchdog.join()
        os.close(wfd)
        os.close(rfd)
        for sig, h in previous.items():
            signal.signal(sig, h)


def _watchdog(rfd: int, grace: dict, done: threading.Event) -> None:
    # select, not a blocking read: forked DataLoader workers hold the pipe's write end too, so
    # closing ours would never give EOF
    while not done.is_set():
        ready, _, _ = select.select([rfd], [], [], 0.5)
        if not ready:
            continue
        try:
            data = os.read(rfd, 64)
        except OSError:
            return
        for signum in data:
            if signum in grace and not done.wait(grace[signum]):
                print(
                    f"no clean stop within {grace[signum]:.0f} s of {signal_name(signum)} "
                    "(blocked in a collective whose peer is gone?): exiting",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(128 + signum)


def ignore_stop_signals(_worker_id: int | None = None) -> None:
    """A DataLoader ``worker_init_fn``: the stop signals are the trainer's to act on. Pair it
    with :func:`kill_workers_at_exit` in the trainer: a worker that ignores SIGTERM would make
    multiprocessing's exit hook (terminate, then join) wait for ever after an exception."""
    with contextlib.suppress(ValueError):  # not the main thread of the worker
        signal.set_wakeup_fd(-1)
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


_KILL_AT_EXIT = []


def kill_workers_at_exit() -> None:
    """SIGKILL this process's daemonic children (DataLoader workers) when it exits, before
    multiprocessing's own exit hook joins them (atexit runs the later registration first)."""
    if _KILL_AT_EXIT:
        return
    import atexit
    import multiprocessing

    def kill():
        # the DataLoader's SIGCHLD handler would report each killed worker as an error
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for p in multiprocessing.active_children():
            if p.daemon:
                p.kill()

    atexit.register(kill)
    _KILL_AT_EXIT.append(kill)
