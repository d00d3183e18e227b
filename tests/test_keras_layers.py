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
from cnnlab.models.kerasfiles import torch_state  # noqa: E402

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
    ([10, 8, 3], [  # EfficientNet's and ConvNeXt's kinds
        {"type": "Rescaling", "scale": [0.5, 1.0, 2.0], "offset": 0.25},
        {"type": "Normalization"},
        {"type": "Normalization", "mean": [1.0, 2.0, 3.0], "variance": [4.0, 1.0, 0.25]},
        {"type": "Conv2D", "filters": 5, "kernel_size": 3, "groups": 1},
        {"type": "Dropout", "rate": 0.1, "noise_shape": [None, 1, 1, 1]},
        {"type": "LayerScale", "init_values": 1e-6, "projection_dim": 5},
        {"type": "Dense", "units": 4}, {"type": "GlobalAveragePooling2D"},
        {"type": "Dense", "units": 3, "activation": "softmax"}]),
]


def keras_class(name: str):
    from keras.src.applications.convnext import LayerScale

    return getattr(keras.layers, name, None) or {"LayerScale": LayerScale}[name]


def keras_model(shape, layers):
    return keras.Sequential([keras.Input(tuple(shape))] + [
        keras_class(layer["type"])(**{k: v for k, v in layer.items() if k != "type"}) for layer in layers])


@pytest.mark.parametrize("shape,layers", SPECS)
def test_shapes_and_counts_equal_keras(shape, layers):
    ours = parse_spec({"input_shape": shape, "layers": layers})
    theirs = keras_model(shape, layers)
    for mine, k in zip(ours.layers, theirs.layers):
        assert tuple(mine.output_shape) == tuple(k.output.shape[1:]), mine.name
        assert mine.params == k.count_params(), mine.name
    assert ours.total_params == theirs.count_params()
    model = build_module(ours).eval()  # the torch build has the same shapes and counts
    assert sum(v.numel() for k, v in model.state_dict().items()  # with Normalization's statistics
               if not k.endswith("num_batches_tracked")) == ours.total_params
    h, w, c = shape
    outs = model.features(torch.zeros(2, c, h, w))
    for mine, out in zip(ours.layers, outs):
        got = tuple(out.shape[1:]) if out.dim() == 2 else (out.shape[2], out.shape[3], out.shape[1])
        assert got == tuple(mine.output_shape), mine.name


def layer_output_agrees(layers: list, shape: list, index: int, x: np.ndarray) -> None:
    """Layer ``index``'s output for ``x`` (N, H, W, C), built by cnnlab and by Keras, within 1e-5."""
    ours = build_module(parse_spec({"input_shape": shape, "layers": layers})).eval()
    theirs = keras_model(shape, layers)
    mine = ours.features(torch.from_numpy(x).permute(0, 3, 1, 2))[index].permute(0, 2, 3, 1).detach().numpy()
    sub = keras.Model(theirs.inputs, theirs.layers[index].output)
    np.testing.assert_allclose(mine, keras.ops.convert_to_numpy(sub(x)), atol=1e-5)


def test_weight_free_layers_compute_what_keras_computes():
    layers = [{"type": "ZeroPadding2D", "padding": [[2, 1], [0, 3]]},
              {"type": "ReLU", "negative_slope": 0.2, "threshold": 0.3, "max_value": 1.5},
              {"type": "LayerNormalization", "epsilon": 0.01}, {"type": "ReLU", "max_value": 6.0},
              {"type": "Flatten"}, {"type": "Dense", "units": 2}]
    shape = [5, 4, 3]
    layer_output_agrees(layers, shape, 3, np.random.default_rng(0).normal(0, 1.5, (4, *shape)).astype(np.float32))


def test_per_channel_rescaling_and_normalization_compute_what_keras_computes():
    layers = [{"type": "Rescaling", "scale": [0.5, 1.0, 2.0], "offset": [0.0, 0.5, -1.0]},
              {"type": "Normalization", "mean": [1.0, 2.0, 3.0], "variance": [4.0, 1.0, 0.25]},
              {"type": "Flatten"}, {"type": "Dense", "units": 2}]
    shape = [4, 3, 3]
    layer_output_agrees(layers, shape, 1, np.random.default_rng(1).normal(0, 3, (4, *shape)).astype(np.float32))


def test_noise_shape_drops_whole_images_in_training():
    model = build_module(parse_spec({"input_shape": [6, 6, 3], "layers": [
        {"type": "Dropout", "rate": 0.5, "noise_shape": [None, 1, 1, 1]}, {"type": "GlobalAveragePooling2D"},
        {"type": "Dense", "units": 2, "activation": "softmax"}]}))
    torch.manual_seed(0)
    out = model.train().features(torch.ones(64, 3, 6, 6))[0]
    per_image = out.flatten(1)
    assert set(per_image.unique().tolist()) == {0.0, 2.0}  # kept and scaled, or dropped
    assert (per_image == per_image[:, :1]).all()  # one draw per image
    assert 16 < int((per_image[:, 0] == 0).sum()) < 48
    assert torch.equal(model.eval().features(torch.ones(2, 3, 6, 6))[0], torch.ones(2, 3, 6, 6))


@pytest.mark.parametrize("layer,needle", [
    ({"type": "Rescaling", "scale": [1.0, 2.0]}, "one per channel: 3"),
    ({"type": "Normalization", "mean": [1.0, 2.0, 3.0]}, "give both mean and variance"),
    ({"type": "Normalization", "mean": [1, 2], "variance": [1, 2]}, "is not a number or 3 numbers"),
    ({"type": "Normalization", "invert": True}, "invert=true is not supported"),
    ({"type": "LayerScale", "init_values": 0.1, "projection_dim": 4}, "projection_dim=4 but the input has 3"),
    ({"type": "Dropout", "rate": 0.1, "noise_shape": [None, 1, 1]}, "noise_shape=.* does not fit"),
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


# ----------------------------------------------------------------------------- functional graphs

def keras_functional(spec: dict):
    """The same graph built with Keras' functional API (layer by layer, inputs by name)."""
    inp = spec["layers"][0]
    tensors = {inp.get("name", "input_layer"): keras.Input(tuple(inp["shape"]), name=inp.get("name"))}
    prev = list(tensors)[0]
    for layer in spec["layers"][1:]:
        args = {k: v for k, v in layer.items() if k not in ("type", "inputs")}
        made = getattr(keras.layers, layer["type"])(**args)
        ins = layer.get("inputs", [prev])
        ins = [ins] if isinstance(ins, str) else ins
        prev = made.name
        tensors[prev] = made([tensors[n] for n in ins] if len(ins) > 1 else tensors[ins[0]])
    return keras.Model(tensors[list(tensors)[0]], tensors[prev])


GRAPHS = [
    {"layers": [  # a residual block with a projection, a merge of three, a concat and a reshape
        {"type": "Input", "shape": [12, 12, 3], "name": "image"},
        {"type": "Conv2D", "name": "stem", "filters": 8, "kernel_size": 3, "padding": "same", "activation": "relu"},
        {"type": "DepthwiseConv2D", "name": "dw", "kernel_size": 3, "padding": "same"},
        {"type": "BatchNormalization", "name": "bn"},
        {"type": "Add", "name": "res", "inputs": ["stem", "bn"]},
        {"type": "Conv2D", "name": "proj", "filters": 8, "kernel_size": 1, "inputs": "image"},
        {"type": "Average", "name": "avg", "inputs": ["res", "proj", "stem"]},
        {"type": "Multiply", "name": "gate", "inputs": ["avg", "proj"]},
        {"type": "Subtract", "name": "diff", "inputs": ["gate", "stem"]},
        {"type": "Maximum", "name": "hi", "inputs": ["diff", "res"]},
        {"type": "Minimum", "name": "lo", "inputs": ["hi", "avg"]},
        {"type": "Concatenate", "name": "cat", "inputs": ["lo", "proj"]},
        {"type": "Reshape", "name": "rs", "target_shape": [6, 24, -1]},
        {"type": "SeparableConv2D", "filters": 4, "kernel_size": 3, "strides": 2},
        {"type": "GlobalAveragePooling2D"},
        {"type": "Dense", "units": 3, "activation": "softmax"}]},
    {"layers": [  # broadcasting at a merge (a squeeze-and-excite gate), Concatenate on the width
        {"type": "Input", "shape": [8, 6, 1]},
        {"type": "Conv2D", "name": "c", "filters": 4, "kernel_size": 3, "padding": "same"},
        {"type": "GlobalAveragePooling2D", "name": "squeeze"},
        {"type": "Dense", "name": "excite", "units": 4, "activation": "sigmoid"},
        {"type": "Reshape", "name": "gate", "target_shape": [1, 1, 4]},
        {"type": "Multiply", "name": "scaled", "inputs": ["c", "gate"]},
        {"type": "Concatenate", "axis": 2, "inputs": ["scaled", "c"]},
        {"type": "Flatten"},
        {"type": "Dense", "units": 2, "activation": "softmax"}]},
]


@pytest.mark.parametrize("spec", GRAPHS)
def test_graph_shapes_counts_and_outputs_equal_keras(spec):
    ours = parse_spec(spec)
    assert not ours.is_chain
    theirs = keras_functional(ours.to_dict())  # every layer named (Keras' counters are per process)
    by_name = {layer.name: layer for layer in theirs.layers}
    for mine in ours.layers:
        k = by_name[mine.name]
        assert tuple(mine.output_shape) == tuple(k.output.shape[1:]), mine.name
        assert mine.params == k.count_params(), mine.name
    assert ours.total_params == theirs.count_params()
    # the same weights give the same outputs: Keras' weights copied into the torch build
    model = build_module(ours).eval()
    weights = {mine.name: [keras.ops.convert_to_numpy(w) for w in by_name[mine.name].weights]
               for mine in ours.layers}
    model.load_state_dict(torch_state(ours, model.state_dict(), weights, "keras"))
    h, w, c = ours.input_shape
    x = np.random.default_rng(1).normal(0, 1, (3, h, w, c)).astype(np.float32)
    with torch.no_grad():
        mine = model.probabilities(model(torch.from_numpy(x).permute(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(mine, keras.ops.convert_to_numpy(theirs(x)), atol=1e-5)


def _graph(*layers, shape=(8, 8, 3)):
    return {"layers": [{"type": "Input", "shape": list(shape)}, *layers]}


HEAD = [{"type": "GlobalAveragePooling2D"}, {"type": "Dense", "units": 2, "activation": "softmax"}]


@pytest.mark.parametrize("spec,needle,where", [
    (_graph({"type": "Conv2D", "name": "a", "filters": 4, "kernel_size": 1, "inputs": "b"},
            {"type": "Conv2D", "name": "b", "filters": 4, "kernel_size": 1, "inputs": "a"}, *HEAD),
     "the layers a, b form a cycle", "layer 1 (Conv2D)"),
    (_graph({"type": "Conv2D", "name": "a", "filters": 4, "kernel_size": 1},
            {"type": "Add", "inputs": ["a", "b"]}, *HEAD),
     "input 'b' is not a layer of this model", "layer 2 (Add)"),
    (_graph({"type": "Conv2D", "name": "a", "filters": 4, "kernel_size": 1},
            {"type": "Conv2D", "name": "b", "filters": 5, "kernel_size": 1, "inputs": "input_layer"},
            {"type": "Add", "inputs": ["a", "b"]}, *HEAD),
     r"Add needs inputs of one shape but gets \(8, 8, 4\) and \(8, 8, 5\)", "layer 3 (Add)"),
    (_graph({"type": "Conv2D", "name": "a", "filters": 4, "kernel_size": 1},
            {"type": "Conv2D", "name": "b", "filters": 4, "kernel_size": 1, "inputs": "input_layer"},
            {"type": "Conv2D", "filters": 4, "kernel_size": 1, "inputs": "a"}, *HEAD),
     "the output of layer 'b' is not used", "layer 2 (Conv2D)"),
    (_graph({"type": "Conv2D", "name": "a", "filters": 4, "kernel_size": 1},
            {"type": "Add", "inputs": ["a"]}, *HEAD),
     "Add merges two or more inputs but gets 1", "layer 2 (Add)"),
    (_graph({"type": "Conv2D", "name": "a", "filters": 4, "kernel_size": 1},
            {"type": "Conv2D", "filters": 4, "kernel_size": 1, "inputs": ["a", "input_layer"]}, *HEAD),
     "Conv2D takes one input but gets 2", "layer 2 (Conv2D)"),
    (_graph({"type": "Conv2D", "name": "a", "filters": 4, "kernel_size": 1},
            {"type": "MaxPooling2D", "name": "p"},
            {"type": "Concatenate", "inputs": ["a", "p"]}, *HEAD),
     "Concatenate on axis -1 needs the other axes equal", "layer 3 (Concatenate)"),
    (_graph({"type": "Reshape", "target_shape": [5, -1, 3]}, *HEAD),
     r"target_shape \[5, -1, 3\] does not divide", "layer 1 (Reshape)"),
    (_graph({"type": "Conv2D", "filters": 4, "kernel_size": 1, "inputs": "input_layr"}, *HEAD),
     "did you mean input_layer", "layer 1 (Conv2D)"),
])
def test_invalid_graphs_are_one_line_errors_naming_the_layer(spec, needle, where):
    from cnnlab.errors import SpecError

    with pytest.raises(SpecError, match=needle) as e:
        parse_spec(spec)
    line = e.value.line()
    assert where in line and "\n" not in line


def test_a_chain_written_as_a_graph_is_a_chain_and_round_trips():
    spec = parse_spec(_graph({"type": "Conv2D", "filters": 4, "kernel_size": 1, "inputs": "input_layer"}, *HEAD))
    assert spec.is_chain and "Connected to" not in spec.summary()
    graph = parse_spec(GRAPHS[0])
    again = parse_spec(graph.to_dict())
    assert again.summary() == graph.summary() and [l.inputs for l in again.layers] == [l.inputs for l in graph.layers]
