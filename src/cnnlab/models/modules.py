"""The torch modules the layer kinds build (``layers.LayerKind.build``): the pieces Keras computes
differently from torch's own modules (padding, pooling, flattening order, per-channel Dense and
LayerNorm, merges, Keras' ReLU, Rescaling, Normalization, LayerScale, a faster dropout). They know
nothing of specs, so the layer kinds and ``build`` both import them and not each other."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def activation_module(name: str | None) -> nn.Module:
    table: dict[str | None, Callable[[], nn.Module]] = {
        None: nn.Identity, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "selu": nn.SELU,
        "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "silu": nn.SiLU, "softplus": nn.Softplus,
        "leaky_relu": lambda: nn.LeakyReLU(0.2), "softmax": lambda: nn.Softmax(dim=1),
    }
    return table[name]()


class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d, with a faster inference path for 2 x 2 windows of stride 2 on channels_last
    CPU tensors of even height and width (every preset's pooling).

    Torch's CPU kernel writes an int64 index per output even when no gradient is wanted: a
    fashion-cnn prediction in bf16 spent 43% of its time pooling. Without gradients this takes
    the maximum of neighbouring columns, then of neighbouring rows, as two elementwise maxima
    over the NHWC memory: the same values bit for bit, 2.7x faster in bf16 and 1.6x in float32
    at batch 256 (docs/performance.md). Training, tracing and ONNX export keep torch's op."""

    def __init__(self, kernel_size, stride=None) -> None:
        super().__init__(kernel_size, stride)
        pair = nn.modules.utils._pair
        self.halves = pair(kernel_size) == (2, 2) and pair(self.stride) == (2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not self.halves or torch.is_grad_enabled() or x.device.type != "cpu" or x.dim() != 4
                or x.shape[2] % 2 or x.shape[3] % 2 or not x.is_contiguous(memory_format=torch.channels_last)
                or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            return super().forward(x)
        n, c, h, w = x.shape
        v = x.permute(0, 2, 3, 1).reshape(n, h, w // 2, 2 * c)  # a row's neighbouring pixels side by side
        cols = torch.maximum(v[..., :c], v[..., c:]).reshape(n, h // 2, w * c)  # two rows side by side
        half = (w // 2) * c
        return torch.maximum(cols[..., :half], cols[..., half:]).reshape(n, h // 2, w // 2, c).permute(0, 3, 1, 2)


class PadPool2d(nn.Module):
    """Max or average pooling with Keras' asymmetric 'same' padding (padded cells ignored)."""

    def __init__(self, kind: str, kernel, stride, pads):
        super().__init__()
        self.kind, self.kernel, self.stride, self.pads = kind, kernel, stride, pads

    def forward(self, x):
        if self.kind == "max":
            return F.max_pool2d(F.pad(x, self.pads, value=float("-inf")), self.kernel, self.stride)
        ones = torch.ones_like(x[:1, :1])
        total = F.avg_pool2d(F.pad(x, self.pads), self.kernel, self.stride)
        count = F.avg_pool2d(F.pad(ones, self.pads), self.kernel, self.stride)
        return total / count


class Dropout(nn.Module):
    """Inverted dropout. On CPU the mask comes from 16-bit random integers (four per int64
    draw): torch's bernoulli_ draws one number per element and made dropout ~17% of a
    deep-bn-cnn training step; this is ~4x faster (docs/performance.md). ``rate`` is kept to
    1/65536. Uses torch's global generator, so a seed still makes a run repeatable. ``shared``:
    torch dims along which one draw is shared (Keras' noise_shape 1s; 0 alone: per image)."""

    def __init__(self, rate: float, shared: tuple = ()):
        super().__init__()
        self.rate, self.shared = rate, tuple(shared)
        self.threshold = int(round(rate * 65536)) - 32768  # int16 values below it are dropped

    def forward(self, x):
        if not self.training or self.rate == 0:
            return x
        if self.shared:
            shape = [1 if d in self.shared else n for d, n in enumerate(x.shape)]
            keep = (torch.rand(shape, device=x.device) >= self.rate).to(x.dtype) / (1.0 - self.rate)
            return x * keep
        if x.device.type != "cpu" or not x.dtype.is_floating_point:
            return F.dropout(x, self.rate, True)
        if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
            x = x.contiguous()
        n = x.numel()
        bits = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64).view(torch.int16)[:n]
        keep = (bits >= self.threshold).to(x.dtype).mul_(1.0 / (1.0 - self.rate))
        return x * keep.as_strided(x.shape, x.stride())

    def extra_repr(self) -> str:
        return f"rate={self.rate}" + (f", shared={self.shared}" if self.shared else "")


def _per_channel(v) -> torch.Tensor:
    """A number, or one per channel, as a float tensor that broadcasts over (N, C, H, W) or (N, C)."""
    return torch.tensor(v, dtype=torch.float32).reshape(-1)


def _channels(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.view(1, -1, 1, 1) if x.dim() == 4 and t.numel() > 1 else t


class Rescaling(nn.Module):
    """Keras' Rescaling: ``x * scale + offset`` (on what the model sees, after cnnlab's scaling);
    each a number or one per channel."""

    def __init__(self, scale, offset):
        super().__init__()
        self.per_channel = isinstance(scale, (list, tuple)) or isinstance(offset, (list, tuple))
        if self.per_channel:
            self.register_buffer("scale", _per_channel(scale), persistent=False)
            self.register_buffer("offset", _per_channel(offset), persistent=False)
        else:
            self.scale, self.offset = float(scale), float(offset)

    def forward(self, x):
        if self.per_channel:
            return x * _channels(self.scale, x) + _channels(self.offset, x)
        return x * self.scale + self.offset

    def extra_repr(self) -> str:
        return f"scale={self.scale}, offset={self.offset}"


class Normalization(nn.Module):
    """Keras' Normalization, ``(x - mean) / max(sqrt(variance), 1e-7)`` per channel. Given
    ``mean`` and ``variance``: constants; else weights (Keras' mean, variance and count), loaded
    with the model."""

    def __init__(self, channels: int, mean=None, variance=None):
        super().__init__()
        fixed = mean is not None
        self.register_buffer("mean", _per_channel(mean) if fixed else torch.zeros(channels), persistent=not fixed)
        self.register_buffer("variance", _per_channel(variance) if fixed else torch.ones(channels),
                             persistent=not fixed)
        if not fixed:
            self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    def forward(self, x):
        return (x - _channels(self.mean, x)) / _channels(self.variance.sqrt().clamp_min(1e-7), x)


class LayerScale(nn.Module):
    """ConvNeXt's LayerScale: each channel times a learned gamma."""

    def __init__(self, channels: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels,), init))

    def forward(self, x):
        return x * (self.gamma.view(1, -1, 1, 1) if x.dim() == 4 else self.gamma)


class KerasReLU(nn.Module):
    """Keras' ReLU layer: x from ``threshold`` up, ``negative_slope * (x - threshold)`` below it,
    capped at ``max_value``."""

    def __init__(self, max_value: float | None, negative_slope: float, threshold: float):
        super().__init__()
        self.max_value, self.negative_slope, self.threshold = max_value, negative_slope, threshold

    def forward(self, x):
        if self.negative_slope == 0 and self.threshold == 0:
            y = F.relu(x)
        else:
            y = torch.where(x >= self.threshold, x, self.negative_slope * (x - self.threshold))
        return y if self.max_value is None else y.clamp(max=float(self.max_value))

    def extra_repr(self) -> str:
        return f"max_value={self.max_value}, negative_slope={self.negative_slope}, threshold={self.threshold}"


class ChannelLayerNorm(nn.Module):
    """LayerNormalization over the channel axis: dim 1 of (N, C, H, W), the last of (N, F)."""

    def __init__(self, channels: int, eps: float, center: bool, scale: bool):
        super().__init__()
        self.channels, self.eps = channels, eps
        self.weight = nn.Parameter(torch.ones(channels)) if scale else None
        self.bias = nn.Parameter(torch.zeros(channels)) if center else None

    def forward(self, x):
        shape = (self.channels,)  # a constant: exporters need it static
        if x.dim() == 4:
            return F.layer_norm(x.permute(0, 2, 3, 1), shape, self.weight, self.bias, self.eps).permute(0, 3, 1, 2)
        return F.layer_norm(x, shape, self.weight, self.bias, self.eps)


class Merge(nn.Module):
    """An element-wise merge of a list of tensors (Keras' Add, Subtract, Multiply, ...)."""

    OPS: dict[str, Callable] = {"add": torch.add, "average": torch.add, "subtract": torch.sub, "multiply": torch.mul,
           "maximum": torch.maximum, "minimum": torch.minimum}

    def __init__(self, op: str):
        super().__init__()
        self.op, self.fn = op, self.OPS[op]

    def forward(self, xs: list):
        out = xs[0]
        for x in xs[1:]:
            out = self.fn(out, x)
        return out / len(xs) if self.op == "average" else out

    def extra_repr(self) -> str:
        return self.op


class Concat(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, xs: list):
        return torch.cat(xs, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class ReshapeNHWC(nn.Module):
    """Keras' Reshape: the values in (H, W, C) order, to ``shape`` (1 or 3 axes, channels last)."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(int(v) for v in shape)

    def forward(self, x):
        if x.dim() == 4:
            x = x.permute(0, 2, 3, 1)
        x = x.reshape((-1, *self.shape))
        return x.permute(0, 3, 1, 2) if x.dim() == 4 else x

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class FlattenNHWC(nn.Module):
    """Flatten in Keras' (H, W, C) order, so Dense weights line up with Keras'."""

    def forward(self, x):
        return x.permute(0, 2, 3, 1).flatten(1) if x.dim() == 4 else x.flatten(1)


class ChannelDense(nn.Module):
    """Dense on an (H, W, C) input acts on the channel axis, as in Keras."""

    def __init__(self, cin, units, bias):
        super().__init__()
        self.linear = nn.Linear(cin, units, bias=bias)

    def forward(self, x):
        # explicit axes (not movedim's -1): the same view, and ONNX's Transpose takes no negative axes
        return self.linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
