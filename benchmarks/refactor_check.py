"""Issue 29: a refactor keeps behaviour. Two runs whose histories and weights must be bit-identical
before and after any change to the training orchestration:

1. `cnnlab.train("digits", model="fast", seed=7, epochs=3, threads=2)` (the fast preset's recipe:
   flips, the mirrored test pass, a one-cycle schedule, bf16 where the CPU has it);
2. the same run killed with SIGKILL at batch 5 of epoch 2, then `cnnlab train --resume RUN`.

Prints one SHA-256 per run: of history.csv without its time column, and of every tensor of
model.safetensors and best.safetensors (names, dtypes, shapes, bytes). Record the line before a
change and compare after it, on the same machine (bf16 kernels differ between CPUs):

    .venv/bin/python benchmarks/refactor_check.py            # prints the hashes
    .venv/bin/python benchmarks/refactor_check.py --expect HASH1 HASH2
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

OPTIONS = {"model": "fast", "seed": 7, "epochs": 3, "threads": 2, "quiet": True}


def run_hash(run: Path) -> str:
    from safetensors.numpy import load_file

    h = hashlib.sha256()
    with open(run / "history.csv") as f:
        for row in csv.DictReader(f):
            h.update(repr(sorted((k, v) for k, v in row.items() if k != "time_s")).encode())
    for name in ("model.safetensors", "best.safetensors"):
        if (run / name).is_file():
            for k, a in sorted(load_file(str(run / name)).items()):
                h.update(f"{name}:{k}:{a.dtype}:{a.shape}".encode())
                h.update(a.tobytes())
    return h.hexdigest()


def train(runs: Path, kill: bool) -> subprocess.CompletedProcess:
    """cnnlab.train("digits", **OPTIONS) in a fresh process; ``kill``: SIGKILL at batch 5 of epoch 2."""
    script = textwrap.dedent(f"""
        import os, signal
        import cnnlab

        class Kill(cnnlab.Callback):
            def on_batch_end(self, state, step):
                if {kill!r} and state.epoch == 2 and step == 5:
                    os.kill(os.getpid(), signal.SIGKILL)

        cnnlab.train("digits", callbacks=[Kill()], runs_dir={str(runs)!r}, **{OPTIONS!r})
    """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=1200)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--expect", nargs=2, metavar=("WHOLE", "RESUMED"))
    args = ap.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    work = Path(tempfile.mkdtemp(prefix="cnnlab-refactor-"))
    done = train(work / "whole", kill=False)
    if done.returncode:
        sys.exit(f"the whole run failed:\n{done.stderr}")
    whole = run_hash(next((work / "whole").iterdir()))
    done = train(work / "killed", kill=True)
    if done.returncode != -9:
        sys.exit(f"the run to kill was not killed (exit {done.returncode}):\n{done.stderr}")
    killed = next((work / "killed").iterdir())
    done = subprocess.run([sys.executable, "-m", "cnnlab.cli", "train", "--resume", str(killed), "--no-report",
                           "--quiet"], capture_output=True, text=True, timeout=1200)
    if done.returncode:
        sys.exit(f"--resume failed:\n{done.stderr}")
    resumed = run_hash(killed)
    print(f"CPU: {cpu}")
    print(f"whole run:   {whole}")
    print(f"resumed run: {resumed}")
    if args.expect:
        ok = [whole, resumed] == args.expect
        print("identical to the expected hashes" if ok else "DIFFERENT from the expected hashes")
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
