"""Ship a model (issue 17): ONNX export with the preprocessing inside, verified against the run."""

from __future__ import annotations

import base64
import csv
import io
import json
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.cli import main
from cnnlab.data.preprocess import Preprocessing
from cnnlab.errors import CnnlabError
from cnnlab.exporting import export_onnx, onnx_proba, session
from cnnlab.models import PRESETS, build_module, parse_spec, preset_spec
from cnnlab.models.layers import LAYERS
from cnnlab.runs import Run
from conftest import TINY_SPEC, bars, train_tiny_run

pytest.importorskip("onnxruntime")


STANDARD = Preprocessing("standard", (100.0,), (50.0,))


def fake_run(tmp_path, spec: dict, color_mode: str, scale=STANDARD, tta="none"):
    """A Run with random weights and BatchNorm statistics that are not the defaults."""
    s = parse_spec(spec)
    torch.manual_seed(0)
    model = build_module(s).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    c = 3 if color_mode == "rgb" else 1
    if scale.mode != "255" and len(scale.offset) != c:
        scale = Preprocessing(scale.mode, scale.offset * c, scale.scale * c)
    names = [f"c{i}" for i in range(s.num_classes)]
    path = tmp_path / spec.get("name", "spec")
    path.mkdir()
    return Run(path, s, model, scale, names, {}, {"tta": tta}, {})


def check(run, tmp_path, n=24):
    h, w = run.image_size
    c = 3 if run.color_mode == "rgb" else 1
    x = np.random.default_rng(1).integers(0, 256, (n, h, w, c), dtype=np.uint8)
    out = export_onnx(run, tmp_path / f"{run.path.name}.onnx", check_images=x)
    assert out["max_abs_diff"] <= 1e-5
    return out


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_exports(name, tmp_path):
    p = PRESETS[name]
    spec = preset_spec(name)
    run = fake_run(tmp_path, spec, "rgb" if len(p.input_shape) == 3 and p.input_shape[2] == 3 else "grayscale")
    check(run, tmp_path, n=8 if name == "small-convnet" else 24)


def test_every_layer_kind_exports(tmp_path):
    specs = [
        {"name": "a", "input_shape": [13, 11, 3], "layers": [
            {"type": "Conv2D", "filters": 4, "kernel_size": 3, "strides": 2, "padding": "same", "activation": "relu",
             "kernel_initializer": "patch_whitening", "trainable": False},
            {"type": "Rescaling", "scale": 0.5, "offset": 0.1},
            {"type": "BatchNormalization"},
            {"type": "MaxPooling2D", "pool_size": 3, "strides": 2, "padding": "same"},
            {"type": "Dense", "units": 5, "activation": "tanh"},  # on (H, W, C): the channel axis
            {"type": "AveragePooling2D", "pool_size": 2, "strides": 1, "padding": "same"},
            {"type": "Conv2D", "filters": 6, "kernel_size": [2, 3], "dilation_rate": 1, "use_bias": False},
            {"type": "GlobalAveragePooling2D"}, {"type": "Dropout", "rate": 0.5},
            {"type": "Dense", "units": 3}, {"type": "Activation", "activation": "softmax"}]},
        {"name": "b", "input_shape": [10, 10, 1], "layers": [
            {"type": "Conv2D", "filters": 3, "kernel_size": 3, "activation": "leaky_relu"},
            {"type": "GlobalMaxPooling2D"}, {"type": "Flatten"}, {"type": "BatchNormalization"},
            {"type": "Dense", "units": 1, "activation": "sigmoid"}]},
        {"name": "c", "input_shape": [12, 12, 3], "layers": [
            {"type": "ZeroPadding2D", "padding": [[1, 0], [0, 2]]},
            {"type": "DepthwiseConv2D", "kernel_size": 3, "depth_multiplier": 2, "strides": 2, "padding": "same"},
            {"type": "ReLU", "max_value": 6.0},
            {"type": "SeparableConv2D", "filters": 8, "kernel_size": 3, "padding": "same"},
            {"type": "Conv2D", "filters": 4, "kernel_size": 1, "groups": 2},
            {"type": "LayerNormalization"}, {"type": "SpatialDropout2D", "rate": 0.2},
            {"type": "ReLU", "negative_slope": 0.1, "threshold": 0.5},
            {"type": "GlobalAveragePooling2D"}, {"type": "Dense", "units": 3, "activation": "softmax"}]},
        {"name": "d", "input_shape": [8, 8, 3], "layers": [  # a graph: every merge, Concatenate, Reshape
            {"type": "Input", "shape": [8, 8, 3]},
            {"type": "Conv2D", "name": "a", "filters": 4, "kernel_size": 3, "padding": "same"},
            {"type": "Conv2D", "name": "b", "filters": 4, "kernel_size": 1, "inputs": "input_layer"},
            {"type": "Add", "name": "s", "inputs": ["a", "b"]},
            {"type": "Subtract", "name": "d", "inputs": ["s", "b"]},
            {"type": "Multiply", "name": "m", "inputs": ["d", "a"]},
            {"type": "Average", "name": "v", "inputs": ["m", "a", "b"]},
            {"type": "Maximum", "name": "hi", "inputs": ["v", "s"]},
            {"type": "Minimum", "name": "lo", "inputs": ["hi", "d"]},
            {"type": "Concatenate", "name": "c", "inputs": ["lo", "m"]},
            {"type": "Reshape", "target_shape": [4, 16, -1]},
            {"type": "Flatten"}, {"type": "Dense", "units": 3, "activation": "softmax"}]},
        {"name": "e", "input_shape": [9, 9, 3], "layers": [  # EfficientNet's and ConvNeXt's kinds
            {"type": "Rescaling", "scale": [0.01, 0.02, 0.03], "offset": [0.1, 0.0, -0.1]},
            {"type": "Normalization", "mean": [0.5, 1.0, 1.5], "variance": [0.25, 2.0, 4.0]},
            {"type": "Normalization"},
            {"type": "Conv2D", "filters": 4, "kernel_size": 3, "activation": "swish"},
            {"type": "LayerScale", "init_values": 0.5, "projection_dim": 4},
            {"type": "Dropout", "rate": 0.2, "noise_shape": [None, 1, 1, 1]},
            {"type": "Activation", "activation": "gelu"},
            {"type": "GlobalAveragePooling2D"}, {"type": "Dense", "units": 3, "activation": "softmax"}]},
    ]
    used = {layer["type"] for s in specs for layer in s["layers"]}
    assert used - {"Input"} == set(LAYERS)
    for spec in specs:
        run = fake_run(tmp_path, spec, "rgb" if spec["input_shape"][2] == 3 else "grayscale")
        check(run, tmp_path)
    binary = session(tmp_path / "b.onnx")
    assert binary.get_outputs()[0].shape[1] == 1  # the sigmoid probability


def test_a_trained_run_exports_and_predicts_the_same_on_every_test_image(tmp_path, capsys):
    run = train_tiny_run(tmp_path, class_names=["horizontal", "vertical", "diagonal"])
    assert main(["export", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert "parity: 18/18 top-1 agree, max |Δp|" in out and "ort.InferenceSession" in out
    snippet = out.split("use it with onnxruntime:\n")[1]
    assert len(snippet.strip().splitlines()) == 6
    import onnx

    meta = {p.key: p.value for p in onnx.load(run.path / "model.onnx").metadata_props}
    assert json.loads(meta["class_names"]) == ["horizontal", "vertical", "diagonal"]
    assert meta["color_mode"] == "grayscale" and json.loads(meta["image_size"]) == list(run.image_size)
    assert meta["run_id"] == run.path.name and meta["cnnlab_version"]

    from cnnlab.api import run_dataset

    test = run_dataset(run)["test"].x
    ours = run.predict_proba(test)
    theirs = onnx_proba(session(run.path / "model.onnx"), test, False)
    assert (ours.argmax(1) == theirs.argmax(1)).all() and np.abs(ours - theirs).max() <= 1e-5

    folder = tmp_path / "imgs"
    folder.mkdir()
    x, _ = bars(4, seed=7)
    for i, img in enumerate(x):
        Image.fromarray(img[..., 0]).save(folder / f"{i}.png")
    rows = {}
    for engine in ("torch", "onnx"):
        out_csv = tmp_path / f"{engine}.csv"
        assert main(["predict", str(run.path), str(folder), "--engine", engine, "--out", str(out_csv)]) == 0
        rows[engine] = list(csv.DictReader(open(tmp_path / f"{engine}.csv")))
    assert [r["class_index"] for r in rows["torch"]] == [r["class_index"] for r in rows["onnx"]]
    diff = max(abs(float(a[k]) - float(b[k]))
               for a, b in zip(rows["torch"], rows["onnx"]) for k in a if k.startswith("prob_"))
    assert diff <= 1e-5


def test_the_flip_average_is_inside_the_graph(tmp_path):
    run = fake_run(tmp_path, TINY_SPEC, "grayscale", tta="flip")
    check(run, tmp_path)


def test_export_errors_are_one_line(tmp_path, monkeypatch, capsys):
    run = fake_run(tmp_path, TINY_SPEC, "grayscale")
    with pytest.raises(CnnlabError, match="opset"):
        export_onnx(run, tmp_path / "x.onnx", opset=3)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(CnnlabError, match=r"pip install 'cnnlab\[onnx\]'"):
        export_onnx(run, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_serve_with_the_onnx_engine_answers_like_torch(tmp_path):
    from fastapi.testclient import TestClient

    from cnnlab.serve import create_app

    run = train_tiny_run(tmp_path)
    x, _ = bars(3, seed=4)
    buf = io.BytesIO()
    Image.fromarray(x[0, ..., 0]).save(buf, "PNG")
    answers = {}
    for engine in ("torch", "onnx"):
        client = TestClient(create_app([run.path.parent], engine=engine))
        r = client.post("/api/predict", files={"file": ("a.png", buf.getvalue(), "image/png")}, data={})
        assert r.status_code == 200, r.text
        answers[engine] = [p["p"] for p in r.json()["probabilities"]]
        explained = client.post("/api/predict", json={"image": base64.b64encode(buf.getvalue()).decode(),
                                                      "explain": True}).json()
        assert explained["gradcam_png"]  # figures still come from the torch model
    assert (run.path / "model.onnx").is_file()  # exported on first use
    np.testing.assert_allclose(answers["onnx"], answers["torch"], atol=1e-5)


def test_a_new_export_format_and_engine_are_one_file_each(tmp_path, monkeypatch, capsys):
    """Issue 29: an export format and a prediction engine register like layer kinds. One file here
    adds both (weights as a NumPy archive; an engine that always says the last class), and the
    command line offers and runs them end to end."""
    from cnnlab.shipping import ENGINES, FORMATS, Engine, ExportFormat, register_engine, register_format

    (tmp_path / "myplugin.py").write_text(textwrap.dedent('''
        import numpy as np

        def export(run, out, options):
            path = out or str(run.path / "model.npz")
            np.savez(path, **{k: v.detach().cpu().numpy() for k, v in run.model.state_dict().items()})
            return [f"wrote {path}"]

        def last_class(run):
            k = len(run.class_names)
            return run.with_engine(lambda x, batch_size=256: np.eye(k, dtype=np.float32)[[k - 1] * len(x)])
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("cnnlab.shipping.FORMATS", dict(FORMATS))  # the registries as they were, after the test
    monkeypatch.setattr("cnnlab.shipping.ENGINES", dict(ENGINES))
    register_format(ExportFormat("npz", "weights as a NumPy archive", "myplugin:export"))
    register_engine(Engine("last", "always the last class", "myplugin:last_class"))
    run = train_tiny_run(tmp_path, class_names=["horizontal", "vertical", "diagonal"])
    assert main(["export", str(run.path), "--format", "npz"]) == 0
    assert f"wrote {run.path / 'model.npz'}" in capsys.readouterr().out
    saved = np.load(run.path / "model.npz")
    assert all(np.array_equal(saved[k], v.cpu().numpy()) for k, v in run.model.state_dict().items())
    x, _ = bars(2, seed=7)
    Image.fromarray(x[0][..., 0]).save(tmp_path / "a.png")
    assert main(["predict", str(run.path), str(tmp_path / "a.png"), "--engine", "last"]) == 0
    assert "diagonal" in capsys.readouterr().out
    code = main(["export", str(run.path), "--format", "tflite"])
    assert code == 2 and "use one of onnx, keras, triton, web, npz" in capsys.readouterr().err
