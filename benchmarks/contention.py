"""Issue 27, item 1: training beside busy processes, the notebooks' recipe on Fashion-MNIST.

    .venv/bin/python benchmarks/contention.py                        # 3 repeats, every arm, 0/1/2 competitors
    .venv/bin/python benchmarks/contention.py --repeats 1 --arms cnnlab cnnlab-1 --competitors 0 1

Arms, each a whole process, alternating within every repeat and condition:
- ``cnnlab``: ``cnnlab train fashion-mnist --epochs 2 --patience none`` with its default threads
  (the thread governor, engine/threads.py, picks the free cores);
- ``cnnlab-1``: the same with ``--threads 1``;
- ``cnnlab-all`` (on request): every core pinned, the default before the governor;
- ``keras``: the notebook's model and recipe for 2 epochs in TensorFlow (keras_race.py's script and
  scratch venv).
Conditions: an idle machine, then one and two competitors (``python -c 'while True: pass'`` at the
same priority), started before each arm and stopped after it. The figure is the median epoch time
(training only: each run's epoch times, mean of its 2 epochs), then the ratios asked for: cnnlab
against its own --threads 1 under the same load, and against Keras. The CPU is named; the load
before the run is checked (a benchmark beside another busy process is not a figure).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from keras_race import KERAS_SCRIPT, cpu, race_arguments, scratch_venv  # noqa: E402

# cnnlab-all: every core pinned, as the default was before the governor (the cliff it removes)
ARMS = {"cnnlab": [], "cnnlab-1": ["--threads", "1"], "cnnlab-all": ["--threads", str(os.cpu_count() or 1)]}


def competitors(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def loadavg() -> float:
    return float(open("/proc/loadavg").read().split()[0])


def run_arm(arm: str, work: Path, seed: int, epochs: int, py, script: Path, data: str) -> dict:
    if arm == "keras":
        env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
        out = subprocess.run([str(py), str(script), data, str(seed), str(epochs)], check=True, capture_output=True,
                             text=True, env=env).stdout
        r = json.loads(out.strip().splitlines()[-1])
        return {"epoch_s": statistics.mean(r["epoch_s"]), "test_accuracy": r["test_accuracy"]}
    runs = work / f"{arm}-{seed}-{time.time_ns()}"
    subprocess.run([sys.executable, "-m", "cnnlab", "train", "fashion-mnist", "--epochs", str(epochs), "--patience",
                    "none", *ARMS[arm], "--seed", str(seed), "--runs-dir", str(runs), "--no-report", "--quiet",
                    "--no-check"], check=True, capture_output=True)
    run = next(p for p in runs.iterdir() if p.is_dir())
    from cnnlab.runs import read_history

    m = json.loads((run / "metrics.json").read_text())
    hist = [h["time_s"] for h in read_history(run / "history.csv")]
    return {"epoch_s": statistics.mean(hist), "test_accuracy": m["test"]["accuracy"],
            "threads_changed": m.get("threads_changed")}


def main() -> None:
    ap = race_arguments(__doc__, ["cnnlab", "cnnlab-1", "keras"])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--competitors", nargs="+", type=int, default=[0, 1, 2])
    args = ap.parse_args()
    name, flags = cpu()
    print(f"CPU: {name}; flags: {', '.join(flags)}; {os.cpu_count()} cores; load average before: {loadavg():.2f}")
    work = Path(tempfile.mkdtemp(prefix="cnnlab-contention-"))
    script = work / "keras_notebook.py"
    script.write_text(KERAS_SCRIPT)
    py = scratch_venv(Path(args.venv)) if "keras" in args.arms else None
    results: dict = {(n, a): [] for n in args.competitors for a in args.arms}
    for rep in range(args.repeats):
        for n in args.competitors:
            for arm in args.arms:
                procs = competitors(n)
                time.sleep(0.5)
                try:
                    r = run_arm(arm, work, rep + 1, args.epochs, py, script, args.data)
                finally:
                    for p in procs:
                        p.kill()
                        p.wait()
                results[(n, arm)].append(r)
                print(f"repeat {rep + 1}, {n} competitor(s), {arm}: {r}", flush=True)
    print("\n| competitors | arm | epoch time (median) | test accuracy (median) | × own --threads 1 | × Keras |")
    print("|---|---|---|---|---|---|")
    table = {}
    for n in args.competitors:
        med = {a: statistics.median(r["epoch_s"] for r in results[(n, a)]) for a in args.arms}
        for a in args.arms:
            acc = statistics.median(r["test_accuracy"] for r in results[(n, a)])
            own = f"{med[a] / med['cnnlab-1']:.2f}" if "cnnlab-1" in med and a == "cnnlab" else "-"
            vs = f"{med[a] / med['keras']:.2f}" if "keras" in med and a.startswith("cnnlab") else "-"
            table[f"{n}/{a}"] = {"epoch_s": med[a], "test_accuracy": acc, "x_threads1": own, "x_keras": vs}
            print(f"| {n} | {a} | {med[a]:.1f} s | {acc:.4f} | {own} | {vs} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"cpu": name, "flags": flags, "table": table,
                                              "runs": {f"{n}/{a}": v for (n, a), v in results.items()}}, indent=2))


if __name__ == "__main__":
    main()
