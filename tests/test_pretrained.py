"""Issue 28, item 1: `--weights imagenet` and `--weights URL` download as Keras does (file names and
published hashes from Keras' source), with a progress bar, Range resume, hash check, a cache that a
second use reads without a request, a mirror, `cnnlab download weights`, and one error line per
failure with no partial file left. The server is a real HTTP server on 127.0.0.1 serving files that
Keras itself writes."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from cnnlab.cli import main  # noqa: E402
from cnnlab.models import pretrained  # noqa: E402
from conftest import bars, free_port, one_error_line  # noqa: E402
from test_backbones import _applications_weights, loads_and_computes_what_keras_computes, random_batchnorm  # noqa: E402

MOBILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"


class Files(http.server.ThreadingHTTPServer):
    """Serves ``files`` (name -> bytes) with Range requests; ``modes[name]``: 'ok', '404', '500',
    'truncate' (every answer stops halfway), 'truncate-once' (the first does), 'no-range'."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, str] = {}
        self.requests: list[tuple[str, str | None]] = []
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        srv: Files = self.server
        name = self.path.lstrip("/")
        srv.requests.append((name, self.headers.get("Range")))
        mode = srv.modes.get(name, "ok")
        if name not in srv.files or mode == "404":
            return self.send_error(404, "Not Found")
        if mode == "500":
            return self.send_error(500, "Internal Server Error")
        body, start = srv.files[name], 0
        rng = self.headers.get("Range")
        if rng and mode != "no-range":
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        part = body[start:]
        if mode == "truncate" or (mode == "truncate-once" and sum(r[0] == name for r in srv.requests) == 1):
            part = part[:len(part) // 2]
            self.wfile.write(part)
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(part)


@pytest.fixture
def server():
    srv = Files()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def home(tmp_path, monkeypatch, server):
    """An empty cache, Keras' own cache out of reach, and Keras' base URLs mirrored to the server."""
    monkeypatch.setenv("CNNLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setenv("CNNLAB_WEIGHTS_MIRROR", server.url)
    return tmp_path / "home" / "weights"


@pytest.fixture
def keras_mobilenet(tmp_path):
    """Keras Applications' MobileNetV2 0.35 (include_top=False), written as its download is laid out."""
    keras.utils.set_random_seed(3)
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None)
    path = tmp_path / "keras-written.h5"
    _applications_weights(model, path)
    return model, path.read_bytes()


def train_args(tmp_path, weights):
    x, y = bars(8, size=32, channels=3)
    np.savez(tmp_path / "b.npz", x_train=x, y_train=y)
    return ["train", f"npz:{tmp_path / 'b.npz'}", "--backbone", "mobilenet_v2:0.35", "--weights", weights,
            "--epochs", "1", "--batch-size", "8", "--runs-dir", str(tmp_path / "runs"), "--no-report", "--no-check"]


def leftovers(home) -> list[str]:
    return sorted(p.name for p in home.iterdir() if not p.name.endswith(".lock")) if home.is_dir() else []


def test_weights_imagenet_downloads_keras_file_once_and_the_second_run_reads_the_cache(
        server, home, keras_mobilenet, tmp_path, capsys):
    model, data = keras_mobilenet
    server.files[MOBILE] = data  # Keras' name: alpha 0.35, and 224 for a size it has no file for (32)
    assert main(train_args(tmp_path, "imagenet")) == 0
    err = capsys.readouterr().err
    assert f"{MOBILE}: 100.0%" in err and "/s" in err and "loaded 104 layers" in err
    assert server.requests == [(MOBILE, None)]
    assert leftovers(home) == [MOBILE]
    assert main(train_args(tmp_path, "imagenet")) == 0
    assert len(server.requests) == 1  # the cache answered
    run = sorted((tmp_path / "runs").iterdir())[-1]
    import yaml

    assert yaml.safe_load((run / "config.yaml").read_text())["weights"] == "imagenet"
    assert json.loads((run / "metrics.json").read_text())["init_from"]["source"] == str(home / MOBILE)
    loads_and_computes_what_keras_computes(model, home / MOBILE)


def test_weights_url_with_a_hash_fragment_is_checked_and_cached(server, home, keras_mobilenet, tmp_path, capsys):
    _, data = keras_mobilenet
    server.files["w.h5"] = data
    good = f"{server.url}w.h5#sha256={hashlib.sha256(data).hexdigest()}"
    assert main(train_args(tmp_path, good)) == 0
    assert main(train_args(tmp_path, f"{server.url}w.h5#md5={hashlib.md5(data).hexdigest()}")) == 0
    assert len(server.requests) == 1
    code = main(train_args(tmp_path, f"{server.url}w.h5#sha256={'0' * 64}"))
    line = one_error_line(code, capsys.readouterr().err, f"has sha256 {hashlib.sha256(data).hexdigest()}, but "
                          f"{'0' * 64} was published")
    assert "nothing was kept" in line
    assert not any(p.name.endswith(".part") for p in home.iterdir())
    code = main(train_args(tmp_path, f"{server.url}w.h5#sha1=abc"))
    one_error_line(code, capsys.readouterr().err, "is not a hash")


def test_a_partial_file_is_resumed_with_a_range_request(server, home, keras_mobilenet):
    _, data = keras_mobilenet
    server.files[MOBILE] = data
    home.mkdir(parents=True)
    (home / (MOBILE + ".part")).write_bytes(data[:1000])  # a download a killed process left
    path = pretrained.get_file(pretrained.keras_file("mobilenet_v2", 0.35, 32), quiet=True)
    assert path.read_bytes() == data and server.requests == [(MOBILE, "bytes=1000-")]
    assert leftovers(home) == [MOBILE]


def test_a_body_cut_short_is_asked_for_again_from_where_it_stopped(server, home, keras_mobilenet, capsys):
    _, data = keras_mobilenet
    server.files[MOBILE] = data
    server.modes[MOBILE] = "truncate-once"
    assert main(["download", "weights", "mobilenet_v2:0.35"]) == 0
    assert (home / MOBILE).read_bytes() == data
    assert server.requests == [(MOBILE, None), (MOBILE, f"bytes={len(data) // 2}-")]
    assert "resumed at" in capsys.readouterr().err


@pytest.mark.parametrize("mode,needle", [
    ("404", "answered HTTP 404 Not Found"),
    ("500", "answered HTTP 500 Internal Server Error"),
    ("truncate", "(truncated, 4 tries)"),
    ("html", "the file is not HDF5"),
])
def test_each_failure_is_one_line_and_leaves_no_partial_file(server, home, mode, needle, capsys):
    server.files[MOBILE] = b"<html>Sign in to continue</html>" if mode == "html" else b"\x89HDF\r\n\x1a\n" + bytes(5000)
    server.modes[MOBILE] = mode
    code = main(["download", "weights", "mobilenet_v2:0.35"])
    line = one_error_line(code, capsys.readouterr().err, needle)
    assert "HDF5" in line or "cnnlab download weights" in line  # how to place it by hand
    assert leftovers(home) == []


def test_no_network_names_the_url_and_how_to_place_the_file_by_hand(home, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CNNLAB_WEIGHTS_MIRROR", f"http://127.0.0.1:{free_port()}/keras")
    code = main(train_args(tmp_path, "imagenet"))
    line = one_error_line(code, capsys.readouterr().err, "cannot reach http://127.0.0.1:")
    assert f"/keras/{MOBILE}" in line and f"put it at {home / MOBILE}" in line
    assert leftovers(home) == [] and not any((tmp_path / "runs").glob("*"))


def test_a_hash_mismatch_against_keras_published_hash_gives_both(server, home, capsys):
    server.files["vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"] = b"\x89HDF\r\n\x1a\n" + bytes(100)
    code = main(["download", "weights", "vgg16"])
    got = hashlib.md5(b"\x89HDF\r\n\x1a\n" + bytes(100)).hexdigest()
    one_error_line(code, capsys.readouterr().err, f"has md5 {got}, but 6d6bbae143d832006294945121d1f1fc was published")
    assert leftovers(home) == []


def test_a_full_disk_is_one_line_and_leaves_nothing(server, tiny_disk, monkeypatch, capsys):
    if tiny_disk is None:
        pytest.skip("no tmpfs can be mounted here")
    monkeypatch.setenv("CNNLAB_HOME", str(tiny_disk))
    monkeypatch.setenv("CNNLAB_WEIGHTS_MIRROR", server.url)
    server.files[MOBILE] = b"\x89HDF\r\n\x1a\n" + bytes(2_000_000)
    code = main(["download", "weights", "mobilenet_v2:0.35"])
    one_error_line(code, capsys.readouterr().err, "cannot write")
    assert leftovers(tiny_disk / "weights") == []


def test_keras_file_names_and_hashes_are_keras_own():
    """The names and hashes in keras/src/applications, as keras' own modules hold them."""
    from keras.src.applications import convnext, efficientnet, resnet, vgg16

    f = pretrained.keras_file("vgg16")
    assert f.url == vgg16.WEIGHTS_PATH_NO_TOP and f.digest.hex == "6d6bbae143d832006294945121d1f1fc"
    assert pretrained.keras_file("resnet50", include_top=True).digest.hex == resnet.WEIGHTS_HASHES["resnet50"][0]
    eff = pretrained.keras_file("efficientnet_b0")
    assert eff.url == efficientnet.BASE_WEIGHTS_PATH + "efficientnetb0_notop.h5"
    assert eff.digest.hex == efficientnet.WEIGHTS_HASHES["b0"][1]
    conv = pretrained.keras_file("convnext_tiny")
    assert conv.url == convnext.BASE_WEIGHTS_PATH + "convnext_tiny_notop.h5" and conv.digest.algorithm == "sha256"
    assert conv.digest.hex == convnext.WEIGHTS_HASHES["convnext_tiny"][1]
    assert pretrained.keras_file("mobilenet_v2", 0.5, 160, include_top=True).name == \
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_160.h5"


def test_download_list_and_two_processes_share_one_download(server, home, keras_mobilenet, capsys):
    _, data = keras_mobilenet
    server.files[MOBILE] = data
    env = {**os.environ}
    cmd = [sys.executable, "-m", "cnnlab", "download", "weights", "mobilenet_v2:0.35"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert [r for r in server.requests if r[0] == MOBILE] == [(MOBILE, None)]  # the second found it in place
    assert main(["download", "--list"]) == 0
    out = capsys.readouterr().out
    assert MOBILE in out and f"{len(data) / 1e6:,.1f} MB" in out and "1 file(s)" in out


APPLICATIONS = {"vgg16": "VGG16", "resnet50": "ResNet50", "efficientnet_b0": "EfficientNetB0",
                "convnext_tiny": "ConvNeXtTiny", "mobilenet_v2": "MobileNetV2"}
MODULES = {"vgg16": "vgg16", "resnet50": "resnet50", "efficientnet_b0": "efficientnet", "convnext_tiny": "convnext",
           "mobilenet_v2": "mobilenet_v2"}


def randomised(model, seed: int = 0):
    """random_batchnorm, and random Normalization statistics, LayerNorm scales and LayerScale gammas
    (a fresh layer's are 0 and 1, which would hide one loaded into the wrong place)."""
    rng = np.random.default_rng(seed)
    random_batchnorm(model, seed)
    for layer in leaf_layers(model):
        if type(layer).__name__ in ("Normalization", "LayerNormalization", "LayerScale") and layer.weights:
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(w.dtype) if w.shape else w
                               for w in layer.get_weights()])
    return model


def leaf_layers(model) -> list:
    """A Keras model's layers with nested models (ConvNeXt's stem) opened."""
    out = []
    for layer in model.layers:
        out += leaf_layers(layer) if hasattr(layer, "layers") else [layer]
    return out


@pytest.mark.parametrize("name", ["vgg16", "resnet50", "efficientnet_b0", "convnext_tiny"])
def test_backbones_from_downloaded_weights_compute_what_keras_computes(name, server, home, tmp_path):
    """Keras' own network (random weights and statistics), written in Keras Applications' file
    layout, served on 127.0.0.1 and fetched with --weights URL#sha256=: the pooled features of 8
    random images equal Keras' predict (pooling="avg") on its preprocess_input within 1e-4."""
    import torch

    from cnnlab.data.preprocess import Preprocessing
    from cnnlab.engine.progress import Progress
    from cnnlab.models import build_module, parse_spec
    from cnnlab.models.backbones import BACKBONES, backbone_spec, feature_layer
    from cnnlab.models.init import backbone_weights

    app = getattr(keras.applications, APPLICATIONS[name])
    preprocess = getattr(keras.applications, MODULES[name]).preprocess_input
    keras.utils.set_random_seed(4)
    kmodel = randomised(app(weights=None, include_top=False, input_shape=(40, 32, 3), pooling="avg"))
    _applications_weights(kmodel, tmp_path / "w.h5")
    data = (tmp_path / "w.h5").read_bytes()
    server.files["w.h5"] = data
    url = f"{server.url}w.h5#sha256={hashlib.sha256(data).hexdigest()}"
    path = pretrained.resolve_weights(url, name, None, 32, quiet=True)
    spec = parse_spec(backbone_spec(name, (40, 32, 3), 4, pretrained=pretrained.spec_flag(url)))
    assert sum(layer.params for layer in spec.layers[:feature_layer(spec) + 1]) == kmodel.count_params()
    model = build_module(spec).eval()
    report = backbone_weights(model, spec, str(path), Progress(1, 1, True).message, bgr=BACKBONES[name].bgr)
    assert len(report["loaded"]) == sum(1 for layer in leaf_layers(kmodel) if layer.weights)
    x = np.random.default_rng(0).integers(0, 256, (8, 40, 32, 3)).astype(np.uint8)
    prep = Preprocessing.fit(BACKBONES[name].settings["scale"], x)
    with torch.no_grad():
        mine = model.features(prep.apply_tensor(torch.from_numpy(x).permute(0, 3, 1, 2)))[feature_layer(spec)].numpy()
    theirs = keras.ops.convert_to_numpy(kmodel(preprocess(x.astype(np.float32)), training=False))
    assert np.abs(mine - theirs).max() <= 1e-4 * max(1.0, np.abs(theirs).max())


def test_efficientnet_with_keras_imagenet_file_rescales_as_keras_does_for_imagenet(
        server, home, tmp_path, monkeypatch, capsys):
    """Keras adds a per-channel Rescaling after EfficientNet's Normalization for weights="imagenet"
    (its ImageNet file's variance is the standard deviation): `--weights imagenet`, fetched from the
    mirror under Keras' file name, computes what keras.applications.EfficientNetB0(weights="imagenet")
    does with that file."""
    import torch
    from keras.src.utils import file_utils
    from PIL import Image

    from cnnlab.prediction import backbone_embedder

    keras.utils.set_random_seed(6)
    kmodel = randomised(keras.applications.EfficientNetB0(weights=None, include_top=False, input_shape=(32, 32, 3)))
    _applications_weights(kmodel, tmp_path / "efficientnetb0_notop.h5")
    data = (tmp_path / "efficientnetb0_notop.h5").read_bytes()
    server.files["efficientnetb0_notop.h5"] = data
    top, notop = pretrained._FIXED["efficientnet_b0"]
    monkeypatch.setitem(pretrained._FIXED, "efficientnet_b0",
                        (top, pretrained.WeightsFile(notop.name, notop.url, pretrained._sha256(
                            hashlib.sha256(data).hexdigest()))))
    monkeypatch.setattr(file_utils, "get_file", lambda *a, **k: str(tmp_path / "efficientnetb0_notop.h5"))
    theirs_model = keras.applications.EfficientNetB0(weights="imagenet", include_top=False, input_shape=(32, 32, 3),
                                                     pooling="avg")
    x = np.random.default_rng(2).integers(0, 256, (8, 32, 32, 3)).astype(np.uint8)
    (tmp_path / "imgs").mkdir()
    for i, img in enumerate(x):
        Image.fromarray(img).save(tmp_path / "imgs" / f"{i}.png")
    assert main(["embed", "efficientnet_b0", str(tmp_path / "imgs"), "--weights", "imagenet", "--image-size", "32",
                 "32", "--out", str(tmp_path / "f.npy")]) == 0
    theirs = keras.ops.convert_to_numpy(theirs_model(x.astype(np.float32), training=False))
    mine = np.load(tmp_path / "f.npy")
    assert np.abs(mine - theirs).max() <= 1e-4 * max(1.0, np.abs(theirs).max())
    # the stem sees what Keras' ImageNet model's does, which is not what the same file gives without it
    model, spec, prep = backbone_embedder("efficientnet_b0", "imagenet", (32, 32), quiet=True)
    with torch.no_grad():
        stem = model.features(prep.apply_tensor(torch.from_numpy(x).permute(0, 3, 1, 2)))[
            [layer.name for layer in spec.layers].index("stem_conv")].permute(0, 2, 3, 1).numpy()

    def keras_stem(m):
        return keras.ops.convert_to_numpy(keras.Model(m.input, m.get_layer("stem_conv").output)(x.astype(np.float32)))

    assert np.abs(stem - keras_stem(theirs_model)).max() <= 1e-4 * np.abs(stem).max()
    assert np.abs(stem - keras_stem(kmodel)).max() > 0.1 * np.abs(stem).max()


def test_embed_a_backbone_from_downloaded_weights_gives_keras_pooled_features(server, home, keras_mobilenet,
                                                                               tmp_path, capsys):
    from PIL import Image

    model, data = keras_mobilenet
    server.files["m.h5"] = data
    x = np.random.default_rng(5).integers(0, 256, (8, 32, 32, 3)).astype(np.uint8)
    (tmp_path / "imgs").mkdir()
    for i, img in enumerate(x):
        Image.fromarray(img).save(tmp_path / "imgs" / f"{i}.png")
    url = f"{server.url}m.h5#sha256={hashlib.sha256(data).hexdigest()}"
    out = tmp_path / "f.npy"
    assert main(["embed", "mobilenet_v2:0.35", str(tmp_path / "imgs"), "--weights", url, "--image-size", "32", "32",
                 "--out", str(out)]) == 0
    assert "wrote 8 x 1,280 features (avg_pool)" in capsys.readouterr().out
    mine = np.load(out)
    theirs = keras.ops.convert_to_numpy(model(x.astype(np.float32) / 127.5 - 1, training=False)).mean(axis=(1, 2))
    assert mine.shape == (8, 1280) and np.abs(mine - theirs).max() <= 1e-4
    assert main(["embed", "mobilenet_v2:0.35", str(tmp_path / "imgs" / "3.png"), "--weights", url, "--image-size",
                 "32", "32", "--out", str(tmp_path / "f.csv")]) == 0
    rows = (tmp_path / "f.csv").read_text().splitlines()
    assert rows[0].startswith("input,f0,f1,") and len(rows) == 2
    assert np.allclose([float(v) for v in rows[1].split(",")[1:]], mine[3], atol=1e-6)


def test_embed_a_run_takes_its_last_hidden_layer_and_bad_options_are_one_line(tmp_path, capsys):
    from PIL import Image

    from conftest import train_tiny_run

    run = train_tiny_run(tmp_path)
    x, _ = bars(3, seed=4)
    for i, img in enumerate(x):
        Image.fromarray(img[..., 0]).save(tmp_path / f"{i}.png")
    assert main(["embed", str(run.path), str(tmp_path / "*.png"), "--out", str(tmp_path / "f.npy")]) == 0
    f = np.load(tmp_path / "f.npy")
    assert f.shape == (len(x), 16)  # TINY_SPEC's Dense(16), the layer its head reads
    assert np.isfinite(f).all() and (f >= 0).all()  # after its ReLU
    code = main(["embed", str(run.path), str(tmp_path / "0.png"), "--out", str(tmp_path / "f.txt")])
    one_error_line(code, capsys.readouterr().err, "neither .npy nor .csv")
    code = main(["embed", str(run.path), str(tmp_path / "0.png"), "--weights", "imagenet", "--out", "f.npy"])
    one_error_line(code, capsys.readouterr().err, "--weights is for a backbone")
    assert not (tmp_path / "f.txt").exists()


def test_predict_imagenet_prints_the_top_5_imagenet_classes_as_keras_does(server, home, tmp_path, monkeypatch,
                                                                           capsys):
    """`cnnlab predict imagenet:mobilenet_v2:0.35 photo.png`: Keras' include_top=True file and the class
    index, both fetched and checked (the index here is a stand-in with its own MD5: Keras' real file is
    not on this machine), give Keras' top 5."""
    from PIL import Image

    keras.utils.set_random_seed(6)
    kmodel = keras.applications.MobileNetV2(input_shape=(224, 224, 3), alpha=0.35, include_top=True, weights=None)
    _applications_weights(kmodel, tmp_path / "top.h5")
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224.h5"
    server.files[name] = (tmp_path / "top.h5").read_bytes()
    index = json.dumps({str(i): [f"n{i:08d}", f"class_{i}"] for i in range(1000)}).encode()
    server.files["imagenet_class_index.json"] = index
    digest = pretrained.Digest("md5", hashlib.md5(index).hexdigest())
    monkeypatch.setattr(pretrained, "CLASS_INDEX", pretrained.WeightsFile("imagenet_class_index.json",
                                                                          pretrained.CLASS_INDEX.url, digest))
    x = np.random.default_rng(7).integers(0, 256, (224, 224, 3)).astype(np.uint8)
    Image.fromarray(x).save(tmp_path / "photo.png")
    assert main(["predict", "imagenet:mobilenet_v2:0.35", str(tmp_path / "photo.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    p = keras.ops.convert_to_numpy(kmodel(x[None].astype(np.float32) / 127.5 - 1, training=False))[0]
    top = np.argsort(-p)[:5]
    assert lines[0].startswith(f"{tmp_path / 'photo.png'}: class_{top[0]} ({p[top[0]]:.4f})")
    assert [line.split()[0] for line in lines[1:]] == [f"class_{i}" for i in top]
    code = main(["predict", "imagenet:mobilenet_v2:0.35", str(tmp_path / "photo.png"), "--engine", "onnx"])
    one_error_line(code, capsys.readouterr().err, "--engine onnx needs a run directory")


@pytest.mark.parametrize("name", ["vgg16", "resnet50"])
def test_import_keras_reads_keras_own_vgg16_and_resnet50_with_a_new_head(name, tmp_path):
    """The transfer-learning model a Keras user saves (the application's layers, pooling and a new Dense
    head, one functional model) imports as a run that predicts what Keras predicts."""
    from cnnlab.importing import import_keras

    build = {"vgg16": keras.applications.VGG16, "resnet50": keras.applications.ResNet50}[name]
    keras.utils.set_random_seed(8)
    base = random_batchnorm(build(weights=None, include_top=False, input_shape=(32, 32, 3)))
    pooled = keras.layers.GlobalAveragePooling2D()(base.output)
    model = keras.Model(base.input, keras.layers.Dense(3, activation="softmax")(pooled))
    model.save(tmp_path / f"{name}.keras")
    run = import_keras(tmp_path / f"{name}.keras", runs_dir=tmp_path / "runs", progress=lambda *_: None)
    x = np.random.default_rng(9).integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    theirs = keras.ops.convert_to_numpy(model(x.astype(np.float32) / 255.0, training=False))
    assert run.spec.total_params == model.count_params()
    assert np.abs(run.predict_proba(x) - theirs).max() <= 1e-5


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_import_keras_reads_chollets_conv_base_inside_a_model(fmt, tmp_path):
    """Chollet's feature-extraction model: VGG16 (include_top=False) as one layer of a Sequential with
    Flatten and a Dense head, and MobileNetV2 called on an Input inside a functional model: the nested
    model's layers are read in its place, and the run predicts what Keras predicts (.keras and .h5)."""
    from cnnlab.importing import import_keras

    keras.utils.set_random_seed(10)
    base = random_batchnorm(keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3)))
    seq = keras.Sequential([base, keras.layers.Flatten(), keras.layers.Dense(8, activation="relu"),
                            keras.layers.Dropout(0.5), keras.layers.Dense(3, activation="softmax")])
    seq.build((None, 32, 32, 3))
    inp = keras.Input((32, 32, 3))
    mobile = random_batchnorm(keras.applications.MobileNetV2(weights=None, include_top=False, alpha=0.35,
                                                             input_shape=(32, 32, 3)))
    fn = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(
        mobile(inp))))
    x = np.random.default_rng(9).integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    for i, model in enumerate([seq, fn]):
        model.save(tmp_path / f"m{i}.{fmt}")
        run = import_keras(tmp_path / f"m{i}.{fmt}", runs_dir=tmp_path / "runs", progress=lambda *_: None)
        theirs = keras.ops.convert_to_numpy(model(x.astype(np.float32) / 255.0, training=False))
        assert run.spec.total_params == model.count_params()
        assert np.abs(run.predict_proba(x) - theirs).max() <= 1e-5


@pytest.mark.parametrize("name", ["efficientnet_b0", "convnext_tiny"])
def test_import_keras_reads_efficientnet_and_convnext_as_keras_saves_them(name, tmp_path):
    """Keras' own EfficientNetB0 and ConvNeXtTiny (with a 4-class top), saved by Keras: nested stem
    models, `inputs + x` written as an operation, LayerScale, Normalization with and without
    weights. They take raw pixels (the scaling is inside), and predict what Keras predicts."""
    from cnnlab.importing import import_keras

    keras.utils.set_random_seed(11)
    model = randomised(getattr(keras.applications, APPLICATIONS[name])(weights=None, include_top=True, classes=4,
                                                                      input_shape=(32, 32, 3)))
    model.save(tmp_path / "m.keras")
    run = import_keras(tmp_path / "m.keras", runs_dir=tmp_path / "runs", progress=lambda *_: None)
    x = np.random.default_rng(12).integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    theirs = keras.ops.convert_to_numpy(model(x.astype(np.float32), training=False))
    assert run.preprocessing.mode == "none" and run.spec.total_params == model.count_params()
    assert np.abs(run.predict_proba(x) - theirs).max() <= 1e-5


def test_tune_fetches_the_weights_once_before_any_trial_and_a_bad_url_is_one_line(server, home, tmp_path, capsys):
    x, y = bars(8, size=32, channels=3)
    np.savez(tmp_path / "b.npz", x_train=x, y_train=y)
    (tmp_path / "space.yaml").write_text("lr: {loguniform: [0.001, 0.01]}\nepochs: 1\n")
    code = main(["tune", f"npz:{tmp_path / 'b.npz'}", "--space", str(tmp_path / "space.yaml"), "--backbone",
                 "mobilenet_v2:0.35", "--weights", f"{server.url}gone.h5", "--trials", "2",
                 "--out", str(tmp_path / "study")])
    one_error_line(code, capsys.readouterr().err, "gone.h5 answered HTTP 404")
    assert not (tmp_path / "study").exists() and leftovers(home) == []


@pytest.mark.parametrize("name", list(APPLICATIONS))
def test_imagenet_classifiers_have_keras_layers_and_counts(name):
    """include_top=True (what `cnnlab predict imagenet:NAME` builds): every Keras layer with weights, by
    name, with its parameter count, so that Keras' include_top file loads layer by layer."""
    from cnnlab.models import parse_spec
    from cnnlab.models.backbones import backbone_spec

    spec = parse_spec(backbone_spec(name, (224, 224, 3), 1000, pretrained="imagenet", include_top=True))
    theirs = getattr(keras.applications, APPLICATIONS[name])(weights=None, include_top=True)
    mine = {layer.name: layer for layer in spec.layers}
    for k in leaf_layers(theirs):
        if k.weights:  # a name Keras gives itself is numbered after the process's first model
            assert mine.get(k.name, mine.get(re.sub(r"_\d+$", "", k.name))).params == k.count_params(), k.name
    assert spec.total_params == theirs.count_params()


def test_a_file_url_without_a_hash_is_used_where_it_is(home, keras_mobilenet, tmp_path):
    _, data = keras_mobilenet
    (tmp_path / "w.h5").write_bytes(data)
    assert pretrained.resolve_weights((tmp_path / "w.h5").as_uri(), "mobilenet_v2", 0.35, 32) == tmp_path / "w.h5"
    assert leftovers(home) == []  # nothing copied into the cache
