"""Write the small Keras model files the tests import, with Keras' own predictions on fixed inputs.

    KERAS_BACKEND=torch .venv/bin/python scripts/make_keras_fixtures.py

Keras 3 on the torch backend builds four models with seeded weights (BatchNorm statistics set
away from their defaults, so a conversion that ignored them would show), saves each as Keras does
(.keras, and the legacy .h5 for two), and stores in expected.npz the uint8 images each was given
and the probabilities Keras computed for them (pixels / 255 first, unless the model starts with
Rescaling). The files are committed under tests/fixtures/keras/; run this again only to change them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "keras"
L = keras.layers


def sequential_cnn():
    """The notebooks' CNN, small: Conv2D, MaxPooling2D, Flatten (channel order matters), Dropout."""
    return keras.Sequential([
        keras.Input((12, 12, 1)), L.Conv2D(4, 3, activation="relu", padding="same", name="conv1"),
        L.MaxPooling2D(2), L.Conv2D(6, 3, activation="relu"), L.Flatten(), L.Dense(8, activation="relu"),
        L.Dropout(0.3), L.Dense(3, activation="softmax")], name="best-cnn-model")


def residual():
    """A functional model: Rescaling inside, DepthwiseConv2D, BatchNormalization, a residual Add, ReLU6."""
    inp = keras.Input((10, 10, 3), name="image")
    x = L.Rescaling(1 / 255.0)(inp)
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(x)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(6.0)(x)
    y = L.DepthwiseConv2D(3, padding="same", depth_multiplier=1, name="dw")(x)
    y = L.BatchNormalization(name="dw_bn")(y)
    y = L.SeparableConv2D(8, 3, padding="same", name="sep")(y)
    x = L.Add(name="residual")([x, y])
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(4, activation="softmax", name="head")(x)
    return keras.Model(inp, out, name="residual")


def batchnorm():
    """Conv2D / BatchNormalization / Dense with BatchNormalization after Flatten too."""
    return keras.Sequential([
        keras.Input((8, 8, 3)), L.Conv2D(5, 3, strides=2, padding="same"), L.BatchNormalization(),
        L.Activation("relu"), L.Flatten(), L.BatchNormalization(), L.Dense(6, activation="softmax")], name="bn-model")


def binary():
    """cats vs dogs in miniature: a Dense(1, sigmoid) head."""
    return keras.Sequential([
        keras.Input((9, 9, 3)), L.Conv2D(4, 3, activation="relu"), L.MaxPooling2D(2),
        L.GlobalAveragePooling2D(), L.Dense(1, activation="sigmoid")], name="binary")


MODELS = {"sequential_cnn.keras": sequential_cnn, "residual.keras": residual, "batchnorm.h5": batchnorm,
          "binary.keras": binary, "sequential_cnn.h5": sequential_cnn}


def seeded(model, seed: int):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if isinstance(layer, L.BatchNormalization):  # gamma, beta, moving mean, moving variance
            c = ws[0].shape
            ws = [rng.uniform(0.5, 1.5, c), rng.uniform(-0.3, 0.3, c), rng.uniform(-0.5, 0.5, c),
                  rng.uniform(0.5, 2.0, c)]
        else:
            ws = [rng.normal(0, 0.4, w.shape) for w in ws]
        layer.set_weights([w.astype(np.float32) for w in ws])
    return model


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    expected = {}
    for i, (fname, make) in enumerate(MODELS.items()):
        model = seeded(make(), i)
        h, w, c = model.input_shape[1:]
        x = np.random.default_rng(100 + i).integers(0, 256, (16, h, w, c), dtype=np.uint8)
        first = next(layer for layer in model.layers if not isinstance(layer, L.InputLayer))
        fed = x.astype(np.float32) if isinstance(first, L.Rescaling) else x.astype(np.float32) / 255.0
        model.save(OUT / fname)
        key = fname.replace(".", "_")
        expected[f"{key}_x"] = x
        expected[f"{key}_p"] = keras.ops.convert_to_numpy(model(fed, training=False))
        print(f"{fname}: {(OUT / fname).stat().st_size:,} bytes, {model.count_params()} parameters")
    np.savez_compressed(OUT / "expected.npz", **expected)
    print(f"wrote {OUT}/expected.npz with Keras {keras.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
