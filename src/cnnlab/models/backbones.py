"""Backbones: architectures written in cnnlab's own spec vocabulary (a registry, as timm's), with
Keras' layer names, so that the ImageNet weights files Keras Applications downloads load by name.

``--backbone NAME[:WIDTH]`` builds one for the data's image size, then a new head for its classes:
GlobalAveragePooling2D, Dropout(0.2) and Dense (softmax; sigmoid for two classes).
``--weights FILE.h5`` loads the backbone's weights (cnnlab.models.kerasfiles.read_weights).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import SpecError


@dataclass(frozen=True)
class Backbone:
    name: str
    description: str
    build: Callable[..., list]  # (input shape, width, pretrained) -> layers (after an Input named "input_layer")
    widths: tuple = ()  # the widths (alpha) it takes; the first is the default
    min_size: int = 32
    weights: str = ""  # where its pretrained weights come from
    settings: dict = field(default_factory=dict)  # training settings it implies (below the user's)
    bgr: bool = False  # its weights expect BGR input: the first convolution's input channels reverse on loading
    top: tuple = ()  # Keras' include_top=True layers after the body (the 1000 ImageNet classes)
    pool: tuple = ({"type": "GlobalAveragePooling2D", "name": "avg_pool"},)  # Keras' pooling="avg" (a new head's)


BACKBONES: dict[str, Backbone] = {}


def register_backbone(b: Backbone) -> Backbone:
    BACKBONES[b.name] = b
    return b


# ----------------------------------------------------------------------------- MobileNetV2

def _make_divisible(v: float, divisor: int = 8) -> int:
    """Keras' rounding of channel counts to a multiple of 8 (never down by more than 10%)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _bn(name: str, momentum: float) -> dict:
    return {"type": "BatchNormalization", "name": name, "epsilon": 1e-3, "momentum": momentum}


def _relu6(name: str) -> dict:
    return {"type": "ReLU", "name": name, "max_value": 6.0}


def mobilenet_v2(shape: tuple, alpha: float | None, pretrained: bool) -> list:
    """Keras Applications' MobileNetV2 (include_top=False), layer for layer and name for name.
    BatchNorm momentum is Keras' 0.999 with pretrained weights (their statistics are right from
    the start); from random weights it is 0.9, so that the statistics settle within a short run
    (0.999 moves them 1 - 0.999^180 = 16% of the way in benchmarks/photos.py's 180 steps)."""
    alpha = 1.0 if alpha is None else alpha
    m = 0.999 if pretrained else 0.9

    def bn(name: str) -> dict:
        return _bn(name, m)

    h, w = shape[0], shape[1]
    layers = [{"type": "Conv2D", "name": "Conv1", "filters": _make_divisible(32 * alpha), "kernel_size": 3,
               "strides": 2, "padding": "same", "use_bias": False}, bn("bn_Conv1"), _relu6("Conv1_relu")]
    h, w = -(-h // 2), -(-w // 2)
    channels, last = _make_divisible(32 * alpha), "Conv1_relu"
    blocks = [(16, 1, 1), (24, 2, 6), (24, 1, 6), (32, 2, 6), (32, 1, 6), (32, 1, 6), (64, 2, 6), (64, 1, 6),
              (64, 1, 6), (64, 1, 6), (96, 1, 6), (96, 1, 6), (96, 1, 6), (160, 2, 6), (160, 1, 6), (160, 1, 6),
              (320, 1, 6)]
    for block_id, (filters, stride, expansion) in enumerate(blocks):
        out = _make_divisible(int(filters * alpha))
        prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
        start = last
        if block_id:
            layers += [{"type": "Conv2D", "name": f"{prefix}expand", "filters": expansion * channels,
                        "kernel_size": 1, "padding": "same", "use_bias": False, "inputs": last},
                       bn(f"{prefix}expand_BN"), _relu6(f"{prefix}expand_relu")]
        first = {} if block_id else {"inputs": last}
        if stride == 2:  # imagenet_utils.correct_pad: one pixel less before on an even side
            pad = [[1 - (1 - h % 2), 1], [1 - (1 - w % 2), 1]]
            layers.append({"type": "ZeroPadding2D", "name": f"{prefix}pad", "padding": pad, **first})
            first = {}
            h, w = (h + pad[0][0] + 1 - 3) // 2 + 1, (w + pad[1][0] + 1 - 3) // 2 + 1
        layers += [{"type": "DepthwiseConv2D", "name": f"{prefix}depthwise", "kernel_size": 3, "strides": stride,
                    "padding": "same" if stride == 1 else "valid", "use_bias": False, **first},
                   bn(f"{prefix}depthwise_BN"), _relu6(f"{prefix}depthwise_relu"),
                   {"type": "Conv2D", "name": f"{prefix}project", "filters": out, "kernel_size": 1, "padding": "same",
                    "use_bias": False}, bn(f"{prefix}project_BN")]
        last = f"{prefix}project_BN"
        if channels == out and stride == 1:
            layers.append({"type": "Add", "name": f"{prefix}add", "inputs": [start, last]})
            last = f"{prefix}add"
        channels = out
    top = _make_divisible(1280 * alpha) if alpha > 1.0 else 1280
    return layers + [{"type": "Conv2D", "name": "Conv_1", "filters": top, "kernel_size": 1, "use_bias": False,
                      "inputs": last}, bn("Conv_1_bn"), _relu6("out_relu")]


register_backbone(Backbone(
    "mobilenet_v2", "MobileNetV2 (Keras Applications, include_top=False): inverted residual blocks with "
    "depthwise convolutions; WIDTH is alpha", mobilenet_v2, widths=(1.0, 0.35, 0.5, 0.75, 1.3, 1.4),
    weights="Keras Applications' mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{size}_no_top.h5 "
    "(ImageNet; inputs scaled to [-1, 1])", settings={"scale": "127.5"},
    top=({"type": "GlobalAveragePooling2D", "name": "global_average_pooling2d"},
         {"type": "Dense", "name": "predictions", "units": 1000, "activation": "softmax"})))


# ----------------------------------------------------------------------------- VGG16, ResNet50

# Keras Applications' "caffe" preprocessing (VGG16, ResNet50): BGR pixels minus ImageNet's BGR
# means. cnnlab keeps RGB: the means in RGB order are the scaling (--scale caffe), and the first
# convolution's input channels are reversed as its weights load (Backbone.bgr), which computes
# the same numbers.
CAFFE_SETTINGS = {"scale": "caffe"}


def vgg16(shape: tuple, width: float | None, pretrained: bool) -> list:
    """Keras Applications' VGG16 (include_top=False): five blocks of same-padded 3x3 ReLU
    convolutions (2, 2, 3, 3, 3 of 64, 128, 256, 512, 512 filters), each closed by a 2x2 pool."""
    layers = []
    for block, (filters, convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], start=1):
        layers += [{"type": "Conv2D", "name": f"block{block}_conv{i}", "filters": filters, "kernel_size": 3,
                    "padding": "same", "activation": "relu"} for i in range(1, convs + 1)]
        layers.append({"type": "MaxPooling2D", "name": f"block{block}_pool", "pool_size": 2, "strides": 2})
    return layers


register_backbone(Backbone(
    "vgg16", "VGG16 (Keras Applications, include_top=False): 13 3x3 convolutions in 5 blocks, 14.7M parameters",
    vgg16, min_size=32, weights="Keras Applications' vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 (ImageNet; "
    "caffe-style BGR mean subtraction)", settings=CAFFE_SETTINGS, bgr=True,
    top=({"type": "Flatten", "name": "flatten"}, {"type": "Dense", "name": "fc1", "units": 4096, "activation": "relu"},
         {"type": "Dense", "name": "fc2", "units": 4096, "activation": "relu"},
         {"type": "Dense", "name": "predictions", "units": 1000, "activation": "softmax"})))


def resnet50(shape: tuple, width: float | None, pretrained: bool) -> list:
    """Keras Applications' ResNet50 (v1, include_top=False): a 7x7 stride-2 stem, a 3x3 pool, then
    3, 4, 6 and 3 bottleneck blocks (1x1, 3x3, 1x1 with 4x expansion) at 64, 128, 256 and 512
    filters; convolutions with biases, BatchNorm epsilon 1.001e-5, Keras' layer names."""
    def bn(name: str) -> dict:
        return {"type": "BatchNormalization", "name": name, "epsilon": 1.001e-5}

    layers = [{"type": "ZeroPadding2D", "name": "conv1_pad", "padding": [[3, 3], [3, 3]]},
              {"type": "Conv2D", "name": "conv1_conv", "filters": 64, "kernel_size": 7, "strides": 2},
              bn("conv1_bn"), {"type": "Activation", "name": "conv1_relu", "activation": "relu"},
              {"type": "ZeroPadding2D", "name": "pool1_pad", "padding": [[1, 1], [1, 1]]},
              {"type": "MaxPooling2D", "name": "pool1_pool", "pool_size": 3, "strides": 2}]
    last = "pool1_pool"
    for stage, (filters, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=2):
        for b in range(1, blocks + 1):
            p = f"conv{stage}_block{b}_"
            stride = 2 if b == 1 and stage > 2 else 1
            shortcut = last
            if b == 1:
                layers += [{"type": "Conv2D", "name": f"{p}0_conv", "filters": 4 * filters, "kernel_size": 1,
                            "strides": stride, "inputs": last}, bn(f"{p}0_bn")]
                shortcut = f"{p}0_bn"
            layers += [{"type": "Conv2D", "name": f"{p}1_conv", "filters": filters, "kernel_size": 1,
                        "strides": stride, "inputs": last}, bn(f"{p}1_bn"),
                       {"type": "Activation", "name": f"{p}1_relu", "activation": "relu"},
                       {"type": "Conv2D", "name": f"{p}2_conv", "filters": filters, "kernel_size": 3,
                        "padding": "same"}, bn(f"{p}2_bn"),
                       {"type": "Activation", "name": f"{p}2_relu", "activation": "relu"},
                       {"type": "Conv2D", "name": f"{p}3_conv", "filters": 4 * filters, "kernel_size": 1},
                       bn(f"{p}3_bn"), {"type": "Add", "name": f"{p}add", "inputs": [shortcut, f"{p}3_bn"]},
                       {"type": "Activation", "name": f"{p}out", "activation": "relu"}]
            last = f"{p}out"
    return layers


register_backbone(Backbone(
    "resnet50", "ResNet50 (Keras Applications, v1, include_top=False): 16 bottleneck blocks in 4 stages, 23.6M "
    "parameters", resnet50, min_size=32, weights="Keras Applications' resnet50_weights_tf_dim_ordering_tf_kernels_"
    "notop.h5 (ImageNet; caffe-style BGR mean subtraction)", settings=CAFFE_SETTINGS, bgr=True,
    top=({"type": "GlobalAveragePooling2D", "name": "avg_pool"},
         {"type": "Dense", "name": "predictions", "units": 1000, "activation": "softmax"})))


# ----------------------------------------------------------------------------- EfficientNetB0, ConvNeXtTiny

def _correct_pad(h: int, w: int, k: int) -> list:
    """imagenet_utils.correct_pad: k // 2 on each side, one less before on an even side."""
    return [[k // 2 - (1 - h % 2), k // 2], [k // 2 - (1 - w % 2), k // 2]]


# keras/src/applications/efficientnet.py DEFAULT_BLOCKS_ARGS: (kernel, repeats, in, out, expansion, stride)
EFFICIENTNET_B0_BLOCKS = [(3, 1, 32, 16, 1, 1), (3, 2, 16, 24, 6, 2), (5, 2, 24, 40, 6, 2), (3, 3, 40, 80, 6, 2),
                          (5, 3, 80, 112, 6, 1), (5, 4, 112, 192, 6, 2), (3, 1, 192, 320, 6, 1)]
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)


def efficientnet_b0(shape: tuple, width: float | None, pretrained: bool | str) -> list:
    """Keras Applications' EfficientNetB0 (include_top=False), layer for layer and name for name:
    its own pixel scaling inside (Rescaling 1/255, then a Normalization whose mean and variance are
    weights in the file; with Keras' ImageNet file a second Rescaling, as Keras adds for
    weights="imagenet"), a stride-2 stem, 16 MBConv blocks (squeeze-and-excitation, swish, a per-image
    Dropout on the residual branch rising to 0.2 as drop_connect_rate) and a 1280-filter top."""
    def bn(name: str) -> dict:
        return {"type": "BatchNormalization", "name": name, "epsilon": 1e-3}

    def act(name: str) -> dict:
        return {"type": "Activation", "name": name, "activation": "swish"}

    h, w = shape[0], shape[1]
    layers = [{"type": "Rescaling", "name": "rescaling", "scale": 1.0 / 255.0},
              {"type": "Normalization", "name": "normalization"}]
    if pretrained == "imagenet":
        layers.append({"type": "Rescaling", "name": "rescaling_1",
                       "scale": [1.0 / math.sqrt(s) for s in IMAGENET_STDDEV_RGB]})
    layers += [{"type": "ZeroPadding2D", "name": "stem_conv_pad", "padding": _correct_pad(h, w, 3)},
               {"type": "Conv2D", "name": "stem_conv", "filters": 32, "kernel_size": 3, "strides": 2,
                "use_bias": False}, bn("stem_bn"), act("stem_activation")]
    h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    last, b = "stem_activation", 0
    total = sum(r for _, r, *_ in EFFICIENTNET_B0_BLOCKS)
    for i, (k, repeats, f_in, f_out, expand, stride) in enumerate(EFFICIENTNET_B0_BLOCKS):
        for j in range(repeats):
            s, cin = (stride, f_in) if j == 0 else (1, f_out)
            p, filters, start = f"block{i + 1}{chr(j + 97)}_", cin * expand, last
            first = {"inputs": last}
            if expand != 1:
                layers += [{"type": "Conv2D", "name": f"{p}expand_conv", "filters": filters, "kernel_size": 1,
                            "padding": "same", "use_bias": False, **first}, bn(f"{p}expand_bn"),
                           act(f"{p}expand_activation")]
                first = {}
            if s == 2:
                layers.append({"type": "ZeroPadding2D", "name": f"{p}dwconv_pad", "padding": _correct_pad(h, w, k),
                               **first})
                first = {}
                h, w = (h + 2 * (k // 2) - (1 - h % 2) - k) // 2 + 1, (w + 2 * (k // 2) - (1 - w % 2) - k) // 2 + 1
            layers += [{"type": "DepthwiseConv2D", "name": f"{p}dwconv", "kernel_size": k, "strides": s,
                        "padding": "same" if s == 1 else "valid", "use_bias": False, **first},
                       bn(f"{p}bn"), act(f"{p}activation"),
                       {"type": "GlobalAveragePooling2D", "name": f"{p}se_squeeze"},
                       {"type": "Reshape", "name": f"{p}se_reshape", "target_shape": [1, 1, filters]},
                       {"type": "Conv2D", "name": f"{p}se_reduce", "filters": max(1, int(cin * 0.25)),
                        "kernel_size": 1, "padding": "same", "activation": "swish"},
                       {"type": "Conv2D", "name": f"{p}se_expand", "filters": filters, "kernel_size": 1,
                        "padding": "same", "activation": "sigmoid"},
                       {"type": "Multiply", "name": f"{p}se_excite", "inputs": [f"{p}activation", f"{p}se_expand"]},
                       {"type": "Conv2D", "name": f"{p}project_conv", "filters": f_out, "kernel_size": 1,
                        "padding": "same", "use_bias": False}, bn(f"{p}project_bn")]
            last = f"{p}project_bn"
            if s == 1 and cin == f_out:
                rate = 0.2 * b / total
                if rate > 0:
                    layers.append({"type": "Dropout", "name": f"{p}drop", "rate": rate,
                                   "noise_shape": [None, 1, 1, 1]})
                    last = f"{p}drop"
                layers.append({"type": "Add", "name": f"{p}add", "inputs": [last, start]})
                last = f"{p}add"
            b += 1
    return layers + [{"type": "Conv2D", "name": "top_conv", "filters": 1280, "kernel_size": 1, "padding": "same",
                      "use_bias": False, "inputs": last}, bn("top_bn"), act("top_activation")]


register_backbone(Backbone(
    "efficientnet_b0", "EfficientNetB0 (Keras Applications, include_top=False): 16 MBConv blocks with "
    "squeeze-and-excitation and swish, its pixel scaling inside, 4.0M parameters", efficientnet_b0, min_size=32,
    weights="Keras Applications' efficientnetb0_notop.h5 (ImageNet; scaling inside the network: give it 0-255 "
    "pixels)", settings={"scale": "none"},
    top=({"type": "GlobalAveragePooling2D", "name": "avg_pool"},
         {"type": "Dropout", "name": "top_dropout", "rate": 0.2},
         {"type": "Dense", "name": "predictions", "units": 1000, "activation": "softmax"})))


def convnext_tiny(shape: tuple, width: float | None, pretrained: bool | str) -> list:
    """Keras Applications' ConvNeXtTiny (include_top=False): ImageNet's mean and variance as a
    constant Normalization, a 4x4 stride-4 stem, 3, 3, 9 and 3 blocks at 96, 192, 384 and 768
    channels (7x7 depthwise, LayerNorm, two pointwise Dense with GELU, LayerScale, a residual
    Add), a LayerNorm and 2x2 stride-2 convolution between stages. Keras' nested stem and
    downsampling models are written out flat, with the names of their layers."""
    n, dims = "convnext_tiny", (96, 192, 384, 768)
    mean = [0.485 * 255, 0.456 * 255, 0.406 * 255]
    variance = [(0.229 * 255) ** 2, (0.224 * 255) ** 2, (0.225 * 255) ** 2]

    def ln(name: str) -> dict:
        return {"type": "LayerNormalization", "name": name, "epsilon": 1e-6}

    layers: list[dict[str, Any]] = [{"type": "Normalization", "name": f"{n}_prestem_normalization", "mean": mean,
                                     "variance": variance}]
    if shape[2] != 3:  # Keras adds it for 3 channels only
        layers = []
    layers += [{"type": "Conv2D", "name": f"{n}_stem_conv", "filters": dims[0], "kernel_size": 4, "strides": 4},
               ln(f"{n}_stem_layernorm")]
    for stage, (dim, depth) in enumerate(zip(dims, (3, 3, 9, 3))):
        if stage:
            layers += [ln(f"{n}_downsampling_layernorm_{stage - 1}"),
                       {"type": "Conv2D", "name": f"{n}_downsampling_conv_{stage - 1}", "filters": dim,
                        "kernel_size": 2, "strides": 2}]
        for j in range(depth):
            p, start = f"{n}_stage_{stage}_block_{j}", layers[-1]["name"]
            layers += [{"type": "Conv2D", "name": f"{p}_depthwise_conv", "filters": dim, "kernel_size": 7,
                        "padding": "same", "groups": dim}, ln(f"{p}_layernorm"),
                       {"type": "Dense", "name": f"{p}_pointwise_conv_1", "units": 4 * dim},
                       {"type": "Activation", "name": f"{p}_gelu", "activation": "gelu"},
                       {"type": "Dense", "name": f"{p}_pointwise_conv_2", "units": dim},
                       {"type": "LayerScale", "name": f"{p}_layer_scale", "init_values": 1e-6, "projection_dim": dim},
                       {"type": "Activation", "name": f"{p}_identity", "activation": "linear"},
                       {"type": "Add", "name": f"{p}_add", "inputs": [start, f"{p}_identity"]}]
    return layers


register_backbone(Backbone(
    "convnext_tiny", "ConvNeXtTiny (Keras Applications, include_top=False): 18 blocks of 7x7 depthwise "
    "convolution, LayerNorm and GELU in 4 stages, ImageNet's normalisation inside, 27.8M parameters",
    convnext_tiny, min_size=32, weights="Keras Applications' convnext_tiny_notop.h5 (ImageNet; normalisation "
    "inside the network: give it 0-255 pixels)", settings={"scale": "none"},
    pool=({"type": "GlobalAveragePooling2D", "name": "avg_pool"},
          {"type": "LayerNormalization", "name": "layer_normalization", "epsilon": 1e-6}),
    top=({"type": "GlobalAveragePooling2D", "name": "convnext_tiny_head_gap"},
         {"type": "LayerNormalization", "name": "convnext_tiny_head_layernorm", "epsilon": 1e-6},
         {"type": "Dense", "name": "convnext_tiny_head_dense", "units": 1000, "activation": "softmax"})))


# ----------------------------------------------------------------------------- a small ResNet

def resnet_small(shape: tuple, blocks: float | None, pretrained: bool) -> list:
    """He et al.'s CIFAR ResNet (6n + 2 layers; n = 3 is ResNet-20): a 16-filter stem, three
    stages of n basic blocks at 16, 32 and 64 filters (stride 2 into the second and third, a 1x1
    projection on the shortcut there), batch norm after every convolution. Names follow Keras'
    ResNet (conv2_block1_1_conv, ...)."""
    n = 3 if blocks is None else int(blocks)
    layers = [{"type": "Conv2D", "name": "conv1_conv", "filters": 16, "kernel_size": 3, "padding": "same",
               "use_bias": False}, {"type": "BatchNormalization", "name": "conv1_bn"},
              {"type": "ReLU", "name": "conv1_relu"}]
    last, channels = "conv1_relu", 16
    for stage, filters in enumerate((16, 32, 64), start=2):
        for b in range(1, n + 1):
            p = f"conv{stage}_block{b}_"
            stride = 2 if b == 1 and stage > 2 else 1
            shortcut = last
            if stride != 1 or channels != filters:
                layers += [{"type": "Conv2D", "name": f"{p}0_conv", "filters": filters, "kernel_size": 1,
                            "strides": stride, "use_bias": False, "inputs": last},
                           {"type": "BatchNormalization", "name": f"{p}0_bn"}]
                shortcut = f"{p}0_bn"
            layers += [{"type": "Conv2D", "name": f"{p}1_conv", "filters": filters, "kernel_size": 3,
                        "strides": stride, "padding": "same", "use_bias": False, "inputs": last},
                       {"type": "BatchNormalization", "name": f"{p}1_bn"}, {"type": "ReLU", "name": f"{p}1_relu"},
                       {"type": "Conv2D", "name": f"{p}2_conv", "filters": filters, "kernel_size": 3,
                        "padding": "same", "use_bias": False}, {"type": "BatchNormalization", "name": f"{p}2_bn"},
                       {"type": "Add", "name": f"{p}add", "inputs": [shortcut, f"{p}2_bn"]},
                       {"type": "ReLU", "name": f"{p}out"}]
            last, channels = f"{p}out", filters
    return layers


register_backbone(Backbone(
    "resnet_small", "a CIFAR-style ResNet (6n+2 layers, 16/32/64 filters, residual Adds); WIDTH is n, blocks "
    "per stage (3: ResNet-20)", resnet_small, widths=(3, 1, 2, 5, 7, 9), min_size=8,
    weights="none published: train it, or start from a run of it with --init-from"))


# ----------------------------------------------------------------------------- use

def parse_backbone(text: str) -> tuple[Backbone, float | None]:
    """``NAME`` or ``NAME:WIDTH`` -> the backbone and its width (None: its default)."""
    name, _, width = str(text).partition(":")
    if name not in BACKBONES:
        close = difflib.get_close_matches(name, list(BACKBONES), 1)
        raise SpecError(f"unknown backbone '{name}'", "--backbone",
                        (f"did you mean {close[0]}? " if close else "") + f"use one of {', '.join(BACKBONES)} "
                        "(cnnlab backbones lists them)")
    b = BACKBONES[name]
    if not width:
        return b, None
    try:
        value = float(width)
    except ValueError:
        value = None
    if value not in b.widths:
        raise SpecError(f"width {width!r} is not one {name} takes", "--backbone",
                        f"use {name}:W with W one of {', '.join(f'{v:g}' for v in b.widths)}")
    return b, value


def backbone_spec(text: str, input_shape: tuple, num_classes: int, pretrained: bool | str = False,
                  include_top: bool = False) -> dict:
    """The backbone for ``input_shape`` (H, W, C), then a new head for ``num_classes``;
    ``pretrained``: weights will be loaded into it (--weights; "imagenet": Keras' ImageNet file,
    after which EfficientNet rescales as Keras does for weights="imagenet"). ``include_top``: Keras' own top
    instead (its 1000 ImageNet classes; ``num_classes`` is not used)."""
    b, width = parse_backbone(text)
    h, w = input_shape[0], input_shape[1]
    if min(h, w) < b.min_size:
        raise SpecError(f"{b.name} needs images of at least {b.min_size}x{b.min_size}, got {h}x{w}", "--backbone",
                        f"use --image-size {max(b.min_size, 96)} {max(b.min_size, 96)}")
    shape = list(input_shape) if len(input_shape) == 3 else [h, w, 1]
    body = b.build(tuple(shape), width, pretrained)
    suffix = f"_{width:g}" if width is not None else ""
    if include_top:
        if not b.top:
            raise SpecError(f"{b.name} has no ImageNet classifier", "imagenet:NAME",
                            f"use one of {', '.join(n for n, x in BACKBONES.items() if x.top)}")
        return {"name": f"{b.name}{suffix}_imagenet", "layers": [{"type": "Input", "shape": shape}, *body,
                                                                 *[dict(t) for t in b.top]]}
    head = ([{"type": "Dense", "name": "predictions", "units": 1, "activation": "sigmoid"}] if num_classes == 2
            else [{"type": "Dense", "name": "predictions", "units": num_classes, "activation": "softmax"}])
    return {"name": f"{b.name}{suffix}", "layers": [
        {"type": "Input", "shape": shape}, *body,
        *[dict(t) for t in b.pool], {"type": "Dropout", "name": "top_dropout", "rate": 0.2}, *head]}


def feature_layer(spec) -> int:
    """The index of the layer whose output the head reads (a backbone's pooled features), over
    Dropouts, which pass it on unchanged at prediction time."""
    names = [layer.name for layer in spec.layers]
    head = spec.layers[-1]
    i = names.index(head.inputs[0]) if head.inputs else len(names) - 2
    while i > 0 and spec.layers[i].type == "Dropout":  # the same values at prediction time
        i = names.index(spec.layers[i].inputs[0]) if spec.layers[i].inputs else i - 1
    if i < 0:
        raise SpecError("the model has no hidden layer to take features from", spec.name,
                        "give a run with at least one layer before its output")
    return i
