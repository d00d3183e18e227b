"""The layer kinds a spec can use: one class per Keras layer type, registered where it is defined.

Each kind owns everything about its type (as each Keras layer class does):

- ``args``: its Keras arguments and their defaults (``REQUIRED`` for one without a default);
- ``normalise``: arguments written the short way made whole, as Keras does (``3`` -> ``(3, 3)``);
- ``infer``: the checks of its arguments (a ``SpecError`` naming the argument and a value that
  works), its output shape and its parameter counts, exactly as Keras counts them;
- ``build``: its torch modules, on NCHW float tensors (torch is imported there, so parsing a
  spec stays torch-free).

Arguments every kind shares (``padding``, ``activation``, ``use_bias``, ``trainable``,
``kernel_initializer``) are checked once, in ``spec.parse_spec``. ``LAYERS`` is the registry:
spec parsing, the "did you mean" hint, the torch build and the README's list read it.
"""

from __future__ import annotations

import math

from ..errors import SpecError

REQUIRED = object()  # marks an argument without a default

LAYERS: dict[str, LayerKind] = {}
ALIASES: dict[str, str] = {}


def register(cls: type[LayerKind]) -> type[LayerKind]:
    """Class decorator: add a layer kind (and its aliases) to the registry."""
    kind = cls()
    LAYERS[kind.name] = kind
    for alias in kind.aliases:
        ALIASES[alias] = kind.name
    return cls


def lookup(name: str) -> LayerKind | None:
    return LAYERS.get(ALIASES.get(name, name))


class LayerKind:
    name: str = ""
    aliases: tuple = ()
    args: dict = {}
    needs_image = False  # takes only (H, W, C) inputs
    takes_patch_whitening = False  # kernel_initializer: patch_whitening is allowed
    can_end = False  # may be the model's output layer

    def normalise(self, args: dict, where: str) -> None:
        """Make the arguments whole, in place (e.g. ``kernel_size: 3`` -> ``(3, 3)``)."""

    def infer(self, args: dict, shape: tuple, where: str) -> tuple[tuple, int, int]:
        """Output shape, trainable and non-trainable parameter counts; checks the arguments."""
        return shape, 0, 0

    def build(self, info) -> list:
        """The torch modules of one layer (``info``: a spec.LayerInfo)."""
        raise NotImplementedError


# ----------------------------------------------------------------------------- helpers

def pair(v, layer: str, arg: str) -> tuple[int, int]:
    """A positive integer or a pair of them, as a pair."""
    if isinstance(v, bool):
        v = None
    if isinstance(v, int):
        v = (v, v)
    if (isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(i, int) and not isinstance(i, bool) for i in v)
            and all(i > 0 for i in v)):
        return (int(v[0]), int(v[1]))
    raise SpecError(f"{arg}={v!r} is not a positive integer or a pair of them", layer,
                    f"use e.g. {arg}: 3 or {arg}: [3, 3]")


def out_len(n: int, k: int, s: int, padding: str) -> int:
    if padding == "same":
        return math.ceil(n / s)
    return (n - k) // s + 1 if n >= k else 0


def same_pads(n: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding: (before, after), the extra pixel going after."""
    out = math.ceil(n / s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def positive_int(v, arg: str, where: str, example: str) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise SpecError(f"{arg}={v!r} is not a positive integer", where, f"use e.g. {arg}: {example}")


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ----------------------------------------------------------------------------- the kinds

@register
class Conv2D(LayerKind):
    name = "Conv2D"
    args = {"filters": REQUIRED, "kernel_size": REQUIRED, "strides": 1, "padding": "valid", "activation": None,
            "use_bias": True, "dilation_rate": 1, "kernel_initializer": "glorot_uniform", "trainable": True}
    needs_image = True
    takes_patch_whitening = True

    def normalise(self, args, where):
        for a in ("kernel_size", "strides", "dilation_rate"):
            args[a] = pair(args[a], where, a)

    def infer(self, args, shape, where):
        f = args["filters"]
        positive_int(f, "filters", where, "32")
        (kh, kw), (sh, sw), (dh, dw) = args["kernel_size"], args["strides"], args["dilation_rate"]
        ekh, ekw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        h = out_len(shape[0], ekh, sh, args["padding"])
        w = out_len(shape[1], ekw, sw, args["padding"])
        if h <= 0 or w <= 0:
            raise SpecError(f"kernel_size {[kh, kw]} on a {shape[0]}x{shape[1]} input gives an "
                            f"output of size {max(h, 0)}x{max(w, 0)}", where,
                            "use padding: same, a smaller kernel_size, fewer pooling layers "
                            "before it, or a larger --image-size")
        params = kh * kw * shape[2] * f + (f if args["use_bias"] else 0)
        return (h, w, f), params, 0

    def build(self, info):
        from torch import nn

        from .build import activation_module

        a, shape = info.args, info.input_shape
        (kh, kw), (sh, sw), (dh, dw) = a["kernel_size"], a["strides"], a["dilation_rate"]
        mods = []
        padding = (0, 0)
        if a["padding"] == "same":
            top, bottom = same_pads(shape[0], dh * (kh - 1) + 1, sh)
            left, right = same_pads(shape[1], dw * (kw - 1) + 1, sw)
            if (top, left) == (bottom, right):
                padding = (top, left)
            else:
                mods.append(nn.ZeroPad2d((left, right, top, bottom)))
        conv = nn.Conv2d(shape[2], a["filters"], (kh, kw), (sh, sw), padding, (dh, dw), bias=a["use_bias"])
        return mods + [conv, activation_module(a["activation"])]


class _Pooling(LayerKind):
    args = {"pool_size": 2, "strides": None, "padding": "valid"}
    needs_image = True
    pool = ""  # "max" or "avg"

    def normalise(self, args, where):
        args["pool_size"] = pair(args["pool_size"], where, "pool_size")
        args["strides"] = pair(args["strides"] if args["strides"] is not None else args["pool_size"], where,
                               "strides")

    def infer(self, args, shape, where):
        (ph, pw), (sh, sw) = args["pool_size"], args["strides"]
        h = out_len(shape[0], ph, sh, args["padding"])
        w = out_len(shape[1], pw, sw, args["padding"])
        if h <= 0 or w <= 0:
            raise SpecError(f"pool_size {[ph, pw]} on a {shape[0]}x{shape[1]} input gives an "
                            f"output of size {max(h, 0)}x{max(w, 0)}", where,
                            "remove this pooling layer, use padding: same, or a larger --image-size")
        return (h, w, shape[2]), 0, 0

    def build(self, info):
        from torch import nn

        from .build import PadPool2d

        a, shape = info.args, info.input_shape
        kernel, stride = a["pool_size"], a["strides"]
        if a["padding"] == "same":
            top, bottom = same_pads(shape[0], kernel[0], stride[0])
            left, right = same_pads(shape[1], kernel[1], stride[1])
            if top or bottom or left or right:
                return [PadPool2d(self.pool, kernel, stride, (left, right, top, bottom))]
        return [nn.MaxPool2d(kernel, stride) if self.pool == "max" else nn.AvgPool2d(kernel, stride)]


@register
class MaxPooling2D(_Pooling):
    name = "MaxPooling2D"
    aliases = ("MaxPool2D",)
    pool = "max"


@register
class AveragePooling2D(_Pooling):
    name = "AveragePooling2D"
    aliases = ("AvgPool2D", "AveragePool2D")
    pool = "avg"


class _GlobalPooling(LayerKind):
    needs_image = True
    pool = ""

    def infer(self, args, shape, where):
        return (shape[2],), 0, 0

    def build(self, info):
        from torch import nn

        pool = nn.AdaptiveMaxPool2d(1) if self.pool == "max" else nn.AdaptiveAvgPool2d(1)
        return [pool, nn.Flatten(1)]


@register
class GlobalAveragePooling2D(_GlobalPooling):
    name = "GlobalAveragePooling2D"
    aliases = ("GlobalAvgPool2D",)
    pool = "avg"


@register
class GlobalMaxPooling2D(_GlobalPooling):
    name = "GlobalMaxPooling2D"
    aliases = ("GlobalMaxPool2D",)
    pool = "max"


@register
class BatchNormalization(LayerKind):
    name = "BatchNormalization"
    args = {"momentum": 0.99, "epsilon": 0.001, "trainable": True}

    def infer(self, args, shape, where):
        m, eps = args["momentum"], args["epsilon"]
        if not is_number(m) or not 0 <= m <= 1:
            raise SpecError(f"momentum={m!r} is not a number in [0, 1]", where,
                            "use e.g. momentum: 0.99 (Keras' default)")
        if not is_number(eps) or not 0 < eps < math.inf:
            raise SpecError(f"epsilon={eps!r} is not a positive number", where,
                            "use e.g. epsilon: 0.001 (Keras' default)")
        c = shape[-1]
        return shape, 2 * c, 2 * c  # gamma, beta; moving mean and variance are non-trainable

    def build(self, info):
        from torch import nn

        a, shape = info.args, info.input_shape
        bn = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
        return [bn(shape[-1], eps=a["epsilon"], momentum=1.0 - a["momentum"])]


@register
class Dropout(LayerKind):
    name = "Dropout"
    args = {"rate": REQUIRED}

    def infer(self, args, shape, where):
        r = args["rate"]
        if not is_number(r) or not 0 <= r < 1:
            raise SpecError(f"rate={r!r} is not in [0, 1)", where, "use e.g. rate: 0.3")
        return shape, 0, 0

    def build(self, info):
        from .build import Dropout

        return [Dropout(info.args["rate"])]


@register
class Flatten(LayerKind):
    name = "Flatten"

    def infer(self, args, shape, where):
        return (math.prod(shape),), 0, 0

    def build(self, info):
        from .build import FlattenNHWC

        return [FlattenNHWC()]


@register
class Dense(LayerKind):
    name = "Dense"
    args = {"units": REQUIRED, "activation": None, "use_bias": True, "kernel_initializer": "glorot_uniform",
            "trainable": True}
    can_end = True

    def infer(self, args, shape, where):
        u = args["units"]
        positive_int(u, "units", where, "128")
        if len(shape) == 2:
            raise SpecError(f"Dense on a 2-D input {tuple(shape)}", where,
                            "add Flatten before it, or give input_shape a channel axis")
        return (*shape[:-1], u), shape[-1] * u + (u if args["use_bias"] else 0), 0

    def build(self, info):
        from torch import nn

        from .build import ChannelDense, activation_module

        a, shape = info.args, info.input_shape
        if len(shape) == 3:
            lin = ChannelDense(shape[-1], a["units"], a["use_bias"])
        else:
            lin = nn.Linear(shape[-1], a["units"], bias=a["use_bias"])
        return [lin, activation_module(a["activation"])]


@register
class Activation(LayerKind):
    name = "Activation"
    args = {"activation": REQUIRED}
    can_end = True

    def build(self, info):
        from .build import activation_module

        return [activation_module(info.args["activation"])]


@register
class Rescaling(LayerKind):
    name = "Rescaling"
    args = {"scale": REQUIRED, "offset": 0.0}

    def infer(self, args, shape, where):
        for k in ("scale", "offset"):
            v = args[k]
            if not is_number(v) or not math.isfinite(v):
                raise SpecError(f"{k}={v!r} is not a number", where, "use e.g. scale: 0.00392156862745098 (1/255)")
        return shape, 0, 0

    def build(self, info):
        from .build import Rescaling

        return [Rescaling(float(info.args["scale"]), float(info.args["offset"]))]
