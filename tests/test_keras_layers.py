"""The spec vocabulary is Keras': each layer kind built in Keras 3 (torch backend) has the output
shape and parameter count cnnlab infers, and the weight-free ones compute the same numbers."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from cnnlab.models import build_module, parse_spec  # noqa: E402

SPECS = [
    ([12, 12, 3], [
        {"type": "ZeroPadding2D", "padding": [[1, 0], [0, 2]]},
        {"type": "DepthwiseConv2D", "kernel_size": 3, "depth_multiplier": 2, "strides": 2, "padding": "same"},
        {"type": "ReLU", "max_value": 6.0},
        {"type": "SeparableConv2D", "filters": 8, "kernel_size": 3, "padding": "same", "depth_multiplier": 2},
        {"type": "Conv2D", "filters": 4, "kernel_size": 3, "groups": 2, "use_bias": False},
        {"type": "LayerNormalization"},
        {"type": "SpatialDropout2D", "rate": 0.2},
        {"type": "ZeroPadding2D", "padding": 2},
        {"type": "DepthwiseConv2D", "kernel_size": [3, 2], "dilation_rate": 2, "use_bias": False},
        {"type": "SeparableConv2D", "filters": 5, "kernel_size": 2, "strides": 2, "activation": "relu"},
        {"type": "GlobalAveragePooling2D"},
        {"type": "LayerNormalization", "center": False},
        {"type": "Dense", "units": 3, "activation": "softmax"}]),
    ([9, 7, 1], [
        {"type": "ZeroPadding2D", "padding": [1, 3]},
        {"type": "ReLU", "negative_slope": 0.1, "threshold": 0.5},
        {"type": "Conv2D", "filters": 6, "kernel_size": 3, "padding": "same"},
        {"type": "Conv2D", "filters": 6, "kernel_size": 1, "groups": 3},
        {"type": "Flatten"}, {"type": "Dense", "units": 4, "activation": "softmax"}]),
]


def keras_model(shape, layers):
    return keras.Sequential([keras.Input(tuple(shape))] + [
        getattr(keras.layers, layer["type"])(**{k: v for k, v in layer.items() if k != "type"})
        for layer in layers])


@pytest.mark.parametrize("shape,layers", SPECS)
def test_shapes_and_counts_equal_keras(shape, layers):
    ours = parse_spec({"input_shape": shape, "layers": layers})
    theirs = keras_model(shape, layers)
    for mine, k in zip(ours.layers, theirs.layers):
        assert tuple(mine.output_shape) == tuple(k.output.shape[1:]), mine.name
        assert mine.params == k.count_params(), mine.name
    assert ours.total_params == theirs.count_params()
    model = build_module(ours).eval()  # the torch build has the same shapes and counts
    assert sum(p.numel() for p in model.parameters()) == ours.total_params
    h, w, c = shape
    outs = model.features(torch.zeros(2, c, h, w))
    for mine, out in zip(ours.layers, outs):
        got = tuple(out.shape[1:]) if out.dim() == 2 else (out.shape[2], out.shape[3], out.shape[1])
        assert got == tuple(mine.output_shape), mine.name


def test_weight_free_layers_compute_what_keras_computes():
    layers = [{"type": "ZeroPadding2D", "padding": [[2, 1], [0, 3]]},
              {"type": "ReLU", "negative_slope": 0.2, "threshold": 0.3, "max_value": 1.5},
              {"type": "LayerNormalization", "epsilon": 0.01}, {"type": "ReLU", "max_value": 6.0},
              {"type": "Flatten"}, {"type": "Dense", "units": 2}]
    shape = [5, 4, 3]
    ours = build_module(parse_spec({"input_shape": shape, "layers": layers})).eval()
    theirs = keras_model(shape, layers)
    x = np.random.default_rng(0).normal(0, 1.5, (4, *shape)).astype(np.float32)
    mine = ours.features(torch.from_numpy(x).permute(0, 3, 1, 2))[3].permute(0, 2, 3, 1).detach().numpy()
    sub = keras.Model(theirs.inputs, theirs.layers[3].output)
    np.testing.assert_allclose(mine, keras.ops.convert_to_numpy(sub(x)), atol=1e-5)


@pytest.mark.parametrize("layer,needle", [
    ({"type": "Conv2D", "filters": 4, "kernel_size": 1, "groups": 3}, "groups=3 does not divide"),  # 4 filters
    ({"type": "DepthwiseConv2D", "kernel_size": 3, "depth_multiplier": 0}, "depth_multiplier=0"),
    ({"type": "SeparableConv2D", "filters": 0, "kernel_size": 3}, "filters=0"),
    ({"type": "ZeroPadding2D", "padding": "x"}, "padding='x' is not a padding"),
    ({"type": "ReLU", "max_value": -1}, "max_value=-1"),
    ({"type": "ReLU", "threshold": -1}, "threshold=-1"),
    ({"type": "SpatialDropout2D", "rate": 1.5}, "rate=1.5"),
    ({"type": "LayerNormalization", "epsilon": 0}, "epsilon=0"),
])
def test_bad_arguments_of_the_new_kinds_are_one_line(layer, needle):
    from cnnlab.errors import SpecError

    spec = {"input_shape": [8, 8, 3], "layers": [layer, {"type": "Flatten"}, {"type": "Dense", "units": 2,
                                                                               "activation": "softmax"}]}
    with pytest.raises(SpecError, match=needle) as e:
        parse_spec(spec)
    assert "layer 0" in e.value.line() and "\n" not in e.value.line()
