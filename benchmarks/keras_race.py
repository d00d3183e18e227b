"""Issue 19, item 2: cnnlab against the notebooks' Keras recipe, in one script, on one machine.

    .venv/bin/python benchmarks/keras_race.py                       # 3 repeats, every arm
    .venv/bin/python benchmarks/keras_race.py --repeats 1 --arms keras cnnlab-keras

1. A scratch virtual environment (``--venv``, not cnnlab's) gets TensorFlow from PyPI
   (tensorflow-cpu, else tensorflow) with the Keras 3 it brings; made once, then reused.
2. Arms, each a whole process timed from start to exit, alternating within every repeat:
   - ``keras``: the notebook (seeds 001/003): Fashion-MNIST from the Debian IDX files, pixels
     / 255, Conv32-Pool-Conv64-Pool-Flatten-Dense100-Dropout0.4-Dense10, Adam, batch 32,
     ``validation_split=0.2``, EarlyStopping(patience=2, restore_best_weights=True) over up to
     20 epochs, then ``evaluate`` on the test set;
   - ``cnnlab-keras``: ``cnnlab train fashion-mnist`` (the same model and recipe; its validation
     split is stratified and shuffled where Keras takes the last 20%);
   - ``cnnlab-fast-recipe``: ``--recipe fast``; ``cnnlab-fast``: ``--model fast``;
   - ``cnnlab-best``: ``--model best``, when that preset exists.
   cnnlab runs with ``--no-report`` (the report is not part of the Keras script either).
3. One table: median test accuracy, median wall time, ratio to Keras' wall time; the CPU model
   and its bf16 / AVX-512 flags.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KERAS_SCRIPT = r'''
import gzip, json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import keras
from keras import layers

def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)

d = sys.argv[1]
x, y = idx(f"{d}/train-images-idx3-ubyte.gz"), idx(f"{d}/train-labels-idx1-ubyte.gz")
xt, yt = idx(f"{d}/t10k-images-idx3-ubyte.gz"), idx(f"{d}/t10k-labels-idx1-ubyte.gz")
x = (x / 255.0).reshape(-1, 28, 28, 1)
xt = (xt / 255.0).reshape(-1, 28, 28, 1)
keras.utils.set_random_seed(int(sys.argv[2]))
model = keras.Sequential([
    keras.Input((28, 28, 1)),
    layers.Conv2D(32, 3, activation="relu", padding="same"), layers.MaxPooling2D(2),
    layers.Conv2D(64, 3, activation="relu", padding="same"), layers.MaxPooling2D(2),
    layers.Flatten(), layers.Dense(100, activation="relu"), layers.Dropout(0.4),
    layers.Dense(10, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
# argv[3]: a fixed number of epochs without early stopping (benchmarks/contention.py); else the notebook's
fixed = int(sys.argv[3]) if len(sys.argv) > 3 else None
stop = keras.callbacks.EarlyStopping(patience=2, restore_best_weights=True)

class EpochTimes(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        times.append(time.perf_counter() - self.t0)

times = []
hist = model.fit(x, y, epochs=fixed or 20, batch_size=32, validation_split=0.2,
                 callbacks=[EpochTimes()] + ([] if fixed else [stop]), verbose=0)
loss, acc = model.evaluate(xt, yt, verbose=0)
print(json.dumps({"test_accuracy": float(acc), "epochs": len(hist.history["loss"]), "epoch_s": times,
                  "keras": keras.__version__, "backend": keras.backend.backend()}))
'''

CNNLAB_ARMS = {
    "cnnlab-keras": [],
    "cnnlab-fast-recipe": ["--recipe", "fast"],
    "cnnlab-fast": ["--model", "fast"],
    "cnnlab-best": ["--model", "best"],
}


def cpu() -> tuple[str, list[str]]:
    name, flags = "?", []
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name") and name == "?":
            name = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = [f for f in line.split(":", 1)[1].split() if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")]
    return name, flags


def scratch_venv(path: Path) -> Path:
    py = path / "bin" / "python"
    if py.is_file() and subprocess.run([str(py), "-c", "import tensorflow"], capture_output=True).returncode == 0:
        return py
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    for pkg in ("tensorflow-cpu", "tensorflow"):
        if subprocess.run([str(py), "-m", "pip", "install", "-q", pkg]).returncode == 0:
            return py
    raise SystemExit("could not install TensorFlow in the scratch venv")


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return time.perf_counter() - t0, out


def race_arguments(doc: str, arms: list[str]) -> argparse.ArgumentParser:
    """The options every race against Keras takes (this script and contention.py)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--arms", nargs="+", default=arms)
    ap.add_argument("--venv", default=".keras-race-venv")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--out", default=None)
    return ap


def main() -> None:
    args = race_arguments(__doc__, ["keras", *CNNLAB_ARMS]).parse_args()
    name, flags = cpu()
    print(f"CPU: {name}; flags: {', '.join(flags)}; {os.cpu_count()} cores")
    from cnnlab.models import PRESETS

    arms = [a for a in args.arms if a != "cnnlab-best" or "best" in PRESETS]
    if len(arms) < len(args.arms):
        print("cnnlab-best left out: there is no `best` preset yet")
    work = Path(tempfile.mkdtemp(prefix="cnnlab-race-"))
    script = work / "keras_notebook.py"
    script.write_text(KERAS_SCRIPT)
    py = scratch_venv(Path(args.venv)) if "keras" in arms else None
    results: dict = {a: [] for a in arms}
    for rep in range(args.repeats):
        for arm in arms:
            seed = rep + 1
            if arm == "keras":
                env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
                wall, out = timed([str(py), str(script), args.data, str(seed)], env)
                r = json.loads(out.strip().splitlines()[-1])
            else:
                runs = work / arm
                wall, _ = timed([sys.executable, "-m", "cnnlab", "train", "fashion-mnist", *CNNLAB_ARMS[arm],
                                 "--seed", str(seed), "--runs-dir", str(runs), "--no-report", "--quiet"])
                run = sorted(p for p in runs.iterdir() if p.is_dir())[-1]
                m = json.loads((run / "metrics.json").read_text())
                r = {"test_accuracy": m["test"]["accuracy"], "epochs": m["epochs_run"],
                     "precision": m["environment"].get("precision")}
            r["wall_s"] = round(wall, 1)
            results[arm].append(r)
            print(f"repeat {rep + 1} {arm}: {r}", flush=True)
    keras_wall = statistics.median(r["wall_s"] for r in results["keras"]) if "keras" in results else None
    print("\n| arm | test accuracy (median) | wall time (median) | × Keras |\n|---|---|---|---|")
    table = {}
    for arm, rs in results.items():
        acc = statistics.median(r["test_accuracy"] for r in rs)
        wall = statistics.median(r["wall_s"] for r in rs)
        ratio = f"{wall / keras_wall:.2f}" if keras_wall else "-"
        table[arm] = {"test_accuracy": acc, "wall_s": wall, "ratio": ratio}
        print(f"| {arm} | {acc:.4f} | {wall:.1f} s | {ratio} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"cpu": name, "flags": flags, "runs": results, "table": table},
                                             indent=2))


if __name__ == "__main__":
    main()
