import json

import pytest
import torch

from cnnlab.cli import main
from cnnlab.errors import SpecError
from cnnlab.models import build_module, check_fits, parse_spec, preset_spec
from cnnlab.models.build import patch_moments

# preset -> (total, non-trainable), as Keras prints them for the notebooks' models.
PRESET_TOTALS = {
    "fashion-cnn": (333_526, 0),
    "mnist-convnet": (93_322, 0),
    "deep-bn-cnn": (907_658, 768),
    "deep-mlp": (2_222_460, 0),
    "bn-mlp": (331_018, 896),
    "wide-cnn": (3_361_546, 0),
    "lenet": (61_706, 0),
    "small-convnet": (3_453_121, 0),
    # not a notebook model: 144 + 4,608 + 18,432 conv weights (no biases), 3 BatchNorms
    # (4 x 16 + 4 x 32 + 4 x 64, half of it moving statistics), Dense 576 -> 128 -> 10
    "fast": (98_778, 368),  # 224 BatchNorm statistics + the fixed 144-weight whitening layer
    # the same whitening, then conv weights 9,216 + 36,864 + 73,728 + 147,456, BatchNorms 16/64/64/128/128
    # (800 moving statistics), Dense 1,152 -> 256 -> 10
    "best": (566_746, 944),
}


@pytest.mark.parametrize("name", PRESET_TOTALS)
def test_preset_summary_totals_match_keras(name, capsys):
    assert main(["summary", name, "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    total, fixed = PRESET_TOTALS[name]
    assert s["total_params"] == total
    assert s["non_trainable_params"] == fixed
    assert s["trainable_params"] == total - fixed
    assert sum(layer["params"] for layer in s["layers"]) == total
    assert all(layer["output_shape"][0] is None for layer in s["layers"])


@pytest.mark.parametrize("name", PRESET_TOTALS)
def test_torch_module_matches_inferred_shapes_and_counts(name):
    spec = parse_spec(preset_spec(name))
    model = build_module(spec).eval()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    running = sum(b.numel() for n, b in model.named_buffers() if "running" in n)
    assert trainable == spec.trainable_params
    assert running + frozen == spec.non_trainable_params
    h, w = spec.input_shape[:2]
    c = spec.input_shape[2] if len(spec.input_shape) == 3 else 1
    x = torch.zeros(2, c, h, w)
    for info, out in zip(spec.layers, model.features(x)):
        shape = tuple(out.shape[1:]) if out.dim() == 2 else (out.shape[2], out.shape[3], out.shape[1])
        assert shape == info.output_shape, info.name


def test_summary_table_is_keras_style(capsys):
    assert main(["summary", "fashion-cnn"]) == 0
    out = capsys.readouterr().out
    assert "conv2d (Conv2D)" in out and "(None, 28, 28, 32)" in out
    assert "max_pooling2d_1 (MaxPooling2D)" in out and "(None, 7, 7, 64)" in out
    assert "Total params: 333,526" in out and "Non-trainable params: 0" in out


@pytest.mark.parametrize("h,w,k,s,pad", [(7, 9, 3, 2, "same"), (8, 8, 2, 1, "same"), (10, 7, 4, 3, "same"),
                                          (9, 9, 3, 2, "valid"), (5, 6, 2, 2, "same")])
def test_strided_and_same_padding_shapes_equal_keras(h, w, k, s, pad):
    # Keras: 'same' -> ceil(n / s); 'valid' -> floor((n - k) / s) + 1.
    spec = parse_spec({"input_shape": [h, w, 1], "layers": [
        {"type": "Conv2D", "filters": 4, "kernel_size": k, "strides": s, "padding": pad},
        {"type": "MaxPooling2D", "pool_size": 2, "padding": "same"},
        {"type": "AveragePooling2D", "pool_size": 2, "strides": 1, "padding": "same"},
        {"type": "GlobalAveragePooling2D"}, {"type": "Dense", "units": 3, "activation": "softmax"}]})
    import math
    oh = math.ceil(h / s) if pad == "same" else (h - k) // s + 1
    ow = math.ceil(w / s) if pad == "same" else (w - k) // s + 1
    assert spec.layers[0].output_shape == (oh, ow, 4)
    assert spec.layers[1].output_shape == (math.ceil(oh / 2), math.ceil(ow / 2), 4)
    model = build_module(spec).eval()
    outs = model.features(torch.randn(2, 1, h, w))
    assert tuple(outs[0].shape) == (2, 4, oh, ow)
    assert tuple(outs[1].shape) == (2, 4, math.ceil(oh / 2), math.ceil(ow / 2))
    assert tuple(outs[2].shape) == tuple(outs[1].shape)
    assert torch.isfinite(outs[-1]).all()


def test_same_average_pooling_ignores_padding_like_keras():
    spec = parse_spec({"input_shape": [3, 3, 1], "layers": [
        {"type": "AveragePooling2D", "pool_size": 2, "padding": "same"},
        {"type": "Flatten"}, {"type": "Dense", "units": 2, "activation": "softmax"}]})
    model = build_module(spec).eval()
    x = torch.arange(9.0).view(1, 1, 3, 3)
    pooled = model.features(x)[0][0, 0]
    # Windows [0,1,3,4] [2,5] [6,7] [8]: padded cells are not counted.
    assert pooled.tolist() == [[2.0, 3.5], [6.5, 8.0]]


@pytest.mark.parametrize("act,pool_type,padding", [
    ("relu", "MaxPooling2D", "valid"), ("leaky_relu", "MaxPooling2D", "same"),
    ("gelu", "MaxPooling2D", "valid"), ("relu", "AveragePooling2D", "valid")])
def test_forward_equals_the_spec_order_bit_for_bit(act, pool_type, padding):
    """The engine may run a ReLU after the max-pooling that follows it; outputs and gradients
    must stay exactly those of the layers in the spec's order, whatever the activation or pool."""
    spec = parse_spec({"input_shape": [7, 7, 3], "layers": [
        {"type": "Conv2D", "filters": 4, "kernel_size": 3, "padding": "same", "activation": act},
        {"type": pool_type, "pool_size": 2, "padding": padding}, {"type": "Flatten"},
        {"type": "Dense", "units": 3, "activation": "softmax"}]})
    torch.manual_seed(0)
    model = build_module(spec)
    x = torch.randn(5, 3, 7, 7)
    x[0] = -1.0  # whole pooling windows below zero

    def run(forward):
        model.zero_grad()
        out = forward(x)
        out.square().sum().backward()
        return out, [p.grad.clone() for p in model.parameters()]

    def spec_order(t):
        for block in model.blocks:
            t = block(t)
        return t

    (a, ga), (b, gb) = run(model), run(spec_order)
    assert torch.equal(a, b) and all(torch.equal(g, h) for g, h in zip(ga, gb))
    assert torch.equal(model.features(x)[-1], a)


def test_batchnorm_counts_moving_stats_as_non_trainable():
    spec = parse_spec({"input_shape": [4, 4, 3], "layers": [
        {"type": "BatchNormalization"}, {"type": "Flatten"}, {"type": "Dense", "units": 2, "activation": "softmax"}]})
    assert spec.layers[0].trainable == 6 and spec.layers[0].non_trainable == 6


def test_frozen_layers_count_as_non_trainable_like_keras():
    spec = parse_spec({"input_shape": [8, 8, 1], "layers": [
        {"type": "Conv2D", "filters": 4, "kernel_size": 3, "trainable": False}, {"type": "Flatten"},
        {"type": "Dense", "units": 3, "activation": "softmax", "trainable": False}]})
    assert spec.trainable_params == 0 and spec.non_trainable_params == 40 + 435
    model = build_module(spec)
    assert not any(p.requires_grad for p in model.parameters())


def test_he_uniform_kernels_have_keras_bounds():
    spec = parse_spec({"input_shape": [8, 8, 3], "layers": [
        {"type": "Conv2D", "filters": 64, "kernel_size": 3, "kernel_initializer": "he_uniform"}, {"type": "Flatten"},
        {"type": "Dense", "units": 3, "activation": "softmax"}]})
    w = build_module(spec).blocks[0][0].weight
    bound = (6 / (3 * 3 * 3)) ** 0.5  # Keras: U(-sqrt(6 / fan_in), sqrt(6 / fan_in))
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound


def test_patch_whitening_decorrelates_the_first_layer():
    spec = parse_spec({"input_shape": [12, 12, 1], "layers": [
        {"type": "Conv2D", "filters": 8, "kernel_size": 2, "use_bias": True,
         "kernel_initializer": "patch_whitening", "trainable": False},
        {"type": "Flatten"}, {"type": "Dense", "units": 3, "activation": "softmax"}]})
    model = build_module(spec)
    g = torch.Generator().manual_seed(0)
    # strongly correlated neighbouring pixels with an offset, as in real images
    x = torch.rand(400, 1, 13, 13, generator=g).cumsum(2).cumsum(3)[:, :, 1:, 1:] / 20 + 3
    model.init_from_data(x, eps=0.0)
    out = model.blocks[0](x)[:, :4].permute(0, 2, 3, 1).reshape(-1, 4).double()
    assert out.mean(0).abs().max() < 1e-3  # the bias centres the responses
    cov = out.T @ out / len(out)
    assert torch.allclose(cov, torch.eye(4, dtype=torch.float64), atol=1e-3)
    w = model.blocks[0][0].weight
    assert torch.equal(w[4:], -w[:4])  # +/- pairs
    # large images are summed in chunks: the same moments as in one pass
    one, chunked = patch_moments(x, (2, 2), (1, 1)), patch_moments(x, (2, 2), (1, 1), budget=1000)
    assert all(torch.allclose(a, b, rtol=1e-9, atol=1e-12) for a, b in zip(one, chunked))
    glorot = build_module(spec)
    before = glorot.blocks[0][0].weight.clone()
    glorot.init_from_data(torch.full((5, 1, 12, 12), 0.5))  # blank images: nothing to whiten
    assert torch.equal(glorot.blocks[0][0].weight, before)


def test_flat_input_and_aliases():
    spec = parse_spec({"input_shape": [28, 28], "layers": [
        {"type": "Flatten"}, {"type": "Dense", "units": 10, "activation": "softmax"}]})
    assert spec.total_params == 7850
    spec = parse_spec({"input_shape": [8, 8, 1], "layers": [
        {"type": "MaxPool2D"}, {"type": "GlobalMaxPool2D"}, {"type": "Dense", "units": 2, "activation": "softmax"}]})
    assert spec.layers[0].name == "max_pooling2d"


def test_binary_head():
    spec = parse_spec(preset_spec("small-convnet"))
    assert spec.head == "binary" and spec.num_classes == 2
    multi = parse_spec(preset_spec("small-convnet", (150, 150, 3), 5))
    assert multi.head == "multiclass" and multi.output_units == 5


@pytest.mark.parametrize("layers,needle", [
    ([{"type": "Conv3D", "filters": 3}], "unknown layer type 'Conv3D'"),
    ([{"type": "Conv2D", "filters": 3, "kernel_size": 3, "kernal": 2}], "unknown argument 'kernal'"),
    ([{"type": "Conv2D", "kernel_size": 3}], "missing argument 'filters'"),
    ([{"type": "Conv2D", "filters": 3, "kernel_size": 9}], "output of size 0x0"),
    ([{"type": "Conv2D", "filters": 3, "kernel_size": 3, "padding": "full"}], "padding='full'"),
    ([{"type": "Conv2D", "filters": 3, "kernel_size": 3, "activation": "rleu"}], "did you mean 'relu'"),
    ([{"type": "Dropout", "rate": 1.5}], "rate=1.5"),
    ([{"type": "Conv2D", "filters": 3, "kernel_size": 3, "kernel_initializer": "orthogonal"}],
     "kernel_initializer='orthogonal' is unknown for Conv2D"),
    ([{"type": "Conv2D", "filters": 3, "kernel_size": 3, "kernel_initializer": "patch_whitening"}],
     "even number of filters from 2 to 18"),
    ([{"type": "Conv2D", "filters": 20, "kernel_size": 3, "kernel_initializer": "patch_whitening"}],
     "at most 9 components"),
    ([{"type": "Conv2D", "filters": 4, "kernel_size": 3},
      {"type": "Conv2D", "filters": 4, "kernel_size": 3, "kernel_initializer": "patch_whitening"}],
     "use it on the first layer only"),
    ([{"type": "Flatten"}, {"type": "Dense", "units": 3, "kernel_initializer": "patch_whitening"}],
     "unknown for Dense"),
    ([{"type": "Conv2D", "filters": 3, "kernel_size": 3, "trainable": "no"}], "trainable='no' is not true/false"),
    ([{"type": "Flatten"}, {"type": "Dense", "units": 1}], "needs activation sigmoid"),
])
def test_invalid_specs_name_layer_argument_and_value(layers, needle):
    layers = layers + ([{"type": "Flatten"}, {"type": "Dense", "units": 3, "activation": "softmax"}]
                       if layers[-1]["type"] not in ("Dense",) else [])
    with pytest.raises(SpecError) as e:
        parse_spec({"input_shape": [8, 8, 1], "layers": layers})
    msg = e.value.line()
    assert needle in msg
    assert "layer 0" in msg or "layer 1" in msg


def test_spec_that_does_not_fit_the_data():
    spec = parse_spec(preset_spec("fashion-cnn"))
    with pytest.raises(SpecError, match="units but the data has 3 classes.*units: 3"):
        check_fits(spec, (28, 28, 1), 3)
    with pytest.raises(SpecError, match="does not match the data's images"):
        check_fits(spec, (28, 28, 3), 10)


def test_spec_round_trips_through_to_dict():
    spec = parse_spec(preset_spec("deep-bn-cnn"))
    again = parse_spec(json.loads(json.dumps(spec.to_dict())))
    assert again.summary_dict() == spec.summary_dict()


def test_input_layer_first_and_rescaling():
    """The seeds' functional code starts with Input(shape=...); Keras' Rescaling layer too."""
    import torch

    from cnnlab.errors import SpecError
    from cnnlab.models import build_module, parse_spec

    layers = [{"type": "Rescaling", "scale": 0.5, "offset": 1.0},
              {"type": "Conv2D", "filters": 4, "kernel_size": 3}, {"type": "Flatten"},
              {"type": "Dense", "units": 3, "activation": "softmax"}]
    a = parse_spec({"layers": [{"type": "Input", "shape": [8, 8, 1]}] + layers})
    b = parse_spec({"input_shape": [8, 8, 1], "layers": layers})
    assert a.summary() == b.summary() and a.total_params == 4 * 9 + 4 + 6 * 6 * 4 * 3 + 3
    assert a.layers[0].type == "Rescaling" and a.layers[0].params == 0
    model = build_module(a)
    x = torch.ones(1, 1, 8, 8)
    assert torch.equal(model.blocks[0](x), torch.full_like(x, 1.5))
    with pytest.raises(SpecError, match="differ"):
        parse_spec({"input_shape": [9, 9, 1], "layers": [{"type": "Input", "shape": [8, 8, 1]}] + layers})
    with pytest.raises(SpecError, match="layer 2 \\(Conv2D\\)"):  # numbered as written, Input is layer 0
        parse_spec({"layers": [{"type": "Input", "shape": [8, 8, 1]}, layers[0], dict(layers[1], filters=-1)]
                    + layers[2:]})
    with pytest.raises(SpecError, match="scale='x'"):
        parse_spec({"input_shape": [8, 8, 1], "layers": [dict(layers[0], scale="x")] + layers[1:]})


def test_flops_per_image_are_the_notebook_cnns_multiply_adds(capsys):
    """fashion-cnn: conv 28x28x32x(3x3x1), conv 14x14x64x(3x3x32), Dense 3136x100, 100x10; 2 FLOPs each."""
    from cnnlab.models.flops import count_flops

    macs = 28 * 28 * 32 * 9 + 14 * 14 * 64 * 9 * 32 + 3136 * 100 + 100 * 10
    flops = count_flops(parse_spec(preset_spec("fashion-cnn")))
    assert flops.forward == 2 * macs
    # backward: input gradients for all but the first layer, weight gradients for all
    assert flops.train == 3 * flops.forward - 2 * 28 * 28 * 32 * 9
    assert flops.per_run(60_000, 2, 10_000, 2) == flops.train * 120_000 + flops.forward * 20_000
    # a frozen layer needs no weight gradient: the fast preset's whitening layer
    fast = count_flops(parse_spec(preset_spec("fast")))
    assert fast.train < 3 * fast.forward - 2 * 28 * 28 * 16 * 9
    assert main(["summary", "fashion-cnn", "--flops"]) == 0
    assert f"FLOPs per image: {2 * macs:,} predicting" in capsys.readouterr().out
    assert main(["summary", "deep-mlp", "--flops", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["flops_per_image"]["forward"] == 2 * (
        784 * 1000 + 1000 * 800 + 800 * 500 + 500 * 300 + 300 * 200 + 200 * 100 + 100 * 50 + 50 * 10)
