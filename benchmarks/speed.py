"""Engine and prediction speed on the real Fashion-MNIST, measured side by side in one process.

    .venv/bin/python benchmarks/speed.py                 # epoch-time ratio + prediction throughput
    .venv/bin/python benchmarks/speed.py --repeats 5 --batch-sizes 32 256

1. Epoch time of cnnlab's loop vs a plain PyTorch loop written the obvious way (a DataLoader
   over a TensorDataset of float32 NCHW tensors, scaled to [0, 1] beforehand), for the same
   architecture, batch size, optimizer (Adam) and one epoch over the 48,000 training images.
   The two alternate (plain, cnnlab, plain, cnnlab, ...) so drift hits both alike; the ratio
   is median(cnnlab) / median(plain).
2. Prediction throughput of the Python API (an in-memory uint8 batch of the 10,000 test
   images) and of `cnnlab predict` reading PNG files.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import cnnlab
from cnnlab.config import TrainConfig
from cnnlab.data.preprocess import Preprocessing
from cnnlab.engine.loop import FitData, fit, plan_from, to_tensor
from cnnlab.models import build_module, spec_from


def plain_epoch(model, x_float, y, batch_size: int) -> float:
    """The obvious PyTorch loop: DataLoader over float32 NCHW tensors."""
    loader = DataLoader(TensorDataset(x_float, y), batch_size=batch_size, shuffle=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    t = time.perf_counter()
    for xb, yb in loader:
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
    return time.perf_counter() - t


def cnnlab_epoch(model, x_u8, y, prep, batch_size: int) -> float:
    t = time.perf_counter()
    fit(model, FitData(x_u8, y, None, None, prep), plan_from(TrainConfig(epochs=1, batch_size=batch_size)), [])
    return time.perf_counter() - t


def fresh(model_name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_module(spec_from(model_name, (28, 28, 1), 10))


def api_rates(run, x, repeats: int) -> list[float]:
    """Images per second of ``run.predict_proba`` on in-memory uint8 images, one per repeat."""
    run.predict_proba(x[:2048])  # warm-up
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        run.predict_proba(x)
        rates.append(len(x) / (time.perf_counter() - t))
    return rates


PNG_FILES = 2000


def png_rates(run, x, repeats: int) -> list[float]:
    """Files per second of the `cnnlab predict` command on PNG files (process start included)."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        for i in range(PNG_FILES):
            Image.fromarray(x[i, ..., 0]).save(Path(tmp) / f"{i}.png")
        exe = Path(sys.executable).with_name("cnnlab")
        rates = []
        for _ in range(repeats):
            t = time.perf_counter()
            subprocess.run([str(exe), "predict", str(run.path), tmp, "--out", str(Path(tmp) / "p.csv")],
                           check=True, capture_output=True)
            rates.append(PNG_FILES / (time.perf_counter() - t))
    return rates


def stats(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="fashion-cnn")
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[32])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-engine", action="store_true")
    ap.add_argument("--skip-predict", action="store_true")
    args = ap.parse_args(argv)

    ds = cnnlab.load_dataset("fashion-mnist", val_split=0.2, seed=42)
    x_tr, y_tr = ds["train"].x, torch.from_numpy(ds["train"].y)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {args.model}, "
          f"{len(x_tr):,} training images per epoch\n")

    if not args.skip_engine:
        x_float = torch.from_numpy(x_tr).permute(0, 3, 1, 2).contiguous().float() / 255.0
        x_u8 = to_tensor(x_tr, "cpu")
        prep = Preprocessing.fit("255", x_tr)
        print("| batch | plain PyTorch epoch s | cnnlab epoch s | ratio cnnlab/plain |")
        print("|---|---|---|---|")
        for bs in args.batch_sizes:
            plain, ours = [], []
            for r in range(args.repeats):
                # the obvious module: default (NCHW) memory format, as nn.Module code gets it
                plain_model = fresh(args.model, r).to(memory_format=torch.contiguous_format)
                plain.append(plain_epoch(plain_model, x_float, y_tr, bs))
                ours.append(cnnlab_epoch(fresh(args.model, r), x_u8, y_tr, prep, bs))
                print(f"  batch {bs} repeat {r + 1}: plain {plain[-1]:.2f}s cnnlab {ours[-1]:.2f}s",
                      file=sys.stderr)
            ratio = statistics.median(ours) / statistics.median(plain)
            print(f"| {bs} | {stats(plain)} | {stats(ours)} | {ratio:.3f} |")
        print()

    if not args.skip_predict:
        run = cnnlab.train(ds, model=args.model, epochs=1, batch_size=256, quiet=True,
                           runs_dir=tempfile.mkdtemp(prefix="cnnlab-speed-"), patience=None)
        x_te = ds["test"].x
        rates = api_rates(run, x_te, args.repeats)
        print(f"prediction, Python API, {len(x_te):,} in-memory images: "
              f"{statistics.median(rates):,.0f} images/s (min {min(rates):,.0f}, max {max(rates):,.0f})")
        rates = png_rates(run, x_te, args.repeats)
        print(f"prediction, `cnnlab predict` on {PNG_FILES:,} PNG files (process start included): "
              f"{statistics.median(rates):,.0f} files/s (min {min(rates):,.0f}, max {max(rates):,.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
