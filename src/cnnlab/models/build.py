"""Build a torch module from a validated Spec. Inputs are float (N, C, H, W)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import LAYERS
from .modules import Dropout, MaxPool2d, PadPool2d  # noqa: F401 (Dropout, MaxPool2d: used from here by tests)
from .spec import Spec


def patch_moments(x: torch.Tensor, kernel, dilation, budget: int = 4_000_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance (float64) of every kernel-sized patch of images ``x`` (N, C, H, W),
    accumulated over chunks of about ``budget`` patch values, so large images stay in memory."""
    total: torch.Tensor | float = 0.0
    outer: torch.Tensor | float = 0.0
    count = 0
    step = max(1, budget // max(1, F.unfold(x[:1].float(), kernel, dilation=dilation).numel()))
    for i in range(0, len(x), step):
        p = F.unfold(x[i:i + step].float(), kernel, dilation=dilation).transpose(1, 2)
        p = p.reshape(-1, p.shape[-1]).double()
        total = total + p.sum(0)
        outer = outer + p.T @ p
        count += len(p)
    assert isinstance(total, torch.Tensor) and isinstance(outer, torch.Tensor), "no images"
    mean = total / count
    return mean, outer / count - torch.outer(mean, mean)


def _is_max_pool(block: nn.Module) -> bool:
    return isinstance(block, nn.Sequential) and len(block) == 1 and (isinstance(block[0], nn.MaxPool2d)
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
        assert isinstance(block, nn.Sequential)
        if swapped:  # this pooling already ran, before the previous layer's activation
            swapped = False
            continue
        mods = list(block)
        swapped = (i + 1 < len(blocks) and len(mods) > 0 and type(mods[-1]) in (nn.ReLU, nn.LeakyReLU)
                   and _is_max_pool(blocks[i + 1]))
        plan += mods[:-1] + [blocks[i + 1][0], mods[-1]] if swapped else mods  # type: ignore[index]
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
        # temperature scaling (engine/calibration.py): the logits are divided by it before the
        # softmax or sigmoid of ``probabilities``; not a weight (the state dict stays Keras')
        self.temperature = 1.0
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
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

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

    def _graph(self, x: torch.Tensor, keep: bool, first: int = 0, last: int | None = None) -> list:
        """Run layers ``first`` to ``last`` (default: all) of the graph on ``x``, the output of layer
        ``first - 1`` (the model's input for 0): values[0] is the input, values[i + 1] layer i's
        output; a value no later layer needs is dropped (unless ``keep``), so memory stays that of
        the widest cut. Returns the outputs of the layers that ran."""
        values: list = [None] * first + [x]
        for i in range(first, len(self.blocks) if last is None else last + 1):
            sources, merge, done = self._wiring[i]
            ins = [values[k] for k in sources]
            values.append(self.blocks[i](ins if merge else ins[0]))
            if not keep:
                for k in done:
                    values[k] = None
        return values[first + 1:]

    def run_to(self, x: torch.Tensor, last: int) -> torch.Tensor:
        """Layer ``last``'s output; the layers after it do not run."""
        if self._plan is None:
            return self._graph(x, keep=False, last=last)[-1]
        for block in self.blocks[:last + 1]:
            x = block(x)
        return x

    def run_from(self, x: torch.Tensor, first: int) -> torch.Tensor:
        """The logits, from layer ``first - 1``'s output ``x`` (cached features, kept as (N, D, 1, 1)
        for the training loop's channels-last batches): only layers ``first`` on run, and they may take
        no earlier layer's output."""
        if len(self.spec.layers[first - 1].output_shape) == 1:
            x = x.flatten(1)
        return self._graph(x, keep=False, first=first)[-1]

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
        if self.temperature != 1.0:
            logits = logits / self.temperature
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
