"""Backbones (issue 18): MobileNetV2 and a small ResNet in cnnlab's spec vocabulary, with Keras'
parameter counts and layer names, and Keras Applications-style weights files loading by name."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from cnnlab.cli import main  # noqa: E402
from cnnlab.errors import SpecError  # noqa: E402
from cnnlab.models import build_module, parse_spec  # noqa: E402
from cnnlab.models.backbones import backbone_spec  # noqa: E402
from conftest import bars, one_error_line  # noqa: E402
from test_keras_layers import keras_functional  # noqa: E402


@pytest.mark.parametrize("alpha,size", [(0.35, 32), (0.5, 75), (0.75, 33), (1.0, 96)])
def test_mobilenet_v2_equals_keras_applications(alpha, size):
    ours = parse_spec(backbone_spec(f"mobilenet_v2:{alpha}", (size, size, 3), 5, pretrained=True))
    theirs = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=alpha, include_top=False, weights=None)
    mine = {layer.name: layer for layer in ours.layers}
    for k in theirs.layers[1:]:  # every Keras layer, by its name, with its shape and count
        assert tuple(mine[k.name].output_shape) == tuple(k.output.shape[1:]), k.name
        assert mine[k.name].params == k.count_params(), k.name
    assert sum(layer.params for layer in ours.layers[:-3]) == theirs.count_params()
    by_name = {k.name: k for k in theirs.layers}
    assert all(layer.args["momentum"] == by_name[layer.name].momentum for layer in ours.layers
               if layer.type == "BatchNormalization")
    scratch = parse_spec(backbone_spec(f"mobilenet_v2:{alpha}", (size, size, 3), 5))  # from random weights
    assert {layer.args["momentum"] for layer in scratch.layers if layer.type == "BatchNormalization"} == {0.9}


def test_resnet_small_counts_equal_keras():
    spec = backbone_spec("resnet_small:2", (32, 32, 3), 10)
    ours = parse_spec(spec)
    theirs = keras_functional(ours.to_dict())
    assert ours.total_params == theirs.count_params() == 175_728 + 64 * 10 + 10
    assert sum(1 for layer in ours.layers if layer.type == "Add") == 6


def _applications_weights(model, path):
    """A weights-only HDF5 file laid out as Keras Applications' downloads are."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


def random_batchnorm(model, seed: int = 0):
    """The Keras model with random BatchNorm scales, offsets and statistics (a fresh one's are 1 and
    0, which would hide a statistic loaded into the wrong place)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.get_weights()[0].shape
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.uniform(-0.2, 0.2, c), rng.uniform(-0.3, 0.3, c),
                               rng.uniform(0.5, 1.5, c)])
    return model


@pytest.fixture
def mobilenet_file(tmp_path):
    keras.utils.set_random_seed(1)
    model = random_batchnorm(keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False,
                                                            weights=None))
    path = tmp_path / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    _applications_weights(model, path)
    return model, path


def loads_and_computes_what_keras_computes(kmodel, path) -> None:
    """The backbone with the weights file ``path`` loaded: every weighted layer, the same features."""
    from cnnlab.engine.progress import Progress
    from cnnlab.models.init import backbone_weights

    spec = parse_spec(backbone_spec("mobilenet_v2:0.35", (32, 32, 3), 4, pretrained=True))
    model = build_module(spec).eval()
    report = backbone_weights(model, spec, str(path), Progress(1, 1, True).message)
    assert len(report["loaded"]) == sum(1 for layer in kmodel.layers if layer.weights)
    x = np.random.default_rng(2).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        outs = model.features(torch.from_numpy(x).permute(0, 3, 1, 2))
    mine = outs[[layer.name for layer in spec.layers].index("out_relu")].permute(0, 2, 3, 1).numpy()
    theirs = keras.ops.convert_to_numpy(kmodel(x, training=False))
    assert np.abs(mine - theirs).max() <= 1e-5


def test_weights_file_loads_and_the_backbone_computes_what_keras_computes(mobilenet_file):
    loads_and_computes_what_keras_computes(*mobilenet_file)


def test_train_a_backbone_with_weights_and_the_finetune_recipe(mobilenet_file, tmp_path, capsys):
    _, path = mobilenet_file
    x, y = bars(8, size=32, channels=3)
    xt, yt = bars(4, size=32, channels=3, seed=1)
    np.savez(tmp_path / "b.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    assert main(["train", f"npz:{tmp_path / 'b.npz'}", "--backbone", "mobilenet_v2:0.35", "--weights", str(path),
                 "--recipe", "finetune", "--epochs", "2", "--head-epochs", "1", "--batch-size", "8",
                 "--runs-dir", str(tmp_path / "runs"), "--no-report", "--no-check"]) == 0
    err = capsys.readouterr().err
    assert "loaded 104 layers" in err and "fine-tuning: 1 epoch(s) of the new layers" in err
    (run,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["init_from"]["reinitialised"] == ["predictions"]
    assert json.loads((run / "preprocessing.json").read_text())["mode"] == "127.5"  # ImageNet's [-1, 1]


def test_a_weights_file_of_another_width_is_one_line(mobilenet_file, tmp_path, capsys):
    _, path = mobilenet_file
    x, y = bars(10, size=32, channels=3)
    np.savez(tmp_path / "b.npz", x_train=x, y_train=y)
    assert main(["train", f"npz:{tmp_path / 'b.npz'}", "--backbone", "mobilenet_v2:0.5", "--weights", str(path),
                 "--epochs", "1", "--runs-dir", str(tmp_path / "runs"), "--no-check", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and ("layer 'block_1_project' weight 0 has shape [1, 1, 48, 8] in the file, "
                                     "but this model's is [1, 1, 48, 16]") in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("value,needle", [("mobilenet", "did you mean mobilenet_v2"),
                                          ("mobilenet_v2:0.6", "use mobilenet_v2:W with W one of")])
def test_bad_backbones_are_one_line(value, needle):
    with pytest.raises(SpecError, match=needle):
        backbone_spec(value, (32, 32, 3), 3)


def test_backbones_lists_keras_counts(capsys):
    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    assert "mobilenet_v2:0.35" in out and "410,208" in out and "resnet_small:3" in out
    assert f"{'vgg16':<22}{14_714_688:>12,}" in out and f"{'resnet50':<22}{23_587_712:>12,}" in out  # Keras' counts


def test_a_keras_3_weights_file_of_the_backbone_loads(mobilenet_file, tmp_path, capsys):
    """model.save_weights('x.weights.h5') in Keras 3 keeps layers by position among their class, not
    by name: the backbone's own layer order names them."""
    kmodel, _ = mobilenet_file
    path = tmp_path / "mobilenet.weights.h5"
    kmodel.save_weights(str(path))
    loads_and_computes_what_keras_computes(kmodel, path)
    # another width: one line naming the layer and the shapes, never "another backbone" in general terms
    xs, ys = bars(10, size=32, channels=3)
    np.savez(tmp_path / "b.npz", x_train=xs, y_train=ys)
    assert main(["train", f"npz:{tmp_path / 'b.npz'}", "--backbone", "mobilenet_v2:0.5", "--weights", str(path),
                 "--epochs", "1", "--runs-dir", str(tmp_path / "runs"), "--no-check", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has shape" in err
    # a nested model (the backbone inside a Sequential with a head): what to save instead
    nested = keras.Sequential([kmodel, keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4)])
    nested.build((None, 32, 32, 3))
    nested.save_weights(str(tmp_path / "nested.weights.h5"))
    assert main(["train", f"npz:{tmp_path / 'b.npz'}", "--backbone", "mobilenet_v2:0.35", "--weights",
                 str(tmp_path / "nested.weights.h5"), "--epochs", "1", "--runs-dir", str(tmp_path / "runs"),
                 "--no-check", "--quiet"]) == 2
    assert "nested model" in capsys.readouterr().err


def test_unfreeze_from_a_block_trains_only_that_block_on_after_the_head(mobilenet_file, tmp_path, capsys):
    """Chollet's 'unfreeze the last block': --unfreeze-from block_16 keeps every layer before the
    block as loaded; the block trains in the second phase; one error line for a name that is not there."""
    import cnnlab
    from cnnlab.models.kerasfiles import read_weights

    _, path = mobilenet_file
    x, y = bars(8, size=32, channels=3)
    np.savez(tmp_path / "b.npz", x_train=x, y_train=y)
    args = ["train", f"npz:{tmp_path / 'b.npz'}", "--backbone", "mobilenet_v2:0.35", "--weights", str(path),
            "--recipe", "finetune", "--epochs", "2", "--head-epochs", "1", "--batch-size", "8", "--lr", "0.01",
            "--runs-dir", str(tmp_path / "runs"), "--no-report", "--no-check"]
    assert main(args + ["--unfreeze-from", "block_16"]) == 0
    err = capsys.readouterr().err
    assert "frozen: 142 layer(s): Conv1, bn_Conv1, Conv1_relu ... block_15_add" in err
    assert "then the layers from block_16 on at lr x 0.3" in err
    run = cnnlab.load_run(next((tmp_path / "runs").iterdir()))
    state = run.model.state_dict()
    keras_weights = read_weights(str(path), None)
    names = [layer.name for layer in run.spec.layers]
    kernel = state[f"blocks.{names.index('block_15_project')}.0.weight"].numpy()
    assert np.array_equal(kernel, np.transpose(keras_weights["block_15_project"][0], (3, 2, 0, 1)))  # as loaded
    moved = state[f"blocks.{names.index('block_16_project')}.0.weight"].numpy()
    assert not np.array_equal(moved, np.transpose(keras_weights["block_16_project"][0], (3, 2, 0, 1)))
    code = main(args + ["--unfreeze-from", "block_17"])
    one_error_line(code, capsys.readouterr().err, "no layer or block named 'block_17'")
    code = main(args + ["--unfreeze-from", "block_16", "--freeze-until", "out_relu"])
    one_error_line(code, capsys.readouterr().err, "both say where the frozen layers end")
