"""Trust, round two (issue 26): the silent wrong answers a notebook user and a hostile tester met in
the features added since the first round, each with the test that would have caught it."""

from __future__ import annotations

import numpy as np
import pytest

import cnnlab
from conftest import bars, train_tiny_run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("tiny"))


def test_one_image_without_its_batch_axis_is_a_batch_of_one(tiny_run):
    x, _ = bars(2, seed=5)
    batch = cnnlab.predict(tiny_run, x[:1])
    assert batch.shape == (1, 3)
    for one in (x[0], x[0, ..., 0], x[0] / 255.0, x[0].tolist()):  # (H, W, 1), (H, W), floats, lists
        got = cnnlab.predict(tiny_run, one)
        assert got.shape == (1, 3)
        np.testing.assert_allclose(got, batch, atol=1e-6)


def test_torch_tensors_are_images_too(tiny_run):
    import torch

    x, _ = bars(2, seed=5)
    np.testing.assert_allclose(cnnlab.predict(tiny_run, torch.from_numpy(x)), cnnlab.predict(tiny_run, x), atol=1e-6)


@pytest.mark.parametrize("shape, shown", [((12, 12, 3), "(12, 12, 3)"), ((12, 12, 2), "(12, 12, 2)"),
                                          ((2, 1, 12, 12), "channels first")])
def test_an_array_that_could_be_read_two_ways_is_refused_with_the_expected_shape(tiny_run, shape, shown):
    with pytest.raises(ValueError) as e:
        cnnlab.predict(tiny_run, np.zeros(shape, np.uint8))
    msg = str(e.value)
    assert shown in msg and "(12, 12" in msg and "\n" not in msg


def test_an_rgb_photo_is_one_image_for_an_rgb_model(tmp_path):
    x, y = bars(10, channels=3)
    spec = {"input_shape": [12, 12, 3], "layers": [{"type": "Conv2D", "filters": 4, "kernel_size": 3},
                                                  {"type": "Flatten"}, {"type": "Dense", "units": 3,
                                                                        "activation": "softmax"}]}
    run = cnnlab.train((x, y), model=spec, epochs=1, runs_dir=str(tmp_path), quiet=True)
    assert cnnlab.predict(run, x[0]).shape == (1, 3)
    assert cnnlab.predict(run, np.concatenate([x[0], x[0, ..., :1]], -1)).shape == (1, 3)  # RGBA
    with pytest.raises(ValueError, match="channels first"):
        cnnlab.predict(run, np.moveaxis(x[0], -1, 0))


def test_evaluate_and_explain_take_one_image_too(tiny_run):
    x, y = bars(2, seed=5)
    ev = cnnlab.evaluate(tiny_run, (x[0], y[0]), save=False)
    assert sum(sum(r) for r in ev["confusion_matrix"]) == 1
    from cnnlab import viz

    fig = viz.probabilities(tiny_run, image=x[0, ..., 0])
    assert fig.axes
    assert viz.feature_maps(tiny_run, x[0]).axes
    assert viz.gradcam(tiny_run, x[0]).axes


def test_api_errors_are_the_builtin_exceptions(tiny_run, tmp_path):
    with pytest.raises(TypeError, match="expected a run"):
        cnnlab.predict(123, np.zeros((1, 12, 12), np.uint8))
    with pytest.raises(FileNotFoundError, match="run directory not found"):
        cnnlab.predict(tmp_path / "nope", np.zeros((1, 12, 12), np.uint8))
    with pytest.raises(TypeError, match="expected images"):
        cnnlab.predict(tiny_run, 3.5)
    with pytest.raises(FileNotFoundError):
        cnnlab.predict(tiny_run, str(tmp_path / "missing.png"))


def test_viz_is_reachable_as_its_docstring_uses_it():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import cnnlab; print(callable(cnnlab.viz.curves))"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr


def test_a_leaderboard_states_what_was_run(tmp_path):
    import yaml

    from conftest import TINY_SPEC

    x, y = bars(40, size=12)
    np.savez(tmp_path / "b.npz", x_train=x, y_train=y)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_SPEC))
    spec = str(tmp_path / "tiny.yaml")
    board = cnnlab.compare(f"npz:{tmp_path / 'b.npz'}", ["tree", spec], cv=3, subsample={"tree": 30, spec: 45},
                           epochs=2, out=tmp_path / "cmp", seed=5)
    md = (tmp_path / "cmp" / "leaderboard.md").read_text(encoding="utf-8")
    page = (tmp_path / "cmp" / "leaderboard.html").read_text(encoding="utf-8")
    for text in (md, page):
        assert "120 labeled images" in text and "3 stratified folds" in text and "seed 5" in text
        assert "trained on 30 images (subsample 30)" in text and "trained on 45 images (subsample 45)" in text
        assert "recipe keras, up to 2 epochs, batch 32" in text
    assert list(board.set_index("model").loc[spec, ["n_train", "epochs"]]) == [45, 2]
    assert "| 45 | 2 |" in md  # the table itself: images trained on, epochs


def test_kernels_share_one_fixed_scale_trained_and_untrained(tiny_run, tmp_path):
    from cnnlab import viz
    from cnnlab.cli import main

    trained = viz.kernels(tiny_run)
    untrained = viz.kernels(tiny_run, untrained=True)
    (bar_t,) = [a for a in trained.axes if a.get_label() == "<colorbar>"]
    (bar_u,) = [a for a in untrained.axes if a.get_label() == "<colorbar>"]
    assert bar_t.get_ylim() == bar_u.get_ylim()  # one scale for both figures
    lim = bar_t.get_ylim()[1]
    init = viz.initial_kernels(tiny_run)
    w = next(v for v in viz.weights(tiny_run.model).values() if v.ndim == 4)
    assert lim == pytest.approx(max(np.abs(init).max(), np.abs(w).max()), rel=1e-6)
    assert not np.allclose(init, w)  # the recorded kernels are the ones before training
    assert f"±{lim:.3g}" in trained._suptitle.get_text()
    assert viz.kernels(tiny_run, scale=0.5).axes[-1].get_ylim() == (-0.5, 0.5)
    out = tmp_path / "k.png"
    assert main(["plot", str(tiny_run.path), "kernels", "--untrained", "--out", str(out)]) == 0 and out.is_file()
    assert viz.kernels(tiny_run.model).axes  # a bare model works too
    with pytest.raises(ValueError, match="no Conv2D"):
        import torch

        viz.kernels(torch.nn.Linear(3, 2))


def test_the_recipe_is_said_and_recorded_and_a_missing_validation_split_is_warned(tmp_path, capsys):
    import yaml

    from cnnlab.cli import main

    x, y = bars(10)
    np.savez(tmp_path / "b.npz", x_train=x, y_train=y)
    args = ["train", f"npz:{tmp_path / 'b.npz'}", "--model", "deep-mlp", "--epochs", "1", "--image-size", "28", "28",
            "--runs-dir", str(tmp_path / "r"), "--no-report", "--no-check"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "recipe notebook-003: up to 1 epochs, batch 500, adam lr default, early stopping on val_loss " \
           "(patience 10)" in err
    cfg = yaml.safe_load(next((tmp_path / "r").glob("*/config.yaml")).read_text())
    assert cfg["recipe"] == "notebook-003" and cfg["batch_size"] == 500
    assert main(args + ["--val-split", "0"]) == 0
    err = capsys.readouterr().err
    assert "warning: there is no validation split, so early stopping (patience 10)" in err and "--patience none" in err
    assert main(args + ["--val-split", "0", "--patience", "none"]) == 0
    assert "no validation split" not in capsys.readouterr().err


def test_new_figures_twin_curves_random_misclassified_order_and_augmentation(tmp_path, capsys):
    from cnnlab import viz
    from cnnlab.cli import main

    x, y = bars(12)
    xt, yt = bars(6, seed=3)
    np.savez(tmp_path / "b.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    from conftest import TINY_SPEC

    run = cnnlab.train(f"npz:{tmp_path / 'b.npz'}", model=TINY_SPEC, epochs=2, runs_dir=str(tmp_path / "r"),
                       quiet=True, rotation_range=20, horizontal_flip=True)
    twin = viz.curves(run, twin=True)
    assert len(twin.axes) == 2 and twin.axes[1].get_ylabel() == "accuracy"
    a = viz.random_prediction(run, seed=1).axes[0].get_title()
    assert a == viz.random_prediction(run, seed=1).axes[0].get_title() and "true" in a
    probs = run.predict_proba(xt)
    yt_wrong = (probs.argmax(1) + 1) % 3  # every image "misclassified": the order decides which are shown
    conf = viz.figures.misclassified(xt, yt_wrong, probs, run.class_names, n=3, order="confident")
    rand = viz.figures.misclassified(xt, yt_wrong, probs, run.class_names, n=3, order="random", seed=4)
    titles = [ax.get_title() for ax in conf.axes[::2]], [ax.get_title() for ax in rand.axes[::2]]
    assert titles[0] != titles[1]
    aug = viz.augmentation(run, n=6, seed=2)
    assert len([ax for ax in aug.axes if ax.images]) == 7
    pix = [ax.images[0].get_array() for ax in aug.axes if ax.images]
    assert not all(np.array_equal(pix[0], p) for p in pix[1:])  # the copies differ from the original
    for kind, extra in (("curves", ["--twin"]), ("random", ["--seed", "3"]), ("augmentation", []),
                        ("misclassified", ["--order", "random"])):
        out = tmp_path / f"{kind}.png"
        assert main(["plot", str(run.path), kind, *extra, "--out", str(out)]) == 0 and out.is_file(), kind
    assert main(["plot", str(run.path), "curves", "--twin"]) == 0 and (run.path / "curves-twin.png").is_file()
    plain = cnnlab.train(f"npz:{tmp_path / 'b.npz'}", model=TINY_SPEC, epochs=1, runs_dir=str(tmp_path / "r"),
                         quiet=True)
    assert main(["plot", str(plain.path), "augmentation"]) == 2
    assert "trained without augmentation" in capsys.readouterr().err


def test_keras_cache_is_searched_for_mnist_and_fashion_mnist(tmp_path, monkeypatch):
    import gzip
    import hashlib

    from cnnlab.data import builtin

    keras = tmp_path / "keras"
    monkeypatch.setenv("KERAS_HOME", str(keras))
    with pytest.raises(FileNotFoundError) as e:
        cnnlab.load_dataset("mnist")
    assert str(keras / "datasets" / "mnist.npz") in str(e.value) and "keras.datasets.mnist.load_data()" in str(e.value)
    # mnist.npz as keras.datasets.mnist.load_data() keeps it (its checksum is Keras' published one)
    x, y = bars(4, size=28, classes=3)
    (keras / "datasets").mkdir(parents=True)
    np.savez(keras / "datasets" / "mnist.npz", x_train=x[..., 0], y_train=y, x_test=x[:6, ..., 0], y_test=y[:6])
    digest = hashlib.sha256((keras / "datasets" / "mnist.npz").read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="published checksum"):
        cnnlab.load_dataset("mnist")
    monkeypatch.setitem(builtin.KERAS_NPZ, "mnist", ("mnist.npz", digest))
    ds = cnnlab.load_dataset("mnist", val_split=0)
    assert len(ds["train"]) == 12 and len(ds["test"]) == 6 and ds.info["folder"].endswith("mnist.npz")
    # Fashion-MNIST's IDX files in ~/.keras/datasets/fashion-mnist/
    folder = keras / "datasets" / "fashion-mnist"
    folder.mkdir()

    def idx(arr):
        import struct

        head = struct.pack(">HBB", 0, 8, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
        return gzip.compress(head + arr.astype(np.uint8).tobytes())

    for part, (fname, _) in builtin.IDX_SETS["fashion-mnist"].files.items():
        arr = x[..., 0] if part.endswith("images") else y
        (folder / fname).write_bytes(idx(arr))
    ds = cnnlab.load_dataset("fashion-mnist", val_split=0)
    assert len(ds["train"]) == 12 and ds.class_names[0] == "T-shirt/top"


def test_validation_and_test_data_from_arrays_in_keras_names(tmp_path, capsys):
    x, y = bars(20)
    xv, yv = bars(5, seed=3)
    xt, yt = bars(4, seed=4)
    run = cnnlab.train((x, y), model={"input_shape": [12, 12, 1], "layers": [
        {"type": "Flatten"}, {"type": "Dense", "units": 3, "activation": "softmax"}]}, epochs=1,
        runs_dir=str(tmp_path), validation_data=(xv, yv), test_data=(xt, yt))
    assert run.data["splits"] == {"train": 60, "validation": 15, "test": 12}
    err = capsys.readouterr().err
    assert "held out" not in err
    run = cnnlab.train((x, y), model={"input_shape": [12, 12, 1], "layers": [
        {"type": "Flatten"}, {"type": "Dense", "units": 3, "activation": "softmax"}]}, epochs=1,
        runs_dir=str(tmp_path), test_data=(xt, yt))
    err = capsys.readouterr().err
    assert ("validation: 12 of the 60 training images held out (val_split 0.2, stratified, seed 42); "
            "trained on 48") in err
    run = cnnlab.train((x, y), model={"input_shape": [12, 12, 1], "layers": [
        {"type": "Flatten"}, {"type": "Dense", "units": 3, "activation": "softmax"}]}, epochs=1, patience=None,
        runs_dir=str(tmp_path), test_data=(xt, yt), val_split=0, quiet=True)
    assert run.data["splits"]["train"] == 60  # val_split=0 keeps them all
    with pytest.raises(ValueError, match="go with arrays"):
        cnnlab.train("digits", validation_data=(xv, yv))
    with pytest.raises(ValueError, match="given twice"):
        cnnlab.train(((x, y), (xt, yt)), test_data=(xt, yt))


def test_keras_spellings_are_aliases(tmp_path, capsys):
    from cnnlab.cli import main
    from cnnlab.config import make_config

    cfg = make_config(optimizer="RMSprop", validation_split=0.1, loss="SparseCategoricalCrossentropy")
    assert (cfg.optimizer, cfg.val_split, cfg.loss) == ("rmsprop", 0.1, "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="same setting, given twice"):
        make_config(val_split=0.1, validation_split=0.2)
    x, y = bars(10)
    np.savez(tmp_path / "b.npz", x_train=x, y_train=y)
    base = ["train", f"npz:{tmp_path / 'b.npz'}", "-m", str(tmp_path / "s.yaml"),
            "--epochs", "1", "--runs-dir", str(tmp_path / "r"), "--no-report", "--quiet", "--no-check"]
    import yaml

    from conftest import TINY_SPEC

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(TINY_SPEC))
    assert main(base + ["--optimizer", "Adam", "--validation-split", "0.25",
                        "--loss", "sparse_categorical_crossentropy"]) == 0
    cfg = yaml.safe_load(next((tmp_path / "r").glob("*/config.yaml")).read_text())
    assert (cfg["optimizer"], cfg["val_split"], cfg["loss"]) == ("adam", 0.25, "sparse_categorical_crossentropy")
    capsys.readouterr()
    assert main(base + ["--loss", "categorical_crossentropy"]) == 2
    assert "takes one-hot rows, but the labels are class indices" in capsys.readouterr().err
    assert main(base + ["--loss", "binary_crossentropy"]) == 2
    assert "binary_crossentropy is for 2 classes, but the data has 3" in capsys.readouterr().err
    onehot = np.eye(3)[y]
    with pytest.raises(ValueError, match="sparse_categorical_crossentropy takes class indices"):
        cnnlab.train((x, onehot), model=TINY_SPEC, epochs=1, loss="sparse_categorical_crossentropy",
                     runs_dir=str(tmp_path / "r"), quiet=True)
    run = cnnlab.train((x, onehot), model=TINY_SPEC, epochs=1, loss="categorical_crossentropy",
                       runs_dir=str(tmp_path / "r"), quiet=True)
    assert run.config["loss"] == "categorical_crossentropy"


def test_messages_show_types_and_shapes_never_arrays(tmp_path):
    x, y = bars(10)
    for call in (lambda: cnnlab.train((x, y), val_source=x, runs_dir=str(tmp_path)),
                 lambda: cnnlab.train((x, y), epochs=np.arange(1000), runs_dir=str(tmp_path)),
                 lambda: cnnlab.predict(x, x)):
        with pytest.raises((ValueError, TypeError)) as e:
            call()
        assert len(str(e.value)) < 400 and "shape (" in str(e.value), str(e.value)[:300]


def test_labels_ko_on_arrays_suggests_the_api_argument(tmp_path):
    x, y = bars(10)
    with pytest.raises(ValueError) as e:
        cnnlab.train((x, y), labels="ko", runs_dir=str(tmp_path))
    assert "labels='ko'" in str(e.value) and "--" not in str(e.value)


def test_terminal_tables_line_up_by_display_width():
    from cnnlab.evaluation import evaluate_probs, format_confusion
    from cnnlab.textwidth import width

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    probs = rng.dirichlet([1, 1, 1], 60)
    text = evaluate_probs(probs, y, ["티셔츠", "바지", "앵클 부츠"])["report_text"]
    rows = [line for line in text.splitlines() if line.strip()]
    assert len({width(line) for line in rows[1:]} | {width(rows[0])}) == 1  # every row ends in one column
    from sklearn.metrics import classification_report

    ascii_names = ["a", "bb", "ccc"]
    assert evaluate_probs(probs, y, ascii_names)["report_text"] == classification_report(
        y, probs.argmax(1), target_names=ascii_names, digits=4, zero_division=0)
    cm = format_confusion([[1, 2, 3], [4, 5, 6], [7, 8, 9]], ["티셔츠", "바지", "앵클 부츠"]).splitlines()[1:]
    assert len({width(line) for line in cm}) == 1


def test_chart_labels_and_legends_do_not_collide():
    from cnnlab.comparison.leaderboard import short_seconds, time_ticks
    from cnnlab.viz.figures import class_counts

    assert [short_seconds(t) for t in time_ticks(9.4, 780)] == ["10 s", "50 s", "2 min", "10 min"]
    assert len(time_ticks(0.9, 2.5)) == 2 and len(time_ticks(1e-3, 1e5)) <= 4
    fig = class_counts({"train": [50, 60, 70], "test": [10, 12, 14]}, ["a", "b", "c"])
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    for bar in ax.patches:
        assert not legend.overlaps(bar.get_window_extent())


def test_every_viz_function_says_what_it_draws():
    from cnnlab import viz

    for name in viz.__all__:
        fn = getattr(viz, name)
        assert callable(fn) and fn.__doc__ and len(fn.__doc__) > 30, name


BRANCHY = {"name": "branchy", "input_shape": [12, 12, 1], "layers": [
    {"type": "Conv2D", "name": "a1", "filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"},
    {"type": "Conv2D", "name": "b1", "filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu",
     "inputs": "input_layer"},
    {"type": "Conv2D", "name": "b2", "filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"},
    {"type": "Add", "name": "add", "inputs": ["a1", "b2"]},
    {"type": "BatchNormalization", "name": "bn"},
    {"type": "Conv2D", "name": "c1", "filters": 4, "kernel_size": 1, "padding": "same"},
    {"type": "Add", "name": "residual", "inputs": ["c1", "bn"]},
    {"type": "Concatenate", "name": "cat", "inputs": ["residual", "b1"]},
    {"type": "Flatten"}, {"type": "Dense", "units": 3, "activation": "softmax"}]}


@pytest.fixture(scope="module")
def branchy_run(tmp_path_factory):
    x, y = bars(20)
    return cnnlab.train((x, y), model=BRANCHY, epochs=2, runs_dir=str(tmp_path_factory.mktemp("branchy")),
                        quiet=True)


def test_keras_export_of_branches_and_residuals_computes_what_the_run_computes_in_keras(branchy_run, tmp_path):
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    from cnnlab.exporting import export_keras

    out = export_keras(branchy_run, tmp_path / "m.keras")
    model = keras.saving.load_model(str(out["path"]))  # Keras loads every layer's weights
    x, _ = bars(4, seed=9)
    theirs, score = (keras.ops.convert_to_numpy(o) for o in model(x.astype("float32")))
    assert np.abs(theirs - branchy_run.predict_proba(x)).max() < 1e-5
    ours = branchy_run.ood_scores(x)  # the second output: the energy branch beside the last Dense
    assert (np.abs(score[:, 0] - ours) / np.maximum(1, np.abs(ours))).max() < 1e-5


def test_the_keras_export_check_reads_weights_in_keras_order_and_refuses_a_wrong_file(branchy_run, tmp_path,
                                                                                      monkeypatch):
    """A file whose layers are listed in another order than Keras rebuilds them gets its weights
    swapped between same-shaped layers: the export's own read-back must see what Keras would see."""
    from cnnlab.errors import CnnlabError
    from cnnlab.exporting import export_keras
    from cnnlab.models import kerasfiles

    real = kerasfiles.keras_config

    def spec_order(spec, scaling, name, ood=False):  # the order cnnlab used to write: the spec's
        cfg = real(spec, scaling, name, ood)
        order = [spec.input_name, kerasfiles.SCALING] + [la.name for la in spec.layers] + list(kerasfiles.OOD_LAYERS)
        rank = {n: i for i, n in enumerate(order)}
        cfg["config"]["layers"].sort(key=lambda la: rank[la["name"]])
        return cfg

    monkeypatch.setattr(kerasfiles, "keras_config", spec_order)
    with pytest.raises(CnnlabError, match="disagrees with the run: a probability differs by"):
        export_keras(branchy_run, tmp_path / "bad.keras")
    assert not (tmp_path / "bad.keras").exists() and not list(tmp_path.iterdir())


# ---------------------------------------------------------------- full disks, relative paths, serve

@pytest.mark.parametrize("writer", ["safetensors", "torch.save"])
def test_a_library_failing_on_a_full_disk_is_the_os_error_it_is(tmp_path, writer):
    """safetensors and torch.save report a full disk in their own words ("...(os error 28)",
    "unexpected pos"); atomic writes turn them into the OSError, with no temporary file left."""
    import errno

    from cnnlab import atomic

    messages = {"safetensors": "Error while serializing: I/O error: No space left on device (os error 28)",
                "torch.save": "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"}

    def fail(tmp):
        raise RuntimeError(messages[writer])

    target = tmp_path / "best.safetensors"
    import shutil as _shutil

    real = _shutil.disk_usage
    _shutil.disk_usage = lambda p: real(p)._replace(free=1000)  # the disk that "unexpected pos" met
    try:
        with pytest.raises(OSError) as e:
            atomic.write_with(target, fail)
    finally:
        _shutil.disk_usage = real
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    assert not list(tmp_path.iterdir())


def test_training_onto_a_real_full_disk_is_one_line(tiny_disk, tmp_path, capsys):
    if tiny_disk is None:
        pytest.skip("no tmpfs can be mounted here")
    from cnnlab.cli import main
    from conftest import TINY_SPEC

    big = dict(TINY_SPEC, layers=[*TINY_SPEC["layers"][:3], {"type": "Dense", "units": 400, "activation": "relu"},
                                  TINY_SPEC["layers"][4]])  # about 460 KB of weights: the disk fills while saving
    import yaml

    (tmp_path / "big.yaml").write_text(yaml.safe_dump(big))
    x, y = bars(10)
    np.savez(tmp_path / "b.npz", x_train=x, y_train=y)
    code = main(["train", f"npz:{tmp_path / 'b.npz'}", "-m", str(tmp_path / "big.yaml"), "--epochs", "2", "--quiet",
                 "--no-report", "--runs-dir", str(tiny_disk / "runs")])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "No space left on device" in lines[0] and "internal" not in err, err
    assert not [p for p in tiny_disk.rglob("*") if ".tmp" in p.name]  # no half-written file


def test_export_images_onto_a_full_disk_leaves_nothing(tiny_disk, tmp_path, capsys):
    if tiny_disk is None:
        pytest.skip("no tmpfs can be mounted here")
    from cnnlab.cli import main

    x = np.random.default_rng(0).integers(0, 256, (400, 28, 28, 1), dtype=np.uint8)  # noise: PNGs do not shrink
    np.savez(tmp_path / "n.npz", x_train=x, y_train=np.arange(400) % 2)
    assert main(["export-images", f"npz:{tmp_path / 'n.npz'}", str(tiny_disk / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No space left on device") and "out" in err and ".tmp" not in err, err
    assert list(tiny_disk.iterdir()) == []  # no images/train/ left behind


def test_a_run_trained_on_a_relative_folder_evaluates_from_another_directory(tmp_path, monkeypatch):
    from conftest import TINY_SPEC, write_folder

    x, y = bars(10)
    work = tmp_path / "project"
    write_folder(work / "photos", x, y, ["a", "b", "c"])
    monkeypatch.chdir(work)
    run = cnnlab.train("folder:photos", model=TINY_SPEC, epochs=1, runs_dir=str(tmp_path / "runs"), quiet=True,
                       test_split=0.3)
    assert run.config["source"] == f"folder:{work / 'photos'}"
    monkeypatch.chdir(tmp_path)
    ev = cnnlab.evaluate(run.path, save=False)
    assert ev["n"] == len(run.dataset["test"]) if run.dataset is not None else ev["n"] > 0


def test_serve_with_a_damaged_onnx_model_answers_409_not_500(tiny_run, tmp_path):
    import shutil

    pytest.importorskip("onnxruntime")
    from fastapi.testclient import TestClient

    from cnnlab.serve import create_app

    run_dir = tmp_path / "runs" / tiny_run.path.name
    shutil.copytree(tiny_run.path, run_dir)
    (run_dir / "model.onnx").write_bytes(b"not onnx at all")
    client = TestClient(create_app([run_dir.parent], engine="onnx"))
    import base64
    import io

    from PIL import Image

    x, _ = bars(1)
    buf = io.BytesIO()
    Image.fromarray(x[0, ..., 0]).save(buf, "PNG")
    r = client.post("/api/predict", json={"image": base64.b64encode(buf.getvalue()).decode()})
    assert r.status_code == 409 and "cannot read the ONNX model" in r.json()["error"], r.text


def test_an_lstm_model_is_named_for_what_it_is(tmp_path, capsys):
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    from cnnlab.cli import main

    inp = keras.Input((12, 12))
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.LSTM(4)(inp))
    keras.Model(inp, out).save(tmp_path / "lstm.keras")
    assert main(["import-keras", str(tmp_path / "lstm.keras"), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "LSTM" in err and "nested model" not in err and err.count("\n") == 1, err


def test_the_report_and_the_study_leaderboard_state_what_was_run(tiny_run, tmp_path):
    from cnnlab.report import build_report

    page = build_report(tiny_run).read_text(encoding="utf-8")
    assert "Trained on 48 images, validated on 12; up to 2 epochs (recipe keras), batch 16, adam lr default, seed " \
           "42, pixel scaling 255." in page
    x, y = bars(20)
    np.savez(tmp_path / "b.npz", x_train=x, y_train=y)
    space = {"epochs": 1, "lr": {"choice": [0.01, 0.001]}}
    from conftest import TINY_SPEC

    spec_path = tmp_path / "tiny.yaml"
    import yaml

    spec_path.write_text(yaml.safe_dump(TINY_SPEC))
    cnnlab.tune(f"npz:{tmp_path / 'b.npz'}", space, trials=1, out=tmp_path / "s", quiet=True, model=str(spec_path),
                seed=3)
    for name in ("leaderboard.md", "leaderboard.html"):
        text = (tmp_path / "s" / name).read_text(encoding="utf-8")
        assert "trials train on 38 images and are scored on 10 validation images (val_split 0.2, seed 3" in text, name


def test_mirrored_digits_are_warned_and_the_recipe_line_says_the_mirrors(tmp_path, capsys):
    from cnnlab.cli import main

    args = ["train", "digits", "--model", "fashion-cnn", "--epochs", "1", "--runs-dir", str(tmp_path),
            "--no-report", "--no-check"]
    assert main(args + ["--horizontal-flip", "--tta", "flip"]) == 0
    err = capsys.readouterr().err
    assert "mirrored images and a mirrored pass at test time" in err
    assert "warning: this run trains on mirrored images" in err and "a mirrored digit is another digit" in err
    assert "--no-horizontal-flip" in err
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "mirrored" not in err.replace(str(tmp_path), "")
