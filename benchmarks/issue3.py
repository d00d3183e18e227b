"""Issue 3's speed goals in one table: median, min and max over runs, goal and whether it is met.

    .venv/bin/python benchmarks/issue3.py                    # items 1, 3, 4, 5 (about 25 minutes)
    .venv/bin/python benchmarks/issue3.py --items 1 --seeds 1 2 3
    .venv/bin/python benchmarks/issue3.py --items 2          # the `best` preset: 3 x up to 20 minutes

1. `cnnlab train --model fast`: test accuracy and wall time of the whole command (process start
   and data loading included; the HTML report only with --report), one run per seed.
2. `cnnlab train --model best`: the same.
3. `cnnlab train --model fashion-cnn --recipe fast`: the same; the goal is a third of the Keras
   recipe's 413 s measured with Keras/TensorFlow on this machine (issue 3).
4. Epoch time of cnnlab's loop / a plain PyTorch loop, side by side (benchmarks/speed.py).
5. Prediction throughput of the Python API on 10,000 in-memory images, and of `cnnlab predict`
   on 2,000 PNG files (benchmarks/speed.py).

Training runs go to runs/issue3/; the test set is read once per run, for its final number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

KERAS_RECIPE_S = 413.0  # Keras/TensorFlow, fashion-cnn, batch 32, patience 2, this machine (issue 3)
TRAIN_ITEMS = {
    1: ("fast preset", ["--model", "fast"], 0.920, 90.0, 0.917),
    2: ("best preset", ["--model", "best"], 0.945, 1200.0, None),
    3: ("fashion-cnn --recipe fast", ["--model", "fashion-cnn", "--recipe", "fast"], 0.912, KERAS_RECIPE_S / 3, None),
}


def train_once(args: list[str], seed: int, runs_dir: str, report: bool = False) -> dict:
    exe = Path(sys.executable).with_name("cnnlab")
    t0 = time.perf_counter()
    out = subprocess.run([str(exe), "train", *args, "--seed", str(seed), "--runs-dir", runs_dir, "--quiet",
                          *([] if report else ["--no-report"])], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"cnnlab train {' '.join(args)} failed:\n{out.stderr}")
    run_dir = next(line.split("run written to ", 1)[1].strip() for line in out.stdout.splitlines()
                   if line.startswith("run written to "))
    m = json.loads((Path(run_dir) / "metrics.json").read_text())
    return {"seed": seed, "test_accuracy": m["test"]["accuracy"], "wall_s": wall, "epochs": m["epochs_run"],
            "run": run_dir}


def spread(values: list[float], fmt: str) -> tuple[str, str, str]:
    return tuple(format(v, fmt) for v in (statistics.median(values), min(values), max(values)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", nargs="+", type=int, default=[1, 3, 4, 5], choices=[1, 2, 3, 4, 5])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--repeats", type=int, default=3, help="repeats for items 4 and 5")
    ap.add_argument("--runs-dir", default="runs/issue3")
    ap.add_argument("--json", default=None)
    ap.add_argument("--report", action="store_true",
                    help="time training runs with the HTML report, as a plain `cnnlab train` writes it")
    args = ap.parse_args(argv)
    rows, raw = [], {}
    for item in (i for i in args.items if i in TRAIN_ITEMS):
        name, targs, acc_goal, time_goal, floor = TRAIN_ITEMS[item]
        runs = []
        for seed in args.seeds:
            runs.append(train_once(targs, seed, args.runs_dir, args.report))
            r = runs[-1]
            print(f"  item {item} seed {seed}: test {r['test_accuracy']:.4f}, {r['wall_s']:.1f} s, "
                  f"{r['epochs']} epochs", file=sys.stderr, flush=True)
        raw[item] = runs
        accs, walls = [r["test_accuracy"] for r in runs], [r["wall_s"] for r in runs]
        ok_acc = statistics.median(accs) >= acc_goal and (floor is None or min(accs) >= floor)
        floor_text = f", none < {floor:.3f}" if floor else ""
        rows.append([f"{item}", f"{name}: test accuracy", f"{len(runs)} seeds", *spread(accs, ".4f"),
                     f"≥ {acc_goal:.3f}{floor_text}", "✓" if ok_acc else "✗"])
        report = ", with the report" if args.report else ""
        rows.append([f"{item}", f"{name}: wall time{report}, s", f"{len(runs)} seeds", *spread(walls, ".1f"),
                     f"≤ {time_goal:.0f}", "✓" if statistics.median(walls) <= time_goal else "✗"])
    if 4 in args.items or 5 in args.items:
        sys.path.insert(0, str(Path(__file__).parent))
        from speed import api_rates, cnnlab_epoch, fresh, plain_epoch, png_rates  # noqa: E402

        import cnnlab
        from cnnlab.data.preprocess import Preprocessing
        from cnnlab.engine.loop import to_tensor

        ds = cnnlab.load_dataset("fashion-mnist", val_split=0.2, seed=42)
        if 4 in args.items:
            x_tr, y_tr = ds["train"].x, torch.from_numpy(ds["train"].y)
            x_float = torch.from_numpy(x_tr).permute(0, 3, 1, 2).contiguous().float() / 255.0
            x_u8, prep = to_tensor(x_tr, "cpu"), Preprocessing.fit("255", x_tr)
            plain, ours = [], []
            for r in range(args.repeats):
                plain.append(plain_epoch(fresh("fashion-cnn", r).to(memory_format=torch.contiguous_format),
                                         x_float, y_tr, 32))
                ours.append(cnnlab_epoch(fresh("fashion-cnn", r), x_u8, y_tr, prep, 32))
                print(f"  item 4 repeat {r + 1}: plain {plain[-1]:.1f} s, cnnlab {ours[-1]:.1f} s", file=sys.stderr)
            ratio = statistics.median(ours) / statistics.median(plain)
            raw[4] = {"plain_s": plain, "cnnlab_s": ours}
            rows.append(["4", "epoch time, plain PyTorch loop, s (fashion-cnn, batch 32)", f"{args.repeats}",
                         *spread(plain, ".1f"), "", ""])
            rows.append(["4", "epoch time, cnnlab, s", f"{args.repeats}", *spread(ours, ".1f"), "", ""])
            rows.append(["4", "ratio cnnlab / plain (of medians)", "", f"{ratio:.3f}", "", "", "≤ 0.8",
                         "✓" if ratio <= 0.8 else "✗"])
        if 5 in args.items:
            run = cnnlab.train(ds, model="fashion-cnn", epochs=1, batch_size=256, quiet=True, patience=None,
                               runs_dir=tempfile.mkdtemp(prefix="cnnlab-issue3-"))
            rates = api_rates(run, ds["test"].x, args.repeats)
            rows.append(["5", "prediction, Python API, images/s (10,000 in memory)", f"{args.repeats}",
                         *spread(rates, ",.0f"), "≥ 20,000", "✓" if statistics.median(rates) >= 20000 else "✗"])
            files = png_rates(run, ds["test"].x, args.repeats)
            raw[5] = {"api_images_per_s": rates, "png_files_per_s": files}
            rows.append(["5", "`cnnlab predict`, PNG files/s (2,000 files, process start included)",
                         f"{args.repeats}", *spread(files, ",.0f"), "(reported)", ""])
    print(f"\nissue 3 on {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    print("| item | measure | runs | median | min | max | goal | met |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "raw": raw}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
