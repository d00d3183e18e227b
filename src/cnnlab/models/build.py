"""Build a torch module from a validated Spec. Inputs are float (N, C, H, W)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import LAYERS
from .spec import Spec


def activation_module(name: str | None) -> nn.Module:
    return {
        None: nn.Identity, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "selu": nn.SELU,
        "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "silu": nn.SiLU, "softplus": nn.Softplus,
        "leaky_relu": lambda: nn.LeakyReLU(0.2), "softmax": lambda: nn.Softmax(dim=1),
    }[name]()


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

    OPS = {"add": torch.add, "average": torch.add, "subtract": torch.sub, "multiply": torch.mul,
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


def patch_moments(x: torch.Tensor, kernel, dilation, budget: int = 4_000_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance (float64) of every kernel-sized patch of images ``x`` (N, C, H, W),
    accumulated over chunks of about ``budget`` patch values, so large images stay in memory."""
    total, outer, count = 0, 0, 0
    step = max(1, budget // max(1, F.unfold(x[:1].float(), kernel, dilation=dilation).numel()))
    for i in range(0, len(x), step):
        p = F.unfold(x[i:i + step].float(), kernel, dilation=dilation).transpose(1, 2)
        p = p.reshape(-1, p.shape[-1]).double()
        total = total + p.sum(0)
        outer = outer + p.T @ p
        count += len(p)
    mean = total / count
    return mean, outer / count - torch.outer(mean, mean)


def _is_max_pool(block: nn.Sequential) -> bool:
    return len(block) == 1 and (isinstance(block[0], nn.MaxPool2d)
                                or (isinstance(block[0], PadPool2d) and block[0].kind == "max"))


def _forward_plan(blocks: nn.ModuleList) -> list[nn.Module]:
    """The modules ``forward`` runs, in order. A ReLU (or LeakyReLU) that ends a layer right
    before a MaxPooling2D runs after the pooling instead: max-pooling commutes with a
    non-decreasing piecewise-linear function, so outputs and gradients are bit for bit the
    same, and the activation touches a quarter of the values (docs/performance.md). Layer
    outputs (``features``) keep the spec's order."""
    plan: list[nn.Module] = []
    swapped = False
    for i, block in enumerate(blocks):
        if swapped:  # this pooling already ran, before the previous layer's activation
            swapped = False
            continue
        mods = list(block)
        swapped = (i + 1 < len(blocks) and len(mods) > 0 and type(mods[-1]) in (nn.ReLU, nn.LeakyReLU)
                   and _is_max_pool(blocks[i + 1]))
        plan += mods[:-1] + [blocks[i + 1][0], mods[-1]] if swapped else mods
    return plan


def _wiring(spec: Spec) -> list[tuple[list[int], bool, list[int]]]:
    """For each layer: the positions of its inputs (0 the model's input, i + 1 layer i's output),
    whether it merges them, and the positions no later layer reads."""
    pos = {spec.input_name: 0} | {layer.name: i + 1 for i, layer in enumerate(spec.layers)}
    sources = [[pos[n] for n in layer.inputs] for layer in spec.layers]
    last_use = {k: i for i, srcs in enumerate(sources) for k in srcs}
    return [(srcs, LAYERS[layer.type].merge, sorted(k for k in set(srcs) if last_use[k] == i))
            for i, (layer, srcs) in enumerate(zip(spec.layers, sources))]


class SpecModel(nn.Module):
    """The network of a Spec. ``forward`` returns logits (the output layer's softmax or
    sigmoid is left to the loss and to ``probabilities``); ``blocks[i]`` is spec layer i."""

    def __init__(self, spec: Spec):
        super().__init__()
        self.spec = spec
        blocks = []
        for i, info in enumerate(spec.layers):
            mods = LAYERS[info.type].build(info)  # the layer kind's torch modules
            if i == len(spec.layers) - 1 and isinstance(mods[-1], (nn.Softmax, nn.Sigmoid)):
                mods = mods[:-1]  # the loss applies it; probabilities() puts it back
            blocks.append(nn.Sequential(*mods))
        self.blocks = nn.ModuleList(blocks)
        self._plan = _forward_plan(self.blocks) if spec.is_chain else None
        self._wiring = _wiring(spec)
        self.reset_parameters()
        self.frozen: set[int] = set()
        # > 0: forward's input is layer start - 1's output (cached features, --recipe features), and
        # only the layers from ``start`` on run
        self.start = 0
        for i, info in enumerate(spec.layers):
            if info.args.get("trainable") is False:
                self.freeze(i)
        # channels_last weights and activations make CPU convolutions ~25% faster
        # (docs/performance.md); inputs are made channels_last by the training loop too.
        self.to(memory_format=torch.channels_last)

    def freeze(self, index: int) -> None:
        """Layer ``index`` keeps its weights; a frozen BatchNorm also keeps its statistics and
        normalises with them (inference mode), as in Keras' transfer-learning guide."""
        self.frozen.add(index)
        self.blocks[index].requires_grad_(False)
        if self.training:
            self.train(True)

    def unfreeze(self, index: int) -> None:
        """Layer ``index`` trains again (unless its spec says trainable: false)."""
        if self.spec.layers[index].args.get("trainable") is False:
            return
        self.frozen.discard(index)
        self.blocks[index].requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        for i in getattr(self, "frozen", ()):
            for m in self.blocks[i].modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def _weighted(self):
        """(layer info, its Conv2d or Linear) for every layer with a kernel."""
        for info, block in zip(self.spec.layers, self.blocks):
            for m in block.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    yield info, m

    def reset_parameters(self) -> None:
        """Keras' initializers: Glorot-uniform kernels unless a layer names he_uniform, zero
        biases. patch_whitening layers start as Glorot until ``init_from_data``."""
        for info, m in self._weighted():
            if info.args.get("kernel_initializer") == "he_uniform":
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")  # U(+/- sqrt(6 / fan_in))
            else:
                nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, eps: float = 0.1) -> None:
        """Set patch_whitening kernels from preprocessed training images ``x`` (N, C, H, W).

        The kernels are the top filters/2 principal components of the images' kh x kw patches,
        each divided by sqrt(its variance + eps x the mean variance), and their negatives, so
        the layer outputs decorrelated, unit-variance responses. A bias, if the layer has one,
        centres them. As in hlb-CIFAR10 and airbench; docs/performance.md has the effect.
        """
        for info, m in self._weighted():
            if info.args.get("kernel_initializer") != "patch_whitening":
                continue
            mean, cov = patch_moments(x, m.kernel_size, m.dilation)
            var, vecs = torch.linalg.eigh(cov)
            var, vecs = var.flip(0).clamp_min(0), vecs.flip(1)
            if float(var.sum()) <= 1e-12:  # constant images: nothing to whiten, keep Glorot
                continue
            n = m.out_channels // 2
            w = (vecs[:, :n] / torch.sqrt(var[:n] + eps * var.mean().clamp_min(1e-12))).T
            w = torch.cat([w, -w])
            m.weight.copy_(w.reshape(m.weight.shape).to(m.weight.dtype))
            if m.bias is not None:
                m.bias.copy_((-(w @ mean)).to(m.bias.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.start:
            return self.run_from(x, self.start)
        if self._plan is None:
            return self._graph(x, keep=False)[-1]
        for step in self._plan:
            x = step(x)
        return x

    def _graph(self, x: torch.Tensor, keep: bool) -> list:
        """Run a graph spec: values[0] is the input, values[i + 1] layer i's output; a value no
        later layer needs is dropped (unless ``keep``), so memory stays that of the widest cut."""
        values: list = [x]
        for block, (sources, merge, done) in zip(self.blocks, self._wiring):
            ins = [values[k] for k in sources]
            values.append(block(ins if merge else ins[0]))
            if not keep:
                for k in done:
                    values[k] = None
        return values[1:]

    def run_to(self, x: torch.Tensor, last: int) -> torch.Tensor:
        """Layer ``last``'s output; the layers after it do not run."""
        if self._plan is None:
            values: list = [x]
            for i, (block, (sources, merge, done)) in enumerate(zip(self.blocks, self._wiring)):
                ins = [values[k] for k in sources]
                values.append(block(ins if merge else ins[0]))
                if i == last:
                    return values[-1]
                for k in done:
                    values[k] = None
        for block in self.blocks[:last + 1]:
            x = block(x)
        return x

    def run_from(self, x: torch.Tensor, first: int) -> torch.Tensor:
        """The logits, from layer ``first - 1``'s output ``x`` (cached features, kept as (N, D, 1, 1)
        for the training loop's channels-last batches): only layers ``first`` on run, and they may take
        no earlier layer's output."""
        if len(self.spec.layers[first - 1].output_shape) == 1:
            x = x.flatten(1)
        values: list = [None] * first + [x]
        for block, (sources, merge, _) in list(zip(self.blocks, self._wiring))[first:]:
            ins = [values[k] for k in sources]
            values.append(block(ins if merge else ins[0]))
        return values[-1]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's output (for feature maps), in the spec's order."""
        if self._plan is None:
            return self._graph(x, keep=True)
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, num_classes) probabilities; a binary head gives [1 - p, p]."""
        if self.spec.head == "binary":
            p = torch.sigmoid(logits[:, 0])
            return torch.stack([1 - p, p], 1)
        return torch.softmax(logits, 1)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0,
             class_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy; with ``class_weights`` (K,) each sample's loss is multiplied by its
        class's weight and averaged over the batch, as Keras' ``class_weight`` does."""
        if class_weights is None:
            if self.spec.head == "binary":
                return F.binary_cross_entropy_with_logits(logits[:, 0], y.to(logits.dtype))
            return F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        if self.spec.head == "binary":
            each = F.binary_cross_entropy_with_logits(logits[:, 0], y.to(logits.dtype), reduction="none")
        else:
            each = F.cross_entropy(logits, y, label_smoothing=label_smoothing, reduction="none")
        return (each * class_weights[y].to(each.dtype)).mean()

    def predicted(self, logits: torch.Tensor) -> torch.Tensor:
        if self.spec.head == "binary":
            return (logits[:, 0] > 0).long()
        return logits.argmax(1)


def build_module(spec: Spec) -> SpecModel:
    return SpecModel(spec)
