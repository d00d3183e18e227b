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
