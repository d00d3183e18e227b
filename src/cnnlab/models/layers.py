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

from ..errors import ShapeError, SpecError

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
    merge = False  # takes two or more inputs (``infer`` gets a list of shapes)
    # how each of its weights is laid out in Keras, in Keras' order (which is torch's order of the
    # layer's tensors): "conv" (kh, kw, in, out), "depthwise" (kh, kw, c, m), "dense" (in, out);
    # anything further is a vector (biases, BatchNorm's gamma, beta, mean and variance)
    keras_weights: tuple = ()
    keras_module = "keras.layers"  # where Keras finds the class when it loads an exported .keras file

    def normalise(self, args: dict, where: str) -> None:
        """Make the arguments whole, in place (e.g. ``kernel_size: 3`` -> ``(3, 3)``)."""

    def infer(self, args: dict, shape: tuple | list, where: str) -> tuple[tuple, int, int]:
        """Output shape, trainable and non-trainable parameter counts; checks the arguments."""
        return tuple(shape), 0, 0

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


def kh_kw(args: dict) -> int:
    return args["kernel_size"][0] * args["kernel_size"][1]


def conv_output(args: dict, shape: tuple, where: str) -> tuple[int, int]:
    """A convolution's output height and width (Keras' valid / TensorFlow's same padding)."""
    (kh, kw), (sh, sw), (dh, dw) = args["kernel_size"], args["strides"], args["dilation_rate"]
    h = out_len(shape[0], dh * (kh - 1) + 1, sh, args["padding"])
    w = out_len(shape[1], dw * (kw - 1) + 1, sw, args["padding"])
    if h <= 0 or w <= 0:
        raise ShapeError(f"kernel_size {[kh, kw]} on a {shape[0]}x{shape[1]} input gives an "
                        f"output of size {max(h, 0)}x{max(w, 0)}", where,
                        "use padding: same, a smaller kernel_size, fewer pooling layers "
                        "before it, or a larger --image-size")
    return h, w


def conv_modules(info, out_channels: int, groups: int, bias: bool) -> list:
    """A torch convolution with Keras' padding ('same' puts the extra pixel after, as TensorFlow)."""
    from torch import nn

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
    return mods + [nn.Conv2d(shape[2], out_channels, (kh, kw), (sh, sw), padding, (dh, dw), groups=groups, bias=bias)]


class _Convolution(LayerKind):
    """What the convolution kinds share: image inputs, and kernel_size, strides and dilation_rate
    written as one number or a pair."""

    needs_image = True

    def normalise(self, args, where):
        for a in ("kernel_size", "strides", "dilation_rate"):
            args[a] = pair(args[a], where, a)


# ----------------------------------------------------------------------------- the kinds

@register
class Conv2D(_Convolution):
    name = "Conv2D"
    keras_weights = ("conv",)
    args = {"filters": REQUIRED, "kernel_size": REQUIRED, "strides": 1, "padding": "valid", "activation": None,
            "use_bias": True, "dilation_rate": 1, "groups": 1, "kernel_initializer": "glorot_uniform",
            "trainable": True}
    takes_patch_whitening = True

    def infer(self, args, shape, where):
        f, g = args["filters"], args["groups"]
        positive_int(f, "filters", where, "32")
        positive_int(g, "groups", where, "1")
        if shape[2] % g or f % g:
            raise ShapeError(f"groups={g} does not divide the {shape[2]} input channels and {f} filters", where,
                            "use a groups value that divides both, e.g. groups: 1")
        h, w = conv_output(args, shape, where)
        params = kh_kw(args) * (shape[2] // g) * f + (f if args["use_bias"] else 0)
        return (h, w, f), params, 0

    def build(self, info):
        from .modules import activation_module

        a = info.args
        return conv_modules(info, a["filters"], a["groups"], a["use_bias"]) + [activation_module(a["activation"])]


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
            raise ShapeError(f"pool_size {[ph, pw]} on a {shape[0]}x{shape[1]} input gives an "
                            f"output of size {max(h, 0)}x{max(w, 0)}", where,
                            "remove this pooling layer, use padding: same, or a larger --image-size")
        return (h, w, shape[2]), 0, 0

    def build(self, info):
        from torch import nn

        from .modules import MaxPool2d, PadPool2d

        a, shape = info.args, info.input_shape
        kernel, stride = a["pool_size"], a["strides"]
        if a["padding"] == "same":
            top, bottom = same_pads(shape[0], kernel[0], stride[0])
            left, right = same_pads(shape[1], kernel[1], stride[1])
            if top or bottom or left or right:
                return [PadPool2d(self.pool, kernel, stride, (left, right, top, bottom))]
        return [MaxPool2d(kernel, stride) if self.pool == "max" else nn.AvgPool2d(kernel, stride)]


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
    """Keras' Dropout; ``noise_shape`` (batch axis first, e.g. [null, 1, 1, 1]) drops whole slices:
    a 1 shares one draw along that axis, as EfficientNet's per-image drop of a residual branch."""

    name = "Dropout"
    args = {"rate": REQUIRED, "noise_shape": None}

    def infer(self, args, shape, where):
        r, ns = args["rate"], args["noise_shape"]
        if not is_number(r) or not 0 <= r < 1:
            raise SpecError(f"rate={r!r} is not in [0, 1)", where, "use e.g. rate: 0.3")
        if ns is not None and (not isinstance(ns, (list, tuple)) or len(ns) != len(shape) + 1
                               or any(v is not None and v != 1 and v != ([None, *shape][i]) for i, v in enumerate(ns))):
            raise SpecError(f"noise_shape={ns!r} does not fit the input {tuple(shape)}", where,
                            f"give {len(shape) + 1} sizes, batch first, each null (one draw per element) or 1 "
                            "(one draw shared along that axis), e.g. [null, 1, 1, 1]")
        return shape, 0, 0

    def build(self, info):
        from .modules import Dropout

        ns = info.args["noise_shape"]
        shared = () if ns is None else tuple(torch_axis(i, len(info.input_shape)) if i else 0
                                             for i, v in enumerate(ns) if v == 1)
        return [Dropout(info.args["rate"], shared)]


@register
class Flatten(LayerKind):
    name = "Flatten"

    def infer(self, args, shape, where):
        return (math.prod(shape),), 0, 0

    def build(self, info):
        from .modules import FlattenNHWC

        return [FlattenNHWC()]


@register
class Dense(LayerKind):
    name = "Dense"
    keras_weights = ("dense",)
    args = {"units": REQUIRED, "activation": None, "use_bias": True, "kernel_initializer": "glorot_uniform",
            "trainable": True}
    can_end = True

    def infer(self, args, shape, where):
        u = args["units"]
        positive_int(u, "units", where, "128")
        if len(shape) == 2:
            raise ShapeError(f"Dense on a 2-D input {tuple(shape)}", where,
                            "add Flatten before it, or give input_shape a channel axis")
        return (*shape[:-1], u), shape[-1] * u + (u if args["use_bias"] else 0), 0

    def build(self, info):
        from torch import nn

        from .modules import ChannelDense, activation_module

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
        from .modules import activation_module

        return [activation_module(info.args["activation"])]


@register
class Rescaling(LayerKind):
    """``x * scale + offset``; each may be one number or one per channel (EfficientNet's ImageNet
    stem divides each channel by its own number)."""

    name = "Rescaling"
    args = {"scale": REQUIRED, "offset": 0.0}

    def infer(self, args, shape, where):
        for k in ("scale", "offset"):
            v = args[k]
            values = v if isinstance(v, (list, tuple)) else [v]
            if (isinstance(v, (list, tuple)) and len(v) != shape[-1]) or not values or not all(
                    is_number(x) and math.isfinite(x) for x in values):
                raise SpecError(f"{k}={v!r} is not a number (or one per channel: {shape[-1]})", where,
                                "use e.g. scale: 0.00392156862745098 (1/255)")
        return shape, 0, 0

    def build(self, info):
        from .modules import Rescaling

        return [Rescaling(info.args["scale"], info.args["offset"])]


@register
class Normalization(LayerKind):
    """Keras' Normalization: ``(x - mean) / max(sqrt(variance), 1e-7)`` per channel. Given ``mean``
    and ``variance`` they are constants (ConvNeXt's stem); without them they are the layer's
    non-trainable weights (mean, variance and Keras' adapt count), loaded from a file (EfficientNet)."""

    name = "Normalization"
    args = {"mean": None, "variance": None, "invert": False}

    def infer(self, args, shape, where):
        c = shape[-1]
        if (args["mean"] is None) != (args["variance"] is None):
            raise SpecError("give both mean and variance, or neither", where,
                            "e.g. mean: [123.7, 116.3, 103.5] and variance: [3409, 3262, 3291]")
        if args["invert"] is not False:
            raise SpecError("invert=true is not supported", where, "use invert: false")
        for k in ("mean", "variance"):
            v = args[k]
            values = v if isinstance(v, (list, tuple)) else [v]
            if v is not None and ((isinstance(v, (list, tuple)) and len(v) != c)
                                  or not all(is_number(x) and math.isfinite(x) for x in values)):
                raise SpecError(f"{k}={v!r} is not a number or {c} numbers (one per channel)", where,
                                f"give {k} one number per channel")
        return shape, 0, (0 if args["mean"] is not None else 2 * c + 1)

    def build(self, info):
        from .modules import Normalization

        a = info.args
        return [Normalization(info.input_shape[-1], a["mean"], a["variance"])]


@register
class LayerScale(LayerKind):
    """ConvNeXt's LayerScale (keras.applications.convnext): each channel times a learned gamma,
    which starts at ``init_values``."""

    name = "LayerScale"
    keras_module = "keras.src.applications.convnext"
    args = {"init_values": REQUIRED, "projection_dim": REQUIRED, "trainable": True}

    def infer(self, args, shape, where):
        v, d = args["init_values"], args["projection_dim"]
        if not is_number(v) or not math.isfinite(v):
            raise SpecError(f"init_values={v!r} is not a number", where, "use e.g. init_values: 1.0e-6")
        positive_int(d, "projection_dim", where, str(shape[-1]))
        if d != shape[-1]:
            raise ShapeError(f"projection_dim={d} but the input has {shape[-1]} channels", where,
                            f"use projection_dim: {shape[-1]}")
        return shape, d, 0

    def build(self, info):
        from .modules import LayerScale

        return [LayerScale(info.args["projection_dim"], float(info.args["init_values"]))]


@register
class DepthwiseConv2D(_Convolution):
    """One kernel per input channel (``depth_multiplier`` of them): MobileNet's spatial filter."""

    name = "DepthwiseConv2D"
    keras_weights = ("depthwise",)
    args = {"kernel_size": REQUIRED, "strides": 1, "padding": "valid", "depth_multiplier": 1, "activation": None,
            "use_bias": True, "dilation_rate": 1, "trainable": True}

    def infer(self, args, shape, where):
        m = args["depth_multiplier"]
        positive_int(m, "depth_multiplier", where, "1")
        h, w = conv_output(args, shape, where)
        out = shape[2] * m
        return (h, w, out), kh_kw(args) * out + (out if args["use_bias"] else 0), 0

    def build(self, info):
        from .modules import activation_module

        a, c = info.args, info.input_shape[2]
        return conv_modules(info, c * a["depth_multiplier"], c, a["use_bias"]) + [activation_module(a["activation"])]


@register
class SeparableConv2D(_Convolution):
    """A depthwise convolution, then a 1x1 convolution to ``filters`` channels (Xception's)."""

    name = "SeparableConv2D"
    keras_weights = ("depthwise", "conv")
    args = {"filters": REQUIRED, "kernel_size": REQUIRED, "strides": 1, "padding": "valid", "depth_multiplier": 1,
            "activation": None, "use_bias": True, "dilation_rate": 1, "trainable": True}

    def infer(self, args, shape, where):
        f, m = args["filters"], args["depth_multiplier"]
        positive_int(f, "filters", where, "32")
        positive_int(m, "depth_multiplier", where, "1")
        h, w = conv_output(args, shape, where)
        mid = shape[2] * m
        return (h, w, f), kh_kw(args) * mid + mid * f + (f if args["use_bias"] else 0), 0

    def build(self, info):
        from torch import nn

        from .modules import activation_module

        a, c = info.args, info.input_shape[2]
        depthwise = conv_modules(info, c * a["depth_multiplier"], c, False)
        pointwise = nn.Conv2d(c * a["depth_multiplier"], a["filters"], 1, bias=a["use_bias"])
        return depthwise + [pointwise, activation_module(a["activation"])]


@register
class ZeroPadding2D(LayerKind):
    name = "ZeroPadding2D"
    args = {"padding": 1}
    needs_image = True

    def normalise(self, args, where):
        p = args["padding"]
        if isinstance(p, int) and not isinstance(p, bool):
            p = ((p, p), (p, p))
        elif isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, int) for v in p):
            p = ((p[0], p[0]), (p[1], p[1]))
        ok = (isinstance(p, (list, tuple)) and len(p) == 2 and all(
            isinstance(q, (list, tuple)) and len(q) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in q) for q in p))
        if not ok:
            raise SpecError(f"padding={args['padding']!r} is not a padding", where,
                            "use e.g. padding: 1, [1, 2] (rows, columns) or [[1, 0], [2, 0]] "
                            "(top, bottom, left, right)")
        args["padding"] = [list(p[0]), list(p[1])]

    def infer(self, args, shape, where):
        (t, b), (left, right) = args["padding"]
        return (shape[0] + t + b, shape[1] + left + right, shape[2]), 0, 0

    def build(self, info):
        from torch import nn

        (t, b), (left, right) = info.args["padding"]
        return [nn.ZeroPad2d((left, right, t, b))]


@register
class ReLU(LayerKind):
    """Keras' ReLU layer: ``max_value`` caps it (ReLU6), ``negative_slope`` below ``threshold``."""

    name = "ReLU"
    args = {"max_value": None, "negative_slope": 0.0, "threshold": 0.0}

    def infer(self, args, shape, where):
        m, s, t = args["max_value"], args["negative_slope"], args["threshold"]
        if m is not None and (not is_number(m) or m < 0):
            raise SpecError(f"max_value={m!r} is not a number >= 0", where, "use e.g. max_value: 6, or leave it out")
        if not is_number(s) or s < 0:
            raise SpecError(f"negative_slope={s!r} is not a number >= 0", where, "use e.g. negative_slope: 0.1")
        if not is_number(t) or t < 0:  # Keras refuses a negative threshold too
            raise SpecError(f"threshold={t!r} is not a number >= 0", where, "use e.g. threshold: 0")
        return shape, 0, 0

    def build(self, info):
        from .modules import KerasReLU

        a = info.args
        return [KerasReLU(a["max_value"], float(a["negative_slope"]), float(a["threshold"]))]


@register
class SpatialDropout2D(LayerKind):
    """Drops whole feature maps (channels) while training."""

    name = "SpatialDropout2D"
    args = {"rate": REQUIRED}
    needs_image = True

    def infer(self, args, shape, where):
        r = args["rate"]
        if not is_number(r) or not 0 <= r < 1:
            raise SpecError(f"rate={r!r} is not in [0, 1)", where, "use e.g. rate: 0.2")
        return shape, 0, 0

    def build(self, info):
        from torch import nn

        return [nn.Dropout2d(info.args["rate"])]


@register
class LayerNormalization(LayerKind):
    """Normalises each position over the channel (last) axis, as Keras' default axis=-1."""

    name = "LayerNormalization"
    args = {"epsilon": 0.001, "center": True, "scale": True, "trainable": True}

    def infer(self, args, shape, where):
        eps = args["epsilon"]
        if not is_number(eps) or not 0 < eps < math.inf:
            raise SpecError(f"epsilon={eps!r} is not a positive number", where, "use e.g. epsilon: 0.001")
        for k in ("center", "scale"):
            if not isinstance(args[k], bool):
                raise SpecError(f"{k}={args[k]!r} is not true/false", where, "use true or false")
        c = shape[-1]
        return shape, c * (int(args["center"]) + int(args["scale"])), 0

    def build(self, info):
        from .modules import ChannelLayerNorm

        a = info.args
        return [ChannelLayerNorm(info.input_shape[-1], float(a["epsilon"]), a["center"], a["scale"])]


class _Merge(LayerKind):
    """Element-wise merges of two or more inputs of the same shape (or shapes that broadcast, a
    1 against any size, as Keras allows)."""

    merge = True
    op = ""
    at_most: int | None = None  # Subtract takes exactly two

    def infer(self, args, shapes, where):
        if self.at_most and len(shapes) > self.at_most:
            raise SpecError(f"{self.name} takes exactly {self.at_most} inputs but gets {len(shapes)}", where,
                            "give it two inputs")
        out = list(shapes[0])
        for s in shapes[1:]:
            if len(s) != len(out) or any(a != b and 1 not in (a, b) for a, b in zip(out, s)):
                got = " and ".join(str(tuple(v)) for v in shapes)
                raise ShapeError(f"{self.name} needs inputs of one shape but gets {got}", where,
                                "make the branches agree (e.g. a 1x1 Conv2D to the same filters, the same strides)")
            out = [max(a, b) if 1 in (a, b) else a for a, b in zip(out, s)]
        return tuple(out), 0, 0

    def build(self, info):
        from .modules import Merge

        return [Merge(self.op)]


@register
class Add(_Merge):
    name = "Add"
    op = "add"


@register
class Subtract(_Merge):
    name = "Subtract"
    op = "subtract"
    at_most = 2


@register
class Multiply(_Merge):
    name = "Multiply"
    op = "multiply"


@register
class Average(_Merge):
    name = "Average"
    op = "average"


@register
class Maximum(_Merge):
    name = "Maximum"
    op = "maximum"


@register
class Minimum(_Merge):
    name = "Minimum"
    op = "minimum"


def torch_axis(axis: int, rank: int) -> int:
    """A Keras axis (batch first, channels last; negative from the end) as a torch NCHW dim."""
    a = axis - 1 if axis > 0 else rank + axis  # position in the shape without the batch axis
    return {0: 2, 1: 3, 2: 1}[a] if rank == 3 else a + 1


@register
class Concatenate(LayerKind):
    """Joins its inputs along ``axis`` (Keras' default -1: the channels)."""

    name = "Concatenate"
    args = {"axis": -1}
    merge = True

    def infer(self, args, shapes, where):
        ax, rank = args["axis"], len(shapes[0])
        if not isinstance(ax, int) or isinstance(ax, bool) or not (-rank <= ax <= rank and ax != 0):
            raise SpecError(f"axis={ax!r} is not an axis of a {rank}-D input", where,
                            "use axis: -1 (channels)")
        a = ax - 1 if ax > 0 else rank + ax
        if any(len(s) != rank or any(s[i] != shapes[0][i] for i in range(rank) if i != a) for s in shapes):
            got = " and ".join(str(tuple(v)) for v in shapes)
            raise ShapeError(f"Concatenate on axis {ax} needs the other axes equal but gets {got}", where,
                            "pool or pad the branches to one height and width (or concatenate on another axis)")
        out = list(shapes[0])
        out[a] = sum(s[a] for s in shapes)
        return tuple(out), 0, 0

    def build(self, info):
        from .modules import Concat

        return [Concat(torch_axis(info.args["axis"], len(info.input_shape)))]


@register
class Reshape(LayerKind):
    """Keras' Reshape on the (H, W, C) values; ``target_shape`` may hold one -1, and has 1 or 3 axes."""

    name = "Reshape"
    args = {"target_shape": REQUIRED}

    def normalise(self, args, where):
        t = args["target_shape"]
        if isinstance(t, int) and not isinstance(t, bool):
            t = [t]
        if (not isinstance(t, (list, tuple)) or len(t) not in (1, 3) or t.count(-1) > 1
                or not all(isinstance(v, int) and not isinstance(v, bool) and (v > 0 or v == -1) for v in t)):
            raise SpecError(f"target_shape={args['target_shape']!r} is not 1 or 3 sizes", where,
                            "use e.g. target_shape: [7, 7, 16] or [-1] (one -1 is inferred)")
        args["target_shape"] = list(t)

    def infer(self, args, shape, where):
        t, n = list(args["target_shape"]), math.prod(shape)
        known = math.prod(v for v in t if v != -1)
        if -1 in t:
            if n % known:
                raise ShapeError(f"target_shape {t} does not divide the input's {n} values {tuple(shape)}", where,
                                "choose sizes whose product divides it")
            t[t.index(-1)] = n // known
        if math.prod(t) != n:
            raise ShapeError(f"target_shape {t} holds {math.prod(t)} values but the input {tuple(shape)} has {n}",
                            where, "choose sizes whose product is the input's")
        return tuple(t), 0, 0

    def build(self, info):
        from .modules import ReshapeNHWC

        return [ReshapeNHWC(info.output_shape)]
