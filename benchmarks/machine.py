"""What a benchmark prints first: the CPU, its cores, and other processes' load (a figure measured
beside a busy process is not a figure)."""

from __future__ import annotations

import os
import time


def announce() -> float:
    """Print the CPU, the cores and other processes' load over 2 s; returns that load (cores)."""
    from cnnlab.engine.threads import LoadMeter

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    meter = LoadMeter()
    time.sleep(2)
    load = meter.read() or 0.0
    print(f"CPU: {cpu}; {os.cpu_count()} cores; other processes' load before: {load:.2f} cores", flush=True)
    return load
