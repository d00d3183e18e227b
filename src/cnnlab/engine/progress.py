"""A Keras-like progress bar per epoch on a terminal; one summary line per epoch in logs."""

from __future__ import annotations

import sys
import time


def format_logs(logs: dict, keys=("loss", "accuracy", "val_loss", "val_accuracy")) -> str:
    return " - ".join(f"{k}: {logs[k]:.4f}" for k in keys if logs.get(k) is not None)


class Progress:
    def __init__(self, epochs: int, steps: int, quiet: bool = False, stream=None):
        self.epochs, self.steps, self.quiet = epochs, steps, quiet
        self.stream = stream or sys.stderr
        self.live = not quiet and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = 0.0

    def epoch_begin(self, epoch: int) -> None:
        self.t0 = time.perf_counter()
        if self.live:
            self.stream.write(f"Epoch {epoch}/{self.epochs}\n")

    def step(self, step: int, logs: dict) -> None:
        if not self.live:
            return
        now = time.perf_counter()
        if now - self._last < 0.1 and step < self.steps:
            return
        self._last = now
        width = 30
        done = int(width * step / self.steps)
        bar = "=" * max(done - 1, 0) + (">" if done < width else "=") + "." * (width - done)
        elapsed = now - self.t0
        eta = elapsed / max(step, 1) * (self.steps - step)
        self.stream.write(f"\r{step:>{len(str(self.steps))}}/{self.steps} [{bar}] - ETA: {eta:4.0f}s"
                          f" - {format_logs(logs)}\033[K")
        self.stream.flush()

    def epoch_end(self, epoch: int, logs: dict, note: str = "") -> None:
        if self.quiet:
            return
        if self.live:  # the finished bar, as Keras leaves it
            head, tail = f"\r{self.steps}/{self.steps} [{'=' * 30}]", "\033[K"
        else:  # a log: one self-contained line per epoch
            head, tail = f"Epoch {epoch}/{self.epochs}", ""
        self.stream.write(f"{head} - {logs['time_s']:.1f}s - {format_logs(logs)}{note}{tail}\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if not self.quiet:
            self.stream.write(text + "\n")
            self.stream.flush()
