"""Screen candidate architectures and recipes for the `fast` preset on the validation split.

    .venv/bin/python benchmarks/fast_screen.py                       # every candidate, seed 1
    .venv/bin/python benchmarks/fast_screen.py --only bn16 bn24 --epochs 3 4

Each candidate trains on Fashion-MNIST's 48,000 training images and is scored on the 12,000
validation images (stratified, seed 42) after every epoch; the test set is not read. The table
shows the validation accuracy per epoch (the last with the candidate's test-time augmentation, when it
has one) and the wall time of the `cnnlab.train` call (data
already in memory), so the choice is made on validation numbers and on time, as issue 3 asks.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

import cnnlab
from cnnlab.data.dataset import Dataset


def conv(f, k=3, act=None):
    return {"type": "Conv2D", "filters": f, "kernel_size": k, "padding": "same", "activation": act,
            "use_bias": act is not None}


def block(f, momentum=0.9):
    return [conv(f), {"type": "BatchNormalization", "momentum": momentum}, {"type": "Activation", "activation": "relu"},
            {"type": "MaxPooling2D", "pool_size": 2}]


def bn_cnn(widths, dense=128, dropout=0.2, momentum=0.9):
    layers = [layer for f in widths for layer in block(f, momentum)]
    return {"input_shape": [28, 28, 1], "layers": layers + [
        {"type": "Flatten"}, {"type": "Dense", "units": dense, "activation": "relu"},
        {"type": "Dropout", "rate": dropout}, {"type": "Dense", "units": 10, "activation": "softmax"}]}


def pool_first_cnn(widths, dense=128, dropout=0.2, momentum=0.9, k1=3, pools=3, **first):
    """Conv -> MaxPool -> BatchNorm -> ReLU: BatchNorm and ReLU run on a quarter of the pixels.
    ``k1``: the first kernel size; ``pools``: how many blocks pool; ``first``: more arguments
    of the first Conv2D (e.g. kernel_initializer, trainable)."""
    layers = []
    for i, f in enumerate(widths):
        layers += [{**conv(f, k1 if i == 0 else 3), **(first if i == 0 else {})}]
        layers += [{"type": "MaxPooling2D", "pool_size": 2}] if i < pools else []
        layers += [{"type": "BatchNormalization", "momentum": momentum}, {"type": "Activation", "activation": "relu"}]
    return {"input_shape": [28, 28, 1], "layers": layers + [
        {"type": "Flatten"}, {"type": "Dense", "units": dense, "activation": "relu"},
        {"type": "Dropout", "rate": dropout}, {"type": "Dense", "units": 10, "activation": "softmax"}]}


def stem_cnn(w1=32, w2=32, w3=64, dense=128, dropout=0.2, momentum=0.9):
    """A 2x2 stride-2 'patchify' stem (28 -> 14 at almost no cost), then two 3x3 conv blocks."""
    bn = {"type": "BatchNormalization", "momentum": momentum}
    relu = {"type": "Activation", "activation": "relu"}
    pool = {"type": "MaxPooling2D", "pool_size": 2}
    return {"input_shape": [28, 28, 1], "layers": [
        {"type": "Conv2D", "filters": w1, "kernel_size": 2, "strides": 2, "use_bias": False}, bn, relu,
        conv(w2), bn, relu, pool, conv(w3), bn, relu, pool, {"type": "Flatten"},
        {"type": "Dense", "units": dense, "activation": "relu"}, {"type": "Dropout", "rate": dropout},
        {"type": "Dense", "units": 10, "activation": "softmax"}]}


def vgg_whitened(widths=(64, 128), dense=256, dropout=0.3, momentum=0.9):
    """A bigger model for the `best` question: the fast preset's frozen whitening layer and pool,
    then per width two Conv3x3 -> BatchNorm -> ReLU with a pool after the second (about 10x the
    fast preset's multiply-adds)."""
    bn = {"type": "BatchNormalization", "momentum": momentum}
    relu = {"type": "Activation", "activation": "relu"}
    pool = {"type": "MaxPooling2D", "pool_size": 2}
    layers = [{**conv(16), "kernel_initializer": "patch_whitening", "trainable": False}, pool, bn, relu]
    for f in widths:
        layers += [conv(f), bn, relu, conv(f), pool, bn, relu]
    return {"input_shape": [28, 28, 1], "layers": layers + [
        {"type": "Flatten"}, {"type": "Dense", "units": dense, "activation": "relu"},
        {"type": "Dropout", "rate": dropout}, {"type": "Dense", "units": 10, "activation": "softmax"}]}


FAST = {"batch_size": 256, "optimizer": "adam", "lr": 0.004, "schedule": "onecycle", "warmup": 0.25,
        "label_smoothing": 0.1, "patience": None}

CANDIDATES = {
    "fashion-cnn": ("fashion-cnn", FAST),
    "bn16": (bn_cnn((16, 32, 64)), FAST),
    "bn16-m99": (bn_cnn((16, 32, 64), momentum=0.99), FAST),  # Keras' default BatchNorm momentum
    "bn16-b128": (bn_cnn((16, 32, 64)), {**FAST, "batch_size": 128, "lr": 0.003}),
    "bn24": (bn_cnn((24, 48, 96)), FAST),
    "bn32": (bn_cnn((32, 64, 128)), FAST),
    "stem32": (stem_cnn(), FAST),
    "bn8": (bn_cnn((8, 16, 32)), FAST),
    "bn24-b512": (bn_cnn((24, 48, 96)), {**FAST, "batch_size": 512, "lr": 0.006}),
    # per-image step cost is nearly flat from batch 64 to 256 here, so smaller batches buy more steps
    "stem32-b64": (stem_cnn(), {**FAST, "batch_size": 64, "lr": 0.002}),
    "stem32-b128": (stem_cnn(), {**FAST, "batch_size": 128, "lr": 0.003}),
    "bn16-b64": (bn_cnn((16, 32, 64)), {**FAST, "batch_size": 64, "lr": 0.002}),
    "bn16-b32": (bn_cnn((16, 32, 64)), {**FAST, "batch_size": 32, "lr": 0.0014}),
    "bn16-b64-nodrop": (bn_cnn((16, 32, 64), dropout=0.0), {**FAST, "batch_size": 64, "lr": 0.002}),
    "bn16-b64-lr3": (bn_cnn((16, 32, 64)), {**FAST, "batch_size": 64, "lr": 0.003}),
    "bn16-b64-lr5": (bn_cnn((16, 32, 64)), {**FAST, "batch_size": 64, "lr": 0.005}),
    "pf16-b64-lr3": (pool_first_cnn((16, 32, 64)), {**FAST, "batch_size": 64, "lr": 0.003}),
    "pf16-b64-lr5": (pool_first_cnn((16, 32, 64)), {**FAST, "batch_size": 64, "lr": 0.005}),
    "pf16-b64-lr5-plain": (pool_first_cnn((16, 32, 64), dropout=0.0),
                           {**FAST, "batch_size": 64, "lr": 0.005, "label_smoothing": 0.0}),
    "pf16-96-b64-lr5": (pool_first_cnn((16, 32, 96)), {**FAST, "batch_size": 64, "lr": 0.005}),
    "pf24-b64-lr5": (pool_first_cnn((24, 32, 64)), {**FAST, "batch_size": 64, "lr": 0.005}),
    "pf16-d256-b64-lr5": (pool_first_cnn((16, 32, 64), dense=256), {**FAST, "batch_size": 64, "lr": 0.005}),
    "pf16-b64-lr8": (pool_first_cnn((16, 32, 64)), {**FAST, "batch_size": 64, "lr": 0.008}),
    "pf16-b64-lr12": (pool_first_cnn((16, 32, 64)), {**FAST, "batch_size": 64, "lr": 0.012}),
    "pf16-d256-b64-lr8": (pool_first_cnn((16, 32, 64), dense=256), {**FAST, "batch_size": 64, "lr": 0.008}),
    "pf16-b64-sgd05": (pool_first_cnn((16, 32, 64)),
                       {**FAST, "batch_size": 64, "optimizer": "sgd", "momentum": 0.9, "lr": 0.05}),
    "pf16-b64-sgd15": (pool_first_cnn((16, 32, 64)),
                       {**FAST, "batch_size": 64, "optimizer": "sgd", "momentum": 0.9, "lr": 0.15}),
    # the `fast` preset as it is: pf16 with a fixed patch_whitening first layer
    "fast": ("fast", {**FAST, "batch_size": 64, "lr": 0.008}),
    "pf16w-b64-lr12": ("fast", {**FAST, "batch_size": 64, "lr": 0.012}),
    "pf16w-trained": (pool_first_cnn((16, 32, 64), kernel_initializer="patch_whitening"),
                      {**FAST, "batch_size": 64, "lr": 0.008}),
    "pf16-k5": (pool_first_cnn((16, 32, 64), k1=5), {**FAST, "batch_size": 64, "lr": 0.008}),
    "pf16-nopool3": (pool_first_cnn((16, 32, 64), pools=2), {**FAST, "batch_size": 64, "lr": 0.008}),
    "pf16-standard": (pool_first_cnn((16, 32, 64)), {**FAST, "batch_size": 64, "lr": 0.008, "scale": "standard"}),
    "vgg-w64": (vgg_whitened(), {**FAST, "batch_size": 128, "lr": 0.004}),
    "vgg-w64-aug": (vgg_whitened(), {**FAST, "batch_size": 128, "lr": 0.004, "horizontal_flip": True,
                                     "random_crop": 2}),
    "pf16-b64-adamw-wd05": (pool_first_cnn((16, 32, 64)),
                            {**FAST, "batch_size": 64, "optimizer": "adamw", "lr": 0.008, "weight_decay": 0.05}),
    # issue 27 (records): mirrored training images and the mirror averaged in at test time
    "fast-flip": ("fast", {**FAST, "batch_size": 64, "lr": 0.008, "horizontal_flip": True, "tta": "flip"}),
    "fast-flip-crop1": ("fast", {**FAST, "batch_size": 64, "lr": 0.008, "horizontal_flip": True, "random_crop": 1,
                                 "tta": "flip"}),
    "pf16w-48-96-flip": (pool_first_cnn((16, 48, 96), kernel_initializer="patch_whitening", trainable=False),
                         {**FAST, "batch_size": 64, "lr": 0.008, "horizontal_flip": True, "tta": "flip"}),
    "pf16w-64-128-flip": (pool_first_cnn((16, 64, 128), kernel_initializer="patch_whitening", trainable=False),
                          {**FAST, "batch_size": 64, "lr": 0.008, "horizontal_flip": True, "tta": "flip"}),
    "vgg-w64-tta": (vgg_whitened(), {**FAST, "batch_size": 128, "lr": 0.004, "horizontal_flip": True,
                                     "random_crop": 2, "tta": "flip"}),
    "vgg-w48-tta": (vgg_whitened((48, 96), dense=192), {**FAST, "batch_size": 128, "lr": 0.004,
                                                        "horizontal_flip": True, "random_crop": 2, "tta": "flip"}),
    "vgg-w32-tta": (vgg_whitened((32, 64), dense=128), {**FAST, "batch_size": 64, "lr": 0.004,
                                                        "horizontal_flip": True, "tta": "flip"}),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    ap.add_argument("--epochs", nargs="+", type=int, default=[3])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs-dir", default="runs/screen")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    full = cnnlab.load_dataset("fashion-mnist", seed=42)
    # train + validation only: the screening never reads the test set
    ds = Dataset(full.source, full.class_names, {k: full[k] for k in ("train", "validation")}, full.info)
    rows = []
    for name in args.only:
        model, recipe = CANDIDATES[name]
        for epochs in args.epochs:
            t0 = time.perf_counter()
            run = cnnlab.train(ds, model=model, seed=args.seed, epochs=epochs, runs_dir=args.runs_dir,
                               quiet=True, test_split=0.0, **recipe)
            wall = time.perf_counter() - t0
            accs = [h["val_accuracy"] for h in run.history]
            if recipe.get("tta", "none") != "none":  # the epochs' figures are without it; the last with it
                accs[-1] = float((run.predict(ds["validation"].x) == ds["validation"].y).mean())
            rows.append({"candidate": name, "epochs": epochs, "params": run.spec.total_params,
                         "val_accuracy": accs, "train_time_s": run.metrics["train_time_s"], "wall_s": wall,
                         "recipe": recipe})
            print(f"{name:<12} {epochs} epochs  params {run.spec.total_params:>8,}  val "
                  f"{' '.join(f'{a:.4f}' for a in accs)}  train {run.metrics['train_time_s']:.0f} s  "
                  f"wall {wall:.0f} s", file=sys.stderr, flush=True)
    print(f"\nFashion-MNIST validation split (12,000 images), seed {args.seed}, {torch.get_num_threads()} threads\n")
    print("| candidate | params | epochs | val accuracy by epoch | train s | wall s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['candidate']} | {r['params']:,} | {r['epochs']} | "
              f"{' / '.join(f'{a:.4f}' for a in r['val_accuracy'])} | {r['train_time_s']:.0f} | {r['wall_s']:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
