"""Issue 18, item 6: the seeds' cats-vs-dogs recipe on colour photos, small-convnet from scratch
against MobileNetV2.

    .venv/bin/python benchmarks/photos.py                       # MobileNetV2 from random weights
    .venv/bin/python benchmarks/photos.py --weights mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5

The data. No photo data set can be downloaded here, so the benchmark builds a two-class colour
folder from the photos that are on the machine offline: scikit-learn's two sample images
(sklearn.datasets.load_sample_images: "china.jpg", a temple, and "flower.jpg", 427 x 640 each).
Each class is random square crops of one photo (side 32-96 pixels, anywhere in it) saved as
150 x 150 JPEGs: 300 per class to train, 150 to test, from disjoint halves of each photo (left
half for training, right half for testing), so no test crop overlaps a training crop. It is an
easy task; the point is that both arms run the recipe end to end on RGB photos and are compared
side by side on the same machine.

The recipe (seed 008, Chollet's cats vs dogs): 150 x 150 RGB, pixels / 255, augmentation
(rotation 40, shifts 0.2, shear 0.2, zoom 0.2, horizontal flip), a Dense(1, sigmoid) head and
binary cross-entropy, a fixed number of epochs (15) without early stopping, as that notebook
trains; validation split 0.2. (With the notebooks' patience 2, MobileNetV2 from random weights
stopped at epoch 3 at chance: its validation accuracy stays at 0.5 for the first epochs, until
its BatchNorm statistics settle, then climbs to 1.0 by epoch 5.)

- scratch: the small-convnet preset (4 conv/pool blocks, Dropout, Dense512, sigmoid).
- MobileNetV2: --backbone mobilenet_v2:0.35 (410,208 backbone parameters). With --weights, the
  ImageNet file loads and --recipe finetune trains the head first; without it, the backbone
  starts from random weights (said in the output) and trains with the same recipe as scratch,
  pixels scaled to [-1, 1] as MobileNetV2 expects.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import cnnlab

AUGMENT = {"rotation_range": 40, "width_shift_range": 0.2, "height_shift_range": 0.2, "shear_range": 0.2,
           "zoom_range": 0.2, "horizontal_flip": True}


def build_folder(root: Path, per_class: int, test_per_class: int, seed: int) -> None:
    from sklearn.datasets import load_sample_images

    data = load_sample_images()
    rng = np.random.default_rng(seed)
    for name, img in zip(("temple", "flower"), data.images):
        h, w, _ = img.shape
        for split, n, (lo, hi) in (("train", per_class, (0, w // 2)), ("test", test_per_class, (w // 2, w))):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                side = int(rng.integers(32, 97))
                y0 = int(rng.integers(0, h - side + 1))
                x0 = int(rng.integers(lo, max(lo + 1, hi - side + 1)))
                crop = Image.fromarray(img[y0:y0 + side, x0:x0 + side]).resize((150, 150), Image.BILINEAR)
                crop.save(d / f"{name}{i:04d}.jpg", quality=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--per-class", type=int, default=300)
    ap.add_argument("--weights", default=None, help="MobileNetV2 0.35 ImageNet no-top .h5 (Keras Applications)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    work = Path(tempfile.mkdtemp(prefix="cnnlab-photos-"))
    build_folder(work / "photos", args.per_class, args.per_class // 2, seed=0)
    common = {"image_size": (150, 150), "color_mode": "rgb", "test_source": str(work / "photos" / "test"),
              "epochs": args.epochs, "patience": None, "quiet": True, "check": False, **AUGMENT}
    arms = {"small-convnet (scratch)": {"model": "small-convnet"}}
    if args.weights:
        arms["mobilenet_v2:0.35 (ImageNet, finetune)"] = {"backbone": "mobilenet_v2:0.35", "weights": args.weights,
                                                          "recipe": "finetune", "epochs": args.epochs}
    else:
        arms["mobilenet_v2:0.35 (random init: no weights file)"] = {"backbone": "mobilenet_v2:0.35"}
    results: dict = {name: [] for name in arms}
    for seed in args.seeds:
        for name, opts in arms.items():
            t0 = time.perf_counter()
            run = cnnlab.train(str(work / "photos" / "train"), runs_dir=str(work / "runs"), seed=seed,
                               **{**common, **opts})
            acc = run.metrics["test"]["accuracy"]
            results[name].append({"seed": seed, "test_accuracy": acc, "epochs_run": run.metrics["epochs_run"],
                                  "seconds": round(time.perf_counter() - t0, 1),
                                  "params": run.spec.total_params})
            print(f"seed {seed} {name}: test accuracy {acc:.4f} in {results[name][-1]['seconds']} s "
                  f"({run.metrics['epochs_run']} epochs, {run.spec.total_params:,} parameters)", flush=True)
    summary = {"cpu": cpu, "torch_threads": __import__("torch").get_num_threads(), "data": "scikit-learn sample "
               "images, random crops (see the docstring)", "per_class_train": args.per_class,
               "per_class_test": args.per_class // 2, "arms": results,
               "mean_test_accuracy": {k: statistics.mean(r["test_accuracy"] for r in v) for k, v in results.items()}}
    print(json.dumps(summary["mean_test_accuracy"], indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
