"""SIGTERM handled like Ctrl-C while training: the loop stops after the current batch, the run is
saved with its best weights and marked interrupted (a pre-empted cloud machine, ``kill PID``,
a job scheduler's time limit)."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextmanager
def stop_on_sigterm():
    """Turn SIGTERM into ``Terminated`` (a KeyboardInterrupt) inside the block; the previous
    handler comes back afterwards. Only the main thread can install signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# Data-parallel training: a signal only sets this (the reason); the loop's ranks agree on stopping
# at the same step (engine/loop.py: agree_stop), so no rank is left waiting in a collective.
requested: str | None = None


def _note(signum, frame):
    global requested
    requested = "stopped by SIGTERM" if signum == signal.SIGTERM else "interrupted by the user (Ctrl-C)"


@contextmanager
def stop_flag_on_signals():
    """SIGINT and SIGTERM set ``requested`` inside the block instead of raising."""
    global requested
    requested = None
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
