"""The thread governor (issue 27): training uses the cores other processes leave free."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab.engine import threads as gov
from cnnlab.engine.callbacks import TrainState
from conftest import TINY_SPEC, bars


@pytest.mark.parametrize("load,cores,most,want", [
    (0.0, 2, 2, 2), (0.3, 2, 2, 2), (0.6, 2, 2, 1), (1.0, 2, 2, 1), (2.0, 2, 2, 1), (1.0, 8, 8, 7),
    (3.4, 8, 8, 5), (0.0, 8, 4, 4), (9.0, 8, 8, 1)])
def test_threads_for_the_free_cores(load, cores, most, want):
    assert gov.threads_for(load, cores, most) == want


class FakeMeter:
    def __init__(self, loads):
        self.loads, self.last = list(loads), (time.monotonic() - 1.0, 0.0, 0.0)

    def read(self):
        return self.loads.pop(0) if self.loads else 0.0


def test_the_governor_follows_the_load_and_waits_for_two_windows(monkeypatch):
    monkeypatch.setattr(gov, "WINDOW_S", 0.0)
    monkeypatch.setattr(gov, "usable_cores", lambda: 2)
    start = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        g = gov.ThreadGovernor(most=2, meter=FakeMeter([1.0, 1.0, 0.0, 1.0, 0.0, 0.0]))
        state = TrainState(None, 3, 10)
        g.on_train_begin(state)  # the load while the data loaded: one busy process
        assert torch.get_num_threads() == 1 and g.changes == [(0, 0, 1)]
        state.epoch = 1
        g.on_batch_end(state, 1)  # still busy
        g.on_batch_end(state, 2)  # idle once: not yet
        assert torch.get_num_threads() == 1
        g.on_batch_end(state, 3)  # busy again: the count stays
        g.on_batch_end(state, 4)
        g.on_batch_end(state, 5)  # idle twice in a row: back to both cores
        assert torch.get_num_threads() == 2 and g.changes[-1] == (1, 5, 2)
    finally:
        torch.set_num_threads(start)


def test_the_load_meter_sees_a_busy_process_and_not_this_one():
    meter = gov.LoadMeter()
    if meter.last is None:
        pytest.skip("no /proc/stat here")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.1)
        meter.read()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.6:  # this process busy too: it is not counted
            sum(range(10000))
        load = meter.read()
    finally:
        busy.kill()
        busy.wait()
    assert 0.5 <= load <= 1.5, load


def test_training_beside_busy_processes_takes_the_free_cores_and_says_so(tmp_path):
    if gov.default_threads() < 2 or gov.LoadMeter().last is None:
        pytest.skip("one core, or no /proc/stat: nothing to give up")
    x, y = bars(20)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(gov.usable_cores())]
    try:
        time.sleep(0.2)
        run = cnnlab.train((x, y), model=TINY_SPEC, epochs=1, runs_dir=str(tmp_path), quiet=True)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert run.metrics["threads_changed"][0]["threads"] == 1
    pinned = cnnlab.train((x, y), model=TINY_SPEC, epochs=1, runs_dir=str(tmp_path), quiet=True, threads=2)
    assert "threads_changed" not in pinned.metrics  # --threads pins the count
    assert torch.get_num_threads() == 2


def test_an_idle_machine_trains_as_before_bit_for_bit(tmp_path):
    """Without load the governor changes nothing: the same history as with the count pinned."""
    x, y = bars(20)
    a = cnnlab.train((x, y), model=TINY_SPEC, epochs=2, runs_dir=str(tmp_path / "a"), quiet=True, seed=4,
                     threads=gov.default_threads())
    b = cnnlab.train((x, y), model=TINY_SPEC, epochs=2, runs_dir=str(tmp_path / "b"), quiet=True, seed=4)
    if "threads_changed" in b.metrics:
        pytest.skip("the machine was busy during the test")
    keys = ("loss", "accuracy", "val_loss", "val_accuracy")
    assert [[h[k] for k in keys] for h in a.history] == [[h[k] for k in keys] for h in b.history]
    assert np.array_equal(a.predict_proba(x), b.predict_proba(x))
