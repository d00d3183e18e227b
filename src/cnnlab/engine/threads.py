"""Intra-op threads that survive a busy machine.

PyTorch's CPU kernels split each operation across its OpenMP threads and wait for all of them at
the end. When another process keeps one of the cores busy, the thread on that core is descheduled
for a time slice and every other thread waits for it, at every operation: beside one busy process
a two-thread training step on two cores ran 2.9x slower than one thread (Zen 4; 27x on an Intel
Xeon, issue 27). The governor measures how much of the machine other processes use (``/proc/stat``
less this process's own CPU time) over windows of about a second, and trains with the cores that
are free: all of them on an idle machine (today's count, so results stay bit for bit the same),
fewer beside a busy process, back up when it ends. ``--threads N`` pins a count and turns it off.
"""

from __future__ import annotations

import os
import time

import torch

from .callbacks import Callback

WINDOW_S = 1.0  # how long a load measurement spans
CONFIRM = 2  # windows in a row that must agree before the thread count changes
MIN_FIRST_S = 0.1  # the load measured before training starts spans at least this (10 clock ticks)
_DEFAULT: int | None = None


def default_threads() -> int:
    """The thread count PyTorch chose for this process before cnnlab changed it (its cores)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = torch.get_num_threads()
    return _DEFAULT


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class LoadMeter:
    """CPU seconds other processes used since the last ``read()``, in cores (0.0 on an idle machine,
    about 1.0 beside one busy loop). None where /proc/stat cannot be read (not Linux)."""

    def __init__(self):
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.last = self._sample()

    def _sample(self):
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        busy_all = (sum(fields[:8]) - idle) / self.tick  # user..steal: guest time is inside user already
        t = os.times()
        return time.monotonic(), busy_all, t.user + t.system

    def read(self) -> float | None:
        now = self._sample()
        if now is None or self.last is None:
            return None
        (t0, all0, me0), (t1, all1, me1) = self.last, now
        self.last = now
        if t1 - t0 <= 0:
            return None
        return max(0.0, ((all1 - all0) - (me1 - me0)) / (t1 - t0))


def threads_for(load: float, cores: int, most: int) -> int:
    """The intra-op threads to use when other processes keep ``load`` cores busy: the free cores,
    at least 1 and at most ``most`` (the count PyTorch would use on an idle machine). Half a core
    of load or more takes a core away."""
    return max(1, min(most, cores - int(load + 0.5)))


class ThreadGovernor(Callback):
    """Sets ``torch.set_num_threads`` from the measured load while a run trains (see the module's
    doc); ``changes`` records (epoch, step, threads) for the run's metrics."""

    def __init__(self, most: int | None = None, meter: LoadMeter | None = None):
        self.most = most or default_threads()
        self.cores = usable_cores()
        self.meter = meter
        self.changes: list[tuple[int, int, int]] = []
        self.pending: tuple[int, int] | None = None  # (threads wanted, windows in a row)
        self.t_last = 0.0

    def on_train_begin(self, state):
        """The first decision at once, from the load measured while the data loaded and the model
        was built (a meter made then; this process's own work there is not counted)."""
        if self.meter is None:
            self.meter = LoadMeter()
        if self.meter.last is None:
            return
        short = MIN_FIRST_S - (time.monotonic() - self.meter.last[0])
        if short > 0:  # at least a few clock ticks to measure (idle here, so all of it is others')
            time.sleep(short)
        load = self.meter.read()
        self.t_last = time.monotonic()
        if load is not None:
            self.set(state, 0, threads_for(load, self.cores, self.most))

    def set(self, state, step: int, want: int) -> None:
        if want != torch.get_num_threads():
            torch.set_num_threads(want)
            self.changes.append((state.epoch, step, want))
        self.pending = None

    def on_batch_end(self, state, step):
        now = time.monotonic()
        if now - self.t_last < WINDOW_S:
            return
        self.t_last = now
        load = self.meter.read()
        if load is None:
            return
        want = threads_for(load, self.cores, self.most)
        current = torch.get_num_threads()
        if want == current:
            self.pending = None
            return
        count = self.pending[1] + 1 if self.pending and self.pending[0] == want else 1
        self.pending = (want, count)
        if count >= CONFIRM:
            self.set(state, step, want)
