"""Issue 27, item 3: Fashion-MNIST time-to-accuracy records on this machine's CPU, airbench-style.

    .venv/bin/python benchmarks/records.py                       # every record, seeds 1 2 3
    .venv/bin/python benchmarks/records.py --records fast --seeds 4 5 6 --out /tmp/records.json

Each run is a whole ``cnnlab train fashion-mnist ... --no-report`` process, timed from its start to
its exit (process start, data loading, training and the one reading of the test set included).
Records alternate within each seed; the table shows medians over the seeds with every run's
figure, the goal, and FLOPs per image and per run as airbench reports them (multiply-adds of
convolutions and matrix products, 2 FLOPs each; models.flops). Every choice behind the presets was
made on a validation split (benchmarks/fast_screen.py); the test set is read once per run. The CPU
and the load average before the first run are printed: a figure taken beside a busy process is
not a record.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from keras_race import cpu  # noqa: E402

# name: (cnnlab train arguments, the goal: test accuracy, seconds)
RECORDS = {
    "fast": (["--model", "fast"], 0.935, 60),
    "record": (["--model", "record"], 0.940, 180),
    "best": (["--model", "best"], 0.945, 600),
}


def run_once(args: list[str], seed: int, work: Path) -> dict:
    runs = work / f"{seed}-{time.time_ns()}"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cnnlab", "train", "fashion-mnist", *args, "--seed", str(seed),
                    "--runs-dir", str(runs), "--no-report", "--quiet"], check=True, capture_output=True)
    wall = time.perf_counter() - t0
    run = next(p for p in runs.iterdir() if p.is_dir())
    m = json.loads((run / "metrics.json").read_text())
    data = json.loads((run / "data.json").read_text())
    import yaml

    settings = yaml.safe_load((run / "config.yaml").read_text())
    return {"seed": seed, "wall_s": round(wall, 1), "test_accuracy": m["test"]["accuracy"],
            "epochs": m["epochs_run"], "train_images": data["splits"]["train"],
            "tta": settings.get("tta", "none"), "precision": m["environment"].get("precision"), "run": str(run)}


def flops_of(args: list[str], runs: list[dict]) -> tuple[int, int]:
    """FLOPs per training image and per run (the median run's epochs; test images once, twice with
    the mirrored pass)."""
    from cnnlab.models import parse_spec, preset_spec
    from cnnlab.models.flops import count_flops

    flops = count_flops(parse_spec(preset_spec(args[args.index("--model") + 1])))
    r = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
    return flops.forward, flops.per_run(r["train_images"], r["epochs"], 10_000, 2 if r["tta"] == "flip" else 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", nargs="+", default=list(RECORDS), choices=list(RECORDS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--out", default=None, help="write every run's figures to this JSON file")
    args = ap.parse_args(argv)
    name, flags = cpu()
    from cnnlab.engine.threads import LoadMeter

    meter = LoadMeter()  # other processes' CPU now (the load average lags by a minute)
    time.sleep(3)
    load = meter.read() or 0.0
    print(f"CPU: {name}; flags: {', '.join(flags)}; {os.cpu_count()} cores; other processes' load before: "
          f"{load:.2f} cores")
    if load > 0.3:
        print("warning: the machine is busy; these figures are not records", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="cnnlab-records-"))
    results: dict = {r: [] for r in args.records}
    for seed in args.seeds:
        for rec in args.records:
            r = run_once(RECORDS[rec][0], seed, work)
            results[rec].append(r)
            print(f"seed {seed} {rec}: test {r['test_accuracy']:.4f} in {r['wall_s']} s ({r['epochs']} epochs)",
                  flush=True)
    print(f"\nFashion-MNIST test accuracy and wall time, medians of seeds {', '.join(map(str, args.seeds))}; {name}, "
          f"{os.cpu_count()} cores\n")
    print("| record | command | test accuracy (per seed) | wall time (per seed) | goal | FLOPs / image (forward) "
          "| FLOPs / run |\n|---|---|---|---|---|---|---|")
    table = {}
    for rec, runs in results.items():
        cmd, goal_acc, goal_s = RECORDS[rec]
        acc = statistics.median(r["test_accuracy"] for r in runs)
        wall = statistics.median(r["wall_s"] for r in runs)
        per_image, per_run = flops_of(cmd, runs)
        met = "✓" if acc >= goal_acc and wall <= goal_s else "✗"
        table[rec] = {"test_accuracy": acc, "wall_s": wall, "flops_per_image": per_image, "flops_per_run": per_run,
                      "goal": [goal_acc, goal_s], "met": met == "✓"}
        accs = " / ".join(f"{r['test_accuracy']:.4f}" for r in runs)
        walls = " / ".join(str(r["wall_s"]) for r in runs)
        print(f"| {rec} | `cnnlab train {' '.join(cmd)}` | {acc:.4f} ({accs}) "
              f"| {wall:.1f} s ({walls}) | ≥ {goal_acc} in ≤ {goal_s} s {met} "
              f"| {per_image / 1e6:.1f} M | {per_run / 1e12:.2f} T |")
    if args.out:
        Path(args.out).write_text(json.dumps({"cpu": name, "flags": flags, "load_before": load, "runs": results,
                                              "table": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
