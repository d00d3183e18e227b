"""Keras in and out (issue 18): the committed fixture files (scripts/make_keras_fixtures.py) import
as runs that predict what Keras predicted; runs export to .keras files Keras 3 loads and that
predict what cnnlab predicts; import(export(run)) predicts identically."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cnnlab.cli import main
from cnnlab.exporting import export_keras
from cnnlab.importing import import_keras
from conftest import bars

FIXTURES = Path(__file__).parent / "fixtures" / "keras"
FILES = ["sequential_cnn.keras", "sequential_cnn.h5", "residual.keras", "batchnorm.h5", "binary.keras"]
EXPECTED = np.load(FIXTURES / "expected.npz")


def expected(fname: str) -> tuple[np.ndarray, np.ndarray]:
    key = fname.replace(".", "_")
    return EXPECTED[f"{key}_x"], EXPECTED[f"{key}_p"]


def as_keras_output(probs: np.ndarray, binary: bool) -> np.ndarray:
    return probs[:, 1:] if binary else probs


@pytest.mark.parametrize("fname", FILES)
def test_imported_fixture_predicts_what_keras_predicted(fname, tmp_path):
    run = import_keras(FIXTURES / fname, runs_dir=tmp_path, progress=lambda *_: None)
    x, p = expected(fname)
    got = as_keras_output(run.predict_proba(x), run.spec.head == "binary")
    assert np.abs(got - p).max() <= 1e-5
    assert (got.argmax(1) == p.argmax(1)).all() or run.spec.head == "binary"
    assert run.metrics["status"] == "imported" and run.state == "finished"
    # the scaling the notebook used: /255 unless the model starts with Rescaling
    assert run.preprocessing.mode == ("none" if fname == "residual.keras" else "255")


def test_keras_itself_reads_the_fixtures_the_same(tmp_path):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    for fname in FILES:
        model = keras.saving.load_model(FIXTURES / fname, compile=False)
        x, p = expected(fname)
        fed = x.astype(np.float32) / (1.0 if fname == "residual.keras" else 255.0)
        assert np.abs(keras.ops.convert_to_numpy(model(fed, training=False)) - p).max() <= 1e-6, fname


def _history(v) -> list[str]:
    """The layer names in Keras 3's inbound-node tensors, in order."""
    if isinstance(v, dict) and v.get("class_name") == "__keras_tensor__":
        return [v["config"]["keras_history"][0]]
    items = v.values() if isinstance(v, dict) else v if isinstance(v, list) else []
    return [n for x in items for n in _history(x)]


def keras2_config(config: dict) -> dict:
    """The same model config as Keras 2 (tf.keras) wrote it: batch_input_shape and nested-list nodes."""
    config = json.loads(json.dumps(config))
    for layer in config["config"]["layers"]:
        cfg = layer["config"]
        if "batch_shape" in cfg:
            cfg["batch_input_shape"] = cfg.pop("batch_shape")
        if layer.get("inbound_nodes"):
            layer["inbound_nodes"] = [[[n, 0, 0, {}] for n in _history(layer["inbound_nodes"])]]
    cfg = config["config"]
    for k in ("input_layers", "output_layers"):
        if k in cfg and isinstance(cfg[k][0], str):
            cfg[k] = [cfg[k]]
    return config


def test_a_keras_2_h5_file_imports_too(tmp_path):
    """tf.keras 2 wrote its HDF5 models with another config layout: rewrite a fixture into it."""
    import h5py

    with zipfile.ZipFile(FIXTURES / "residual.keras") as z:
        functional = json.loads(z.read("config.json"))
    # a legacy .h5 holding the residual (functional) model's weights, as Keras 2 laid them out
    from cnnlab.models.kerasfiles import read_keras

    kf = read_keras(FIXTURES / "residual.keras")
    path = tmp_path / "residual_keras2.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(keras2_config(functional))
        f.attrs["keras_version"] = "2.15.0"
        g = f.create_group("model_weights")
        names = [layer["config"]["name"] for layer in functional["config"]["layers"]]
        g.attrs["layer_names"] = np.array(names, dtype=h5py.string_dtype())
        for name in names:
            lg = g.create_group(name)
            wn = [f"{name}/w{i}:0" for i in range(len(kf.weights.get(name, [])))]
            lg.attrs["weight_names"] = np.array(wn, dtype=h5py.string_dtype())
            for n, a in zip(wn, kf.weights.get(name, [])):
                lg.create_dataset(n, data=a)
    run = import_keras(path, runs_dir=tmp_path / "runs", progress=lambda *_: None)
    x, p = expected("residual.keras")
    assert np.abs(run.predict_proba(x) - p).max() <= 1e-5
    assert {layer.name: layer.inputs for layer in run.spec.layers}["residual"] == ["re_lu", "sep"]


def test_import_with_data_then_every_command_works(tmp_path, capsys):
    """The notebook's checkpoint: import with its data, then evaluate, predict, report, export and
    fine-tune (--init-from) work on the run as on a trained one."""
    x, y = bars(20)
    xt, yt = bars(8, seed=3)
    np.savez(tmp_path / "b.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    (tmp_path / "names.txt").write_text("horizontal\nvertical\ndiagonal\n")
    data = f"npz:{tmp_path / 'b.npz'}"
    runs = tmp_path / "runs"
    assert main(["import-keras", str(FIXTURES / "sequential_cnn.keras"), "--data", data, "--class-names",
                 str(tmp_path / "names.txt"), "--name", "notebook", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "report written to" in out
    (run,) = runs.iterdir()
    assert (run / "report.html").is_file()
    assert main(["evaluate", str(run), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["n"] == len(yt) and ev["class_names"] == ["horizontal", "vertical", "diagonal"]
    xk, p = expected("sequential_cnn.keras")  # evaluate scores Keras' own predictions
    from cnnlab import load_run

    loaded = load_run(run)
    assert np.abs(loaded.predict_proba(xt) - _keras_probs(xt)).max() <= 1e-5
    assert abs(ev["accuracy"] - float((_keras_probs(xt).argmax(1) == yt).mean())) < 1e-9
    from PIL import Image

    Image.fromarray(xt[0, ..., 0]).save(tmp_path / "one.png")
    assert main(["predict", str(run), str(tmp_path / "one.png")]) == 0
    assert main(["export", str(run)]) == 0 if _has_onnx() else True
    capsys.readouterr()
    assert main(["train", data, "--model", str(run / "spec.json"), "--init-from", str(run), "--epochs", "1",
                 "--runs-dir", str(tmp_path / "tuned"), "--quiet", "--no-report",
                 "--class-names", str(tmp_path / "names.txt")]) == 0
    err = capsys.readouterr().err
    assert "error" not in err


def _keras_probs(x: np.ndarray) -> np.ndarray:
    """The fixture's Keras predictions for other images: from its stored arrays via Keras' math
    (numpy), so this test needs no Keras."""
    from cnnlab.models.kerasfiles import read_keras

    w = read_keras(FIXTURES / "sequential_cnn.keras").weights
    h = x.astype(np.float64) / 255.0

    def conv(h, k, b, same):
        kh, kw = k.shape[:2]
        if same:
            h = np.pad(h, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
        n, hh, ww, _ = h.shape
        out = np.zeros((n, hh - kh + 1, ww - kw + 1, k.shape[3]))
        for i in range(kh):
            for j in range(kw):
                out += np.einsum("nhwc,cf->nhwf", h[:, i:i + out.shape[1], j:j + out.shape[2]], k[i, j])
        return np.maximum(out + b, 0)

    h = conv(h, *w["conv1"], True)
    h = h.reshape(len(h), h.shape[1] // 2, 2, h.shape[2] // 2, 2, -1).max((2, 4))
    h = conv(h, *w["conv2d"], False).reshape(len(h), -1)
    h = np.maximum(h @ w["dense"][0] + w["dense"][1], 0)
    z = h @ w["dense_1"][0] + w["dense_1"][1]
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _has_onnx() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def test_without_data_evaluate_asks_for_it(tmp_path, capsys):
    import_keras(FIXTURES / "binary.keras", runs_dir=tmp_path, progress=lambda *_: None)
    (run,) = tmp_path.iterdir()
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "imported" in err and "cnnlab evaluate" in err


def _edited(tmp_path, edit) -> Path:
    """A copy of the sequential fixture with its config.json changed by ``edit``."""
    src = FIXTURES / "sequential_cnn.keras"
    out = tmp_path / "edited.keras"
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(out, "w") as o:
        for item in z.namelist():
            data = z.read(item)
            if item == "config.json":
                cfg = json.loads(data)
                edit(cfg["config"]["layers"])
                data = json.dumps(cfg).encode()
            o.writestr(item, data)
    return out


@pytest.mark.parametrize("edit,needle", [
    (lambda layers: layers[2].update(class_name="GaussianNoise"),
     "layer type GaussianNoise is not supported (.*edited.keras, layer 'max_pooling2d' \\(GaussianNoise\\))"),
    (lambda layers: layers[1]["config"].update(data_format="channels_first"),
     "data_format='channels_first' is not supported .*layer 'conv1'"),
    (lambda layers: layers[1]["config"].update(activation="hard_silu"),
     "activation='hard_silu' is unknown"),
])
def test_what_cnnlab_cannot_import_is_one_line(tmp_path, capsys, edit, needle):
    path = _edited(tmp_path, edit)
    assert main(["import-keras", str(path), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    import re

    assert re.search(needle, err), err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_files_that_are_not_keras_models_are_one_line(tmp_path, capsys):
    import h5py

    (tmp_path / "x.keras").write_bytes(b"not a model")
    with h5py.File(tmp_path / "w.h5", "w") as f:
        f.attrs["layer_names"] = np.array([], dtype=h5py.string_dtype())
    for path, needle in [(tmp_path / "x.keras", "not a Keras model file"),
                         (tmp_path / "w.h5", "holds weights but no model"),
                         (tmp_path / "missing.keras", "not found")]:
        assert main(["import-keras", str(path), "--runs-dir", str(tmp_path / "runs")]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and err.count("\n") == 0


# ----------------------------------------------------------------------------- out

def _exported_predictions(path: Path, x: np.ndarray, run=None) -> np.ndarray:
    """The probabilities Keras computes with an exported file; with ``run``, its second output (the
    ood score) is checked against the run's."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    model = keras.saving.load_model(path)
    probs, score = (keras.ops.convert_to_numpy(o) for o in model(x.astype(np.float32), training=False))
    if run is not None:
        ours = run.ood_scores(x)
        assert score.shape == (len(x), 1) and (np.abs(score[:, 0] - ours) / np.maximum(1, np.abs(ours))).max() <= 1e-5
    return probs


@pytest.mark.parametrize("spec_index", [0, 1])
def test_exported_graphs_load_in_keras_and_predict_the_same(tmp_path, spec_index):
    from cnnlab.data.preprocess import Preprocessing
    from test_export import fake_run
    from test_keras_layers import GRAPHS

    spec = dict(GRAPHS[spec_index], name=f"g{spec_index}")
    c = spec["layers"][0]["shape"][2]
    per_channel = Preprocessing("standard-per-channel", (90.0, 120.0, 140.0)[:c], (40.0, 60.0, 70.0)[:c])
    run = fake_run(tmp_path, spec, "rgb" if c == 3 else "grayscale", scale=per_channel)
    result = export_keras(run)
    assert result["max_abs_diff"] <= 1e-5
    h, w = run.image_size
    x = np.random.default_rng(5).integers(0, 256, (20, h, w, c), dtype=np.uint8)
    assert result["max_score_diff"] <= 1e-5
    assert np.abs(_exported_predictions(result["path"], x, run) - run.predict_proba(x)).max() <= 1e-5


def test_a_trained_run_exports_to_keras_and_round_trips(tmp_path, capsys):
    from conftest import train_tiny_run

    run = train_tiny_run(tmp_path, class_names=["horizontal", "vertical", "diagonal"])
    assert main(["export", str(run.path), "--format", "keras"]) == 0
    out = capsys.readouterr().out
    assert "keras.saving.load_model" in out
    path = run.path / "model.keras"
    xt, _ = bars(6, seed=2)
    assert np.abs(_exported_predictions(path, xt, run) - run.predict_proba(xt)).max() <= 1e-5
    again = import_keras(path, runs_dir=tmp_path / "again", progress=lambda *_: None)
    assert np.array_equal(again.predict_proba(xt), run.predict_proba(xt))  # identical
    assert again.class_names == run.class_names and again.preprocessing == run.preprocessing
    assert again.spec.summary() == run.spec.summary()


def test_a_binary_run_exports_its_sigmoid(tmp_path):
    from test_export import fake_run

    spec = {"name": "bin", "input_shape": [9, 9, 3], "layers": [
        {"type": "Conv2D", "filters": 4, "kernel_size": 3, "activation": "relu"}, {"type": "MaxPooling2D"},
        {"type": "BatchNormalization"}, {"type": "Flatten"}, {"type": "Dense", "units": 1, "activation": "sigmoid"}]}
    run = fake_run(tmp_path, spec, "rgb")
    path = export_keras(run)["path"]
    x = np.random.default_rng(0).integers(0, 256, (12, 9, 9, 3), dtype=np.uint8)
    theirs = _exported_predictions(path, x, run)  # its ood score: softplus of the logit
    assert theirs.shape == (12, 1)
    assert np.abs(theirs[:, 0] - run.predict_proba(x)[:, 1]).max() <= 1e-5
    shutil.rmtree(run.path)
