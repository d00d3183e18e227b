"""Named model presets (a registry, as in timm): ``list_presets()``, ``preset_spec(name, ...)``.

Each preset is the notebooks' architecture. It adapts to the data where that is natural:
the input shape becomes the data's, the output layer gets one unit per class.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import SpecError


def conv(filters, k, padding="valid", activation="relu", **kw):
    return {"type": "Conv2D", "filters": filters, "kernel_size": k, "padding": padding,
            "activation": activation, **kw}


def pool(size=2, **kw):
    return {"type": "MaxPooling2D", "pool_size": size, **kw}


def dense(units, activation="relu"):
    return {"type": "Dense", "units": units, "activation": activation}


def drop(rate):
    return {"type": "Dropout", "rate": rate}


BN = {"type": "BatchNormalization"}
FLAT = {"type": "Flatten"}


def head(num_classes: int, binary_ok: bool = False) -> dict:
    if binary_ok and num_classes == 2:
        return dense(1, "sigmoid")
    return dense(num_classes, "softmax")


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    input_shape: tuple  # the notebook's input shape
    num_classes: int
    build: Callable[[int], list]  # num_classes -> layers
    flat_input: bool = False  # input_shape given as [H, W] (an MLP that starts with Flatten)
    recipe: str | None = None  # the name of its training recipe (cnnlab.recipes); flags and keys still win


def _fashion_cnn(k):
    return [conv(32, 3, "same"), pool(), conv(64, 3, "same"), pool(), FLAT, dense(100),
            drop(0.4), head(k)]


def _mnist_convnet(k):
    return [conv(32, 3), pool(), conv(64, 3), pool(), conv(64, 3), FLAT, dense(64), head(k)]


def _deep_bn_cnn(k):
    layers = []
    for f in (64, 64, 128, 128):
        layers += [conv(f, 2, "same"), BN, pool(), drop(0.3)]
    return layers + [FLAT, dense(1024), dense(512), dense(256), drop(0.5), head(k)]


def _deep_mlp(k):
    layers = [FLAT]
    for u in (1000, 800, 500, 300, 200, 100):
        layers += [dense(u), drop(0.2)]
    return layers + [dense(50), head(k)]


def _bn_mlp(k):
    layers = [FLAT]
    for u in (256, 128, 64):
        layers += [dense(u), dense(u), BN, drop(0.2)]
    return layers + [head(k)]


def _wide_cnn(k):
    return [conv(128, 3, "same"), conv(128, 3, "same"), pool(2, strides=2), FLAT, dense(128),
            head(k)]


def _lenet(k):
    return [conv(6, 5), pool(), conv(16, 5), pool(), FLAT, dense(120), dense(84), head(k)]


def _small_convnet(k):
    layers = []
    for f in (32, 64, 128, 128):
        layers += [conv(f, 3), pool()]
    return layers + [FLAT, drop(0.5), dense(512), head(k, binary_ok=True)]


def _fast(k):
    """Three blocks of Conv3x3 -> MaxPool -> BatchNorm -> ReLU (16/32/64 filters), Dense128.
    The first convolution is a fixed whitening of 3x3 patches (patch_whitening, not trained):
    validation 0.9243 -> 0.9296 at three epochs. Pooling before BatchNorm and ReLU runs them on
    a quarter of the pixels; BatchNorm momentum 0.9 lets the running statistics keep up in a
    short run (docs/performance.md)."""
    return _whitened_blocks(k, (16, 32, 64))


def _whitened_blocks(k, widths):
    layers = []
    for f in widths:
        first = {"kernel_initializer": "patch_whitening", "trainable": False} if f == widths[0] else {}
        layers += [conv(f, 3, "same", activation=None, use_bias=False, **first), pool(),
                   {"type": "BatchNormalization", "momentum": 0.9}, {"type": "Activation", "activation": "relu"}]
    return layers + [FLAT, dense(128), drop(0.2), head(k)]


def _record(k):
    """The `fast` preset's blocks at 16/64/128 filters (benchmarks/fast_screen.py's pf16w-64-128):
    2.8x its multiply-adds, for the 3-minute record (validation 0.9414 after 12 epochs against the
    fast preset's 0.9383 after 9; docs/performance.md)."""
    return _whitened_blocks(k, (16, 64, 128))


def _best(k):
    """The `fast` preset's whitened, frozen first layer and pool, then two blocks of two Conv3x3
    (64, then 128 filters) with BatchNorm and ReLU and a pool after each block, Dense256 and
    Dropout 0.3: about ten times the fast preset's multiply-adds (benchmarks/fast_screen.py's
    vgg-w64, chosen on the validation split; docs/performance.md)."""
    bn, relu = {"type": "BatchNormalization", "momentum": 0.9}, {"type": "Activation", "activation": "relu"}
    layers = [conv(16, 3, "same", activation=None, use_bias=False, kernel_initializer="patch_whitening",
                   trainable=False), pool(), bn, relu]
    for f in (64, 128):
        layers += [conv(f, 3, "same", activation=None, use_bias=False), bn, relu,
                   conv(f, 3, "same", activation=None, use_bias=False), pool(), bn, relu]
    return layers + [FLAT, dense(256), drop(0.3), head(k)]


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("fashion-cnn", "the Fashion-MNIST notebook CNN: Conv32-Pool-Conv64-Pool-Dense100-Dropout0.4",
           (28, 28, 1), 10, _fashion_cnn),
    Preset("mnist-convnet", "Keras' MNIST convnet: three valid 3x3 convolutions, Dense64",
           (28, 28, 1), 10, _mnist_convnet),
    Preset("deep-bn-cnn", "4 blocks of Conv2D(2x2)-BatchNorm-Pool-Dropout, Dense 1024-512-256",
           (28, 28, 1), 10, _deep_bn_cnn, recipe="notebook-003"),
    Preset("deep-mlp", "7 Dense layers 1000..50 with Dropout 0.2 (no convolutions)",
           (28, 28), 10, _deep_mlp, flat_input=True, recipe="notebook-003"),
    Preset("bn-mlp", "functional MLP: 3 x [Dense, Dense, BatchNorm, Dropout]",
           (28, 28, 1), 10, _bn_mlp),
    Preset("wide-cnn", "two same-padded 128-filter 3x3 convolutions, one pool, Dense128",
           (28, 28, 1), 10, _wide_cnn),
    Preset("lenet", "LeNet-5 style: Conv6(5x5)-Pool-Conv16(5x5)-Pool-Dense120-84",
           (32, 32, 1), 10, _lenet),
    Preset("fast", "the quickest good CNN here: whitened 3x3 patches, 3 x [Conv3x3-Pool-BatchNorm-ReLU], Dense128",
           (28, 28, 1), 10, _fast, recipe="fast-bn"),
    Preset("record", "the fast preset's blocks at 16/64/128 filters, 13 one-cycle epochs with flips: the most "
           "accurate preset within 3 minutes on 2 cores", (28, 28, 1), 10, _record, recipe="record"),
    Preset("best", "the most accurate preset within 10 minutes on 2 cores: whitened 3x3 patches, 2 x 2 "
           "Conv3x3-BatchNorm-ReLU blocks (64, 128), Dense256, flips and crops", (28, 28, 1), 10, _best,
           recipe="best"),
    Preset("small-convnet", "cats vs dogs convnet: 4 conv/pool blocks, Dropout, Dense512, sigmoid",
           (150, 150, 3), 2, _small_convnet),
]}


def list_presets() -> list[str]:
    return list(PRESETS)


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        close = difflib.get_close_matches(name, list(PRESETS), 1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise SpecError(f"unknown preset '{name}'", "--model",
                        f"{hint}valid presets: {', '.join(PRESETS)} (or a spec file .yaml/.json)")
    return PRESETS[name]


def preset_spec(name: str, input_shape: tuple | None = None, num_classes: int | None = None) -> dict:
    """The preset as a spec mapping, adapted to ``input_shape`` (H, W, C) and ``num_classes``."""
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 2):
        from ..errors import SpecError

        raise SpecError(f"a classifier needs at least 2 classes, got {num_classes!r}", "--classes",
                        "use e.g. --classes 10")
    p = get_preset(name)
    shape = tuple(input_shape) if input_shape is not None else p.input_shape
    if p.flat_input and len(shape) == 3 and shape[2] == 1:
        shape = shape[:2]
    if not p.flat_input and len(shape) == 2:
        shape = (*shape, 1)
    return {"name": name, "input_shape": list(shape), "layers": p.build(num_classes or p.num_classes)}


def spec_from(model: str | dict, input_shape: tuple | None = None, num_classes: int | None = None):
    """A validated Spec from a preset name (adapted to the data), a spec file or a mapping."""
    from pathlib import Path

    from .spec import load_spec_file, parse_spec

    if isinstance(model, dict):
        return parse_spec(model)
    if model in PRESETS or not (str(model).lower().endswith((".yaml", ".yml", ".json")) or Path(model).is_file()):
        return parse_spec(preset_spec(model, input_shape, num_classes), model)
    return parse_spec(load_spec_file(model), model)
