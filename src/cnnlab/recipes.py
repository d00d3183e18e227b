"""Training recipes: settings that go together, all in this one table.

A recipe fills in only the keys the user did not set (defaults < recipe < YAML file < flags).
``--recipe NAME`` picks one; without it, a model preset's own recipe applies (``Preset.recipe``
names an entry here), else ``keras``. Measurements behind them: docs/performance.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    settings: dict = field(default_factory=dict)


# The same settings for `--recipe fast` and the fast preset's base, chosen on the validation split
# with benchmarks/fast_screen.py. A fixed one-cycle schedule needs no early stopping, so the recipe
# trains on every training image (val_split 0; --val-split 0.2 brings the validation curves back),
# and three epochs keep fashion-cnn within a third of the Keras recipe's time (issue 3).
_FAST = {"batch_size": 64, "optimizer": "adam", "lr": 0.005, "schedule": "onecycle", "warmup": 0.25,
         "label_smoothing": 0.1, "patience": None, "epochs": 3, "val_split": 0.0}

RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("keras", "the notebooks' recipe: the defaults (Adam 0.001, batch 32, early stopping with patience 2 "
           "on a validation split of 0.2, best weights restored)"),
    Recipe("fast", "a one-cycle schedule over 3 epochs, batch 64, label smoothing 0.1, every training image",
           _FAST),
    # The `fast` preset's own: its BatchNorm takes lr 0.008 (validation 0.9257 against 0.9238 at 0.005).
    # 7 epochs (issue 19): validation 0.929 at 3 epochs, 0.933 at 5, 0.934 at 7 (seeds 1-2, 48,000
    # training images); flips and random crops did not help (0.932, 0.925). Issue 27: flips with the
    # mirrored pass at test time do (seed 1: 0.9373 against 0.9347 at 7 epochs; 0.9377 at 8, whose
    # whole run took 62-75 s: over the minute; docs/performance.md, "Time-to-accuracy records").
    Recipe("fast-bn", "the fast recipe with lr 0.008 over 7 epochs, horizontal flips and a mirrored pass at test "
           "time, for models with BatchNorm (the fast preset's own)",
           {**_FAST, "lr": 0.008, "epochs": 7, "horizontal_flip": True, "tta": "flip"}),
    # The `record` preset's own (issue 27): the fast-bn recipe over as many epochs as fit in 3 minutes
    # of all 60,000 images on a 2-core Zen 4 (12 epochs of 48,000 took 117 s, validation 0.9414).
    Recipe("record", "the fast-bn recipe over 13 epochs (the record preset's own)",
           {**_FAST, "lr": 0.008, "epochs": 13, "horizontal_flip": True, "tta": "flip"}),
    # The notebook (seed 003) trains its MLP and BatchNorm CNN with batch 500 and patience 50 over up
    # to 500 epochs; patience 10 over 100 epochs keeps a CPU run within the hour.
    # Keras' transfer-learning guide: the new head first (the loaded layers frozen), then every layer
    # at a lower learning rate with a fresh optimizer; fixed epochs, no early stopping. On 500 images
    # of Fashion-MNIST's classes 5-9 from a classes 0-4 run (benchmarks/finetune.py), lr x 0.3 over
    # 20 epochs beat lr x 0.1 over 10 (0.956 against 0.835 on seed 1): a small set takes few steps.
    Recipe("finetune", "with --init-from: 3 epochs of the new head, then 17 of everything at lr x 0.3",
           {"head_epochs": 3, "epochs": 20, "finetune_factor": 0.3, "patience": None}),
    # Chollet's "fast feature extraction without data augmentation" (Deep Learning with Python, 5.3):
    # the backbone runs once per image and the head trains on its cached pooled features, so an epoch
    # costs the head alone (docs/performance.md, "Feature extraction"); 30 epochs as his.
    Recipe("features", "with --backbone: the frozen backbone's pooled features computed once (and cached), then "
           "30 epochs of the new head on them, early stopping with patience 5",
           {"features": True, "epochs": 30, "patience": 5}),
    # The `best` preset's own (issue 19): chosen on the validation split with benchmarks/fast_screen.py
    # (vgg-w64-aug): validation 0.9438 after 16 epochs (0.9410 after 8 without augmentation, where
    # training accuracy reached 0.996); about 23 s an epoch of 60,000 images with bf16 on a Zen 4.
    # Issue 27: with the mirrored pass at test time, validation 0.9468 after 20 epochs and 0.9501
    # after 24; 22 keep a whole run of all 60,000 images within 10 minutes with a margin.
    Recipe("best", "22 one-cycle epochs at batch 128, lr 0.004, label smoothing 0.1, horizontal flips and "
           "2-pixel random crops, every training image, a mirrored pass at test time (the best preset's own)",
           {**_FAST, "batch_size": 128, "lr": 0.004, "epochs": 22, "horizontal_flip": True, "random_crop": 2,
            "tta": "flip"}),
    Recipe("notebook-003", "seed 003's deep models: batch 500, patience 10, up to 100 epochs",
           {"batch_size": 500, "patience": 10, "epochs": 100}),
]}
