"""The training loop's concerns as callbacks (Keras' callbacks, Lightning's pure stopping rule):
best checkpoint, early stopping, history, time limit and progress. The loop calls them and only
hears "stop"; a user's own callback (``cnnlab.train(..., callbacks=[...])``) is called the same way.

A callback overrides any of ``on_train_begin(state)``, ``on_epoch_begin(state)``,
``on_batch_end(state, step)``, ``on_epoch_end(state, logs)`` and ``on_train_end(state)``;
``state.request_stop(reason)`` ends training after the current batch (``on_batch_end``) or epoch.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def is_improvement(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if value is None or math.isnan(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def early_stopping(values: list[float], mode: str, patience: int | None,
                   min_delta: float = 0.0) -> tuple[bool, int | None, str]:
    """Keras' EarlyStopping rule over a history of monitored values.

    Returns (stop, index of the best epoch, reason). Training stops once ``patience`` epochs
    in a row bring no improvement larger than ``min_delta`` over the best so far.
    """
    best, best_i, wait = None, None, 0
    for i, v in enumerate(values):
        if is_improvement(v, best, mode, min_delta):
            best, best_i, wait = v, i, 0
        else:
            wait += 1
    if patience is not None and best_i is not None and wait >= max(patience, 1):
        return True, best_i, (f"no improvement larger than {min_delta:g} for {wait} epochs "
                              f"(patience {patience})")
    return False, best_i, ""


def mode_of(monitor: str) -> str:
    return "min" if monitor.endswith("loss") else "max"


@dataclass
class TrainState:
    """What the loop shares with its callbacks."""

    model: object
    epochs: int
    steps: int  # batches per epoch
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    status: str = "completed"  # completed | early_stopped | time_limit | interrupted | nan_loss | stopped
    stop_reason: str = "all epochs run"
    stop: bool = False  # set by request_stop: the loop ends after this batch or epoch
    best_epoch: int | None = None  # 1-based, set by BestCheckpoint
    note: str = ""  # a remark for the epoch's progress line (e.g. "val_loss improved")
    nan_at: str | None = None
    t_start: float = 0.0
    running: Callable[[], dict] = lambda: {}  # this epoch's loss and accuracy so far (synchronises)
    optimizer: Any = None
    generators: dict = field(default_factory=dict)  # the loop's own random generators, by name
    resumed_from: int | None = None  # the last finished epoch a resumed run starts after
    dist: object = None  # engine.distributed.Dist: this process's rank among data-parallel processes
    scaler: object = None  # torch.amp.GradScaler with float16 on CUDA
    run_dir: str | None = None  # the run directory being written (None in a process that writes none)
    partial_epoch: bool = False  # the last epoch stopped before its last batch (a time limit, a signal)
    best_state: dict | None = None  # the best epoch's weights so far (BestCheckpoint keeps them)

    def request_stop(self, reason: str, status: str = "stopped") -> None:
        if not self.stop:
            self.stop, self.status, self.stop_reason = True, status, reason


class Callback:
    """A no-op base: override the hooks you need."""

    def on_train_begin(self, state: TrainState) -> None: ...

    def on_epoch_begin(self, state: TrainState) -> None: ...

    def on_batch_end(self, state: TrainState, step: int) -> None: ...

    def on_epoch_end(self, state: TrainState, logs: dict) -> None: ...

    def on_train_end(self, state: TrainState) -> None: ...


def call(callbacks: list, hook: str, *args) -> None:
    """Call ``hook`` on every callback that has it (a user's may define only some)."""
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(*args)


class BestCheckpoint(Callback):
    """Keeps the best epoch's weights by ``monitor``; ``save(epoch, state_dict)`` writes them; at the
    end the best weights are restored when ``restore_best`` (always after a NaN loss). A resumed
    run passes the best weights saved so far as ``best_state``."""

    def __init__(self, monitor: str, min_delta: float, restore_best: bool,
                 save: Callable[[int, dict], None] | None = None, best_state: dict | None = None):
        self.monitor, self.mode, self.min_delta = monitor, mode_of(monitor), min_delta
        self.restore_best, self.save = restore_best, save
        self.best_value, self.best_state = None, best_state

    def on_train_begin(self, state):
        if state.best_epoch is not None and state.history:  # resumed: the best so far stays the best
            self.best_value = state.history[state.best_epoch - 1][self.monitor]
        state.best_state = self.best_state

    def on_epoch_end(self, state, logs):
        state.note = ""
        if is_improvement(logs[self.monitor], self.best_value, self.mode, self.min_delta):
            self.best_value, state.best_epoch = logs[self.monitor], state.epoch
            self.best_state = state.best_state = copy.deepcopy(state.model.state_dict())
            state.note = f" - {self.monitor} improved"
            if self.save is not None:
                self.save(state.epoch, self.best_state)

    def on_train_end(self, state):
        if self.best_state is not None and (self.restore_best or state.status == "nan_loss"):
            state.model.load_state_dict(self.best_state)


class EarlyStopping(Callback):
    """Stops when ``patience`` epochs bring no improvement of ``monitor`` (the pure rule above)."""

    def __init__(self, monitor: str, patience: int | None, min_delta: float):
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode_of(monitor), patience, min_delta

    def on_epoch_end(self, state, logs):
        if state.stop:
            return
        stop, _, reason = early_stopping([h[self.monitor] for h in state.history], self.mode, self.patience,
                                         self.min_delta)
        if stop:
            state.request_stop(f"early stopping on {self.monitor}: {reason}", "early_stopped")


class TimeLimit(Callback):
    """Stops after the batch that passes ``seconds`` of training; that partial epoch is still
    validated, so a model always has a best epoch to restore."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_batch_end(self, state, step):
        if time.perf_counter() - state.t_start > self.seconds:
            state.request_stop(f"time limit of {self.seconds:g} s reached in epoch {state.epoch} "
                               f"(after {step} of {state.steps} batches)", "time_limit")


class HistoryWriter(Callback):
    """``write(history)`` after every epoch (history.csv, through the run directory)."""

    def __init__(self, write: Callable[[list[dict]], None]):
        self.write = write

    def on_epoch_end(self, state, logs):
        self.write(state.history)


class ProgressBar(Callback):
    """The Keras-like bar on a terminal, one line per epoch in a log (engine/progress.py)."""

    def __init__(self, progress):
        self.progress = progress

    def on_epoch_begin(self, state):
        self.progress.epoch_begin(state.epoch)

    def on_batch_end(self, state, step):
        if self.progress.live:
            self.progress.step(step, state.running())

    def on_epoch_end(self, state, logs):
        self.progress.epoch_end(state.epoch, logs, state.note)


class ResumePoint(Callback):
    """After every epoch (and the callbacks before it), ``save(training_state(state))``: everything a
    resumed run needs to continue as if it had not stopped (engine/loop.py: ``fit(..., resume=)``).
    Data-parallel: every rank takes part (each rank's random states are gathered); ``save`` is None
    on all but the rank that writes."""

    def __init__(self, save: Callable[[dict], None] | None, extra: Callable[[TrainState], dict] | None = None):
        self.save, self.extra = save, extra

    def on_train_begin(self, state):
        if state.epoch == 0:  # a point before the first epoch: a run stopped in epoch 1 resumes too
            self.on_epoch_end(state, {})

    def on_epoch_end(self, state, logs):
        from .distributed import SINGLE
        from .resume import training_state

        if state.partial_epoch:  # stopped mid-epoch: the last whole epoch's point is where to go on from
            return
        point = training_state(state, state.dist or SINGLE)
        if self.save is not None:
            self.save({**point, **(self.extra(state) if self.extra else {})})


class Unfreeze(Callback):
    """Two-phase fine-tuning: after ``after_epoch`` epochs the layers ``layers`` train again, with a
    fresh optimizer from ``optimizer()`` (at the lower learning rate), as Keras' guide recompiles."""

    def __init__(self, after_epoch: int, layers: list[int], optimizer: Callable[[], object]):
        self.after_epoch, self.layers, self.optimizer = after_epoch, list(layers), optimizer

    def on_epoch_begin(self, state):
        if state.epoch == self.after_epoch + 1:
            for i in self.layers:
                state.model.unfreeze(i)
            state.optimizer = self.optimizer()
