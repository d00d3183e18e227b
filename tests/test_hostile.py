"""The hostile tester's table, round two (issue 26): the features added since the first round
(import-keras, export, predict and serve with ONNX, resume, --init-from / --freeze-until, --nproc,
--cache disk, tune, tracking, check, backbones, precision) and the Python API.

Every row ends in one ``error:`` line and exit code 2 with a message the user can act on (or a clean,
correct result, said in the row), never an "internal error" or a traceback, and leaves nothing
half-written: no new run directory, no study folder, no temporary file. API rows raise ValueError,
TypeError or FileNotFoundError (cnnlab's errors are subclasses) with the one-line message.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import cnnlab
from cnnlab.cli import main
from conftest import TINY_SPEC, bars, one_error_line, train_tiny_run

CASES = []


def case(fn):
    CASES.append(fn)
    return fn


class Ctx:
    """What the rows build on: a finished tiny run, a resumable one, its data and a valid .keras file."""

    def __init__(self, base: Path, resumable: Path, keras_file: Path, npz: Path):
        self.base, self.resumable, self.keras_file, self.npz = base, resumable, keras_file, npz


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    base = train_tiny_run(folder).path
    x, y = bars(20)
    np.savez(folder / "res.npz", x_train=x, y_train=y)

    class StopAfterOne(cnnlab.Callback):
        def on_epoch_end(self, state, logs):
            if state.epoch == 1:
                state.request_stop("stopped for the tests", "time_limit")

    resumable = cnnlab.train(f"npz:{folder / 'res.npz'}", model=TINY_SPEC, epochs=3, runs_dir=str(folder / "res"),
                             quiet=True, callbacks=[StopAfterOne()]).path
    from cnnlab.exporting import export_keras

    keras_file = export_keras(cnnlab.load_run(base), folder / "tiny.keras")["path"]
    return Ctx(base, resumable, keras_file, folder / "res.npz")


def runs(tmp_path: Path) -> list[str]:
    return ["--runs-dir", str(tmp_path / "runs")]


def copy_run(tmp_path: Path, run: Path, name: str = "run") -> Path:
    dest = tmp_path / name
    shutil.copytree(run, dest)
    return dest


def rezip(src: Path, dest: Path, change: dict) -> Path:
    """A copy of the .keras zip ``src`` with members replaced (bytes or JSON-able values) or removed (None)."""
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    for name, value in change.items():
        if value is None:
            members.pop(name, None)
        else:
            members[name] = value if isinstance(value, bytes) else json.dumps(value).encode()
    with zipfile.ZipFile(dest, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return dest


def keras_config(ctx: Ctx) -> dict:
    with zipfile.ZipFile(ctx.keras_file) as z:
        return json.loads(z.read("config.json"))


def keras_with_config(tmp_path: Path, ctx: Ctx, edit) -> str:
    cfg = keras_config(ctx)
    edit(cfg)
    return str(rezip(ctx.keras_file, tmp_path / "m.keras", {"config.json": cfg}))


def with_resume_point(tmp_path: Path, ctx: Ctx, edit) -> str:
    run = copy_run(tmp_path, ctx.resumable)
    state = torch.load(run / "resume.pt", weights_only=True)
    edit(state)
    torch.save(state, run / "resume.pt")
    return str(run)


def write_space(tmp_path: Path, space: dict) -> str:
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump(space))
    return str(p)


SPACE = {"epochs": 1, "batch_size": 16, "lr": {"loguniform": [1.0e-3, 1.0e-2]},
         "model": {"name": "tiny", "layers": [
             {"type": "Conv2D", "filters": {"choice": [4, 8], "name": "filters"}, "kernel_size": 3,
              "activation": "relu"},
             {"type": "Flatten"}, {"type": "Dense", "units": 3, "activation": "softmax"}]}}


def tune_args(tmp_path: Path, ctx: Ctx, space: dict | str, *extra) -> list[str]:
    path = space if isinstance(space, str) else write_space(tmp_path, space)
    return ["tune", f"npz:{ctx.npz}", "--space", path, "--trials", "1", "--out", str(tmp_path / "runs" / "study"),
            "--quiet", *extra]


def train_args(tmp_path: Path, ctx: Ctx, *extra) -> list[str]:
    return ["train", f"npz:{ctx.npz}", "-m", spec_file(tmp_path), "--epochs", "1", "--quiet", "--no-report",
            *runs(tmp_path), *extra]


def spec_file(tmp_path: Path, spec: dict | None = None) -> str:
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(spec or TINY_SPEC))
    return str(p)


# ================================================================ import-keras

@case
def import_a_text_file(tmp_path, ctx):
    (tmp_path / "notes.keras").write_text("hello")
    return ["import-keras", str(tmp_path / "notes.keras"), *runs(tmp_path)], "not a Keras model file"


@case
def import_an_empty_file(tmp_path, ctx):
    (tmp_path / "empty.h5").write_bytes(b"")
    return ["import-keras", str(tmp_path / "empty.h5"), *runs(tmp_path)], "not a Keras model file"


@case
def import_random_bytes(tmp_path, ctx):
    (tmp_path / "r.keras").write_bytes(np.random.default_rng(0).bytes(4096))
    return ["import-keras", str(tmp_path / "r.keras"), *runs(tmp_path)], "not a Keras model file"


@case
def import_a_truncated_zip(tmp_path, ctx):
    data = Path(ctx.keras_file).read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
    return ["import-keras", str(tmp_path / "cut.keras"), *runs(tmp_path)], "Keras"


@case
def import_a_zip_without_config(tmp_path, ctx):
    p = rezip(ctx.keras_file, tmp_path / "nocfg.keras", {"config.json": None})
    return ["import-keras", str(p), *runs(tmp_path)], "has no config.json"


@case
def import_a_zip_of_other_files(tmp_path, ctx):
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as z:
        z.writestr("readme.txt", "hello")
    return ["import-keras", str(tmp_path / "other.keras"), *runs(tmp_path)], "has no config.json"


@case
def import_a_config_that_is_not_json(tmp_path, ctx):
    p = rezip(ctx.keras_file, tmp_path / "bad.keras", {"config.json": b"{not json"})
    return ["import-keras", str(p), *runs(tmp_path)], "config.json is not JSON"


for _name, _value in (("list", [1, 2]), ("int", 7), ("string", "model"), ("null", None)):
    def _build(tmp_path, ctx, value=_value):
        p = rezip(ctx.keras_file, tmp_path / "c.keras", {"config.json": json.dumps(value).encode()})
        return ["import-keras", str(p), *runs(tmp_path)], "config"
    _build.__name__ = f"import_a_config_that_is_a_{_name}"
    case(_build)


@case
def import_a_deeply_nested_config(tmp_path, ctx):
    deep = "[" * 100_000 + "]" * 100_000
    p = rezip(ctx.keras_file, tmp_path / "deep.keras", {"config.json": deep.encode()})
    return ["import-keras", str(p), *runs(tmp_path)], "nested too deeply"


@case
def import_layers_that_are_not_a_list(tmp_path, ctx):
    return ["import-keras", keras_with_config(tmp_path, ctx, lambda c: c["config"].update(layers=5)),
            *runs(tmp_path)], "layers"


@case
def import_a_layer_that_is_an_int(tmp_path, ctx):
    return ["import-keras", keras_with_config(tmp_path, ctx, lambda c: c["config"]["layers"].append(3)),
            *runs(tmp_path)], "layer"


@case
def import_a_layer_config_that_is_a_string(tmp_path, ctx):
    def edit(c):
        c["config"]["layers"][2]["config"] = "conv"
    return ["import-keras", keras_with_config(tmp_path, ctx, edit), *runs(tmp_path)], "layer"


for _cls in ("LSTM", "Conv3D", "Lambda", "MultiHeadAttention"):
    def _build(tmp_path, ctx, cls=_cls):
        def edit(c):
            c["config"]["layers"][2]["class_name"] = cls
        return ["import-keras", keras_with_config(tmp_path, ctx, edit), *runs(tmp_path)], f"{cls} is not supported"
    _build.__name__ = f"import_an_unsupported_{_cls.lower()}"
    case(_build)


@case
def import_a_layer_without_class_name(tmp_path, ctx):
    return ["import-keras", keras_with_config(tmp_path, ctx, lambda c: c["config"]["layers"][2].pop("class_name")),
            *runs(tmp_path)], "not supported"


@case
def import_without_weights(tmp_path, ctx):
    p = rezip(ctx.keras_file, tmp_path / "now.keras", {"model.weights.h5": None})
    return ["import-keras", str(p), *runs(tmp_path)], "no weights"


@case
def import_weights_that_are_not_hdf5(tmp_path, ctx):
    p = rezip(ctx.keras_file, tmp_path / "w.keras", {"model.weights.h5": b"not hdf5"})
    return ["import-keras", str(p), *runs(tmp_path)], "cannot read the Keras file"


def _weights_edit(tmp_path, ctx, edit) -> str:
    import h5py

    with zipfile.ZipFile(ctx.keras_file) as z:
        blob = z.read("model.weights.h5")
    buf = io.BytesIO(blob)
    with h5py.File(buf, "a") as f:
        edit(f)
    return str(rezip(ctx.keras_file, tmp_path / "w.keras", {"model.weights.h5": buf.getvalue()}))


@case
def import_nan_weights(tmp_path, ctx):
    def edit(f):
        v = f["layers/conv2d/vars/0"]
        v[...] = np.full(v.shape, np.nan, np.float32)
    return ["import-keras", _weights_edit(tmp_path, ctx, edit), *runs(tmp_path)], "NaN"


@case
def import_weights_of_the_wrong_shape(tmp_path, ctx):
    def edit(f):
        del f["layers/conv2d/vars/0"]
        f["layers/conv2d/vars"].create_dataset("0", data=np.zeros((5, 5, 1, 8), np.float32))
    return ["import-keras", _weights_edit(tmp_path, ctx, edit), *runs(tmp_path)], "shape"


@case
def import_missing_weights_of_a_layer(tmp_path, ctx):
    def edit(f):
        del f["layers/dense/vars/0"]
    return ["import-keras", _weights_edit(tmp_path, ctx, edit), *runs(tmp_path)], "dense"


@case
def import_an_hdf5_file_that_is_not_a_model(tmp_path, ctx):
    import h5py

    with h5py.File(tmp_path / "data.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    return ["import-keras", str(tmp_path / "data.h5"), *runs(tmp_path)], "holds weights but no model"


@case
def import_a_missing_file(tmp_path, ctx):
    return ["import-keras", str(tmp_path / "nope.keras"), *runs(tmp_path)], "not found"


@case
def import_a_folder(tmp_path, ctx):
    return ["import-keras", str(tmp_path), *runs(tmp_path)], "not found"


@case
def import_with_a_bad_scale(tmp_path, ctx):
    return ["import-keras", str(ctx.keras_file), "--scale", "300", *runs(tmp_path)], "--scale"


@case
def import_a_cnnlab_file_with_another_scale(tmp_path, ctx):
    return ["import-keras", str(ctx.keras_file), "--scale", "none", *runs(tmp_path)], "carries its own pixel scaling"


@case
def import_with_too_few_class_names(tmp_path, ctx):
    (tmp_path / "names.txt").write_text("a\nb\n")
    return ["import-keras", str(keras_stripped(tmp_path, ctx)), "--class-names", str(tmp_path / "names.txt"),
            *runs(tmp_path)], "2 class names for a model with 3 classes"


def keras_stripped(tmp_path: Path, ctx: Ctx) -> Path:
    """The tiny .keras without cnnlab's metadata: a file as Keras itself saves it."""
    with zipfile.ZipFile(ctx.keras_file) as z:
        meta = json.loads(z.read("metadata.json"))
    meta.pop("cnnlab", None)
    return rezip(ctx.keras_file, tmp_path / "plain.keras", {"metadata.json": meta})


@case
def import_labels_ko_on_numbered_classes(tmp_path, ctx):
    return ["import-keras", str(keras_stripped(tmp_path, ctx)), "--labels", "ko", *runs(tmp_path)], "--labels ko"


@case
def import_with_data_of_other_classes(tmp_path, ctx):
    x, y = bars(5, classes=4)
    np.savez(tmp_path / "four.npz", x_train=x, y_train=y)
    return ["import-keras", str(ctx.keras_file), "--data", f"npz:{tmp_path / 'four.npz'}", *runs(tmp_path)], "4"


@case
def import_with_an_unknown_data_source(tmp_path, ctx):
    return ["import-keras", str(ctx.keras_file), "--data", "fashion-mnistt", *runs(tmp_path)], "unknown data source"


@case
def import_into_an_out_that_is_a_file(tmp_path, ctx):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "taken").write_text("x")
    return ["import-keras", str(ctx.keras_file), "--out", str(tmp_path / "runs" / "taken")], "taken"


# ================================================================ export

@case
def export_a_missing_run(tmp_path, ctx):
    return ["export", str(tmp_path / "nope")], "run directory not found"


@case
def export_a_run_without_spec(tmp_path, ctx):
    run = copy_run(tmp_path, ctx.base)
    (run / "spec.json").unlink()
    return ["export", str(run), "--out", str(tmp_path / "m.onnx")], "spec.json"


@case
def export_a_run_with_corrupt_weights(tmp_path, ctx):
    run = copy_run(tmp_path, ctx.base)
    (run / "model.safetensors").write_bytes(b"garbage")
    return ["export", str(run), "--out", str(tmp_path / "m.onnx")], "cannot read weights"


@case
def export_a_run_with_wrong_class_count(tmp_path, ctx):
    run = copy_run(tmp_path, ctx.base)
    (run / "classes.json").write_text(json.dumps({"class_names": ["a", "b"]}))
    return ["export", str(run), "--format", "keras", "--out", str(tmp_path / "m.keras")], "2 classes"


@case
def export_a_run_with_text_preprocessing(tmp_path, ctx):
    run = copy_run(tmp_path, ctx.base)
    (run / "preprocessing.json").write_text("[1, 2]")
    return ["export", str(run), "--out", str(tmp_path / "m.onnx")], "preprocessing.json"


@case
def export_onto_a_folder(tmp_path, ctx):
    (tmp_path / "here").mkdir()
    return ["export", str(ctx.base), "--format", "keras", "--out", str(tmp_path / "here")], "here"


@case
def export_onnx_onto_a_folder(tmp_path, ctx):
    (tmp_path / "here").mkdir()
    return ["export", str(ctx.base), "--out", str(tmp_path / "here")], "here"


@case
def export_under_a_file(tmp_path, ctx):
    (tmp_path / "file").write_text("x")
    return ["export", str(ctx.base), "--out", str(tmp_path / "file" / "m.onnx")], "file"


@case
def export_keras_under_a_file(tmp_path, ctx):
    (tmp_path / "file").write_text("x")
    return ["export", str(ctx.base), "--format", "keras", "--out", str(tmp_path / "file" / "m.keras")], "file"


@case
def export_with_an_opset_too_old(tmp_path, ctx):
    return ["export", str(ctx.base), "--opset", "3", "--out", str(tmp_path / "m.onnx")], "opset 3"


@case
def export_with_an_opset_too_new(tmp_path, ctx):
    return ["export", str(ctx.base), "--opset", "99", "--out", str(tmp_path / "m.onnx")], "opset 99"


@case
def export_a_folder_that_is_not_a_run(tmp_path, ctx):
    return ["export", str(tmp_path)], "not a cnnlab run"


# ================================================================ predict with ONNX

def _onnx_beside(tmp_path: Path, ctx: Ctx, data: bytes | None) -> list[str]:
    run = copy_run(tmp_path, ctx.base)
    if data is not None:
        (run / "model.onnx").write_bytes(data)
    x, _ = bars(1, seed=3)
    Image.fromarray(x[0, ..., 0]).save(tmp_path / "one.png")
    return ["predict", str(run), str(tmp_path / "one.png"), "--engine", "onnx"]


@case
def predict_onnx_garbage(tmp_path, ctx):
    return _onnx_beside(tmp_path, ctx, b"garbage bytes"), "cannot read the ONNX model"


@case
def predict_onnx_empty(tmp_path, ctx):
    return _onnx_beside(tmp_path, ctx, b""), "cannot read the ONNX model"


@case
def predict_onnx_truncated(tmp_path, ctx):
    from cnnlab.exporting import export_onnx

    good = export_onnx(cnnlab.load_run(ctx.base), tmp_path / "good.onnx")["path"].read_bytes()
    return _onnx_beside(tmp_path, ctx, good[: len(good) // 3]), "cannot read the ONNX model"


@case
def predict_onnx_of_another_run(tmp_path, ctx):
    from cnnlab.exporting import export_onnx

    x, y = bars(8, classes=4)
    other = cnnlab.train((x, y), model={"input_shape": [12, 12, 1], "layers": [
        {"type": "Flatten"}, {"type": "Dense", "units": 4, "activation": "softmax"}]}, epochs=1,
        runs_dir=str(tmp_path / "other"), quiet=True)
    foreign = export_onnx(other, tmp_path / "foreign.onnx")["path"].read_bytes()
    return _onnx_beside(tmp_path, ctx, foreign), "(4 classes; this run has 3)"


# ================================================================ resume

def _resume(run: str) -> list[str]:
    return ["train", "--resume", run, "--no-report", "--quiet"]


@case
def resume_an_empty_point(tmp_path, ctx):
    run = copy_run(tmp_path, ctx.resumable)
    (run / "resume.pt").write_bytes(b"")
    return _resume(str(run)), "cannot read resume.pt"


@case
def resume_a_text_point(tmp_path, ctx):
    run = copy_run(tmp_path, ctx.resumable)
    (run / "resume.pt").write_text("hello, this is not a checkpoint")
    return _resume(str(run)), "cannot read resume.pt"


@case
def resume_a_point_that_is_a_list(tmp_path, ctx):
    run = copy_run(tmp_path, ctx.resumable)
    torch.save([1, 2, 3], run / "resume.pt")
    return _resume(str(run)), "is not a resume point"


RESUME_DAMAGE = {
    "epoch_as_text": (lambda s: s.update(epoch="1"), "its epoch is str"),
    "epoch_negative": (lambda s: s.update(epoch=-1), "not a whole number >= 0"),
    "epoch_too_big": (lambda s: s.update(epoch=99, history=s["history"] * 99), "the run has 3 epochs"),
    "epoch_bool": (lambda s: s.update(epoch=True), "its epoch is bool"),
    "history_none": (lambda s: s.update(history=None), "its history"),
    "history_short": (lambda s: s.update(history=[]), "its history"),
    "history_of_numbers": (lambda s: s.update(history=[1]), "its history"),
    "history_without_loss": (lambda s: s.update(history=[{"epoch": 1}]), "lacks its loss"),
    "best_epoch_out_of_range": (lambda s: s.update(best_epoch=5), "best epoch"),
    "best_epoch_text": (lambda s: s.update(best_epoch="one"), "best epoch"),
    "model_of_another_model": (lambda s: s.update(model={"x": torch.zeros(2)}), "weights cannot be loaded"),
    "model_with_other_shapes": (lambda s: s.update(model={k: torch.zeros(1) for k in s["model"]}),
                                "weights cannot be loaded"),
    "model_none": (lambda s: s.update(model=None), "its model is a NoneType"),
    "optimizer_of_sgd": (lambda s: s.update(optimizer=torch.optim.SGD(
        [torch.nn.Parameter(torch.zeros(1))], lr=0.1).state_dict()), "optimizer state cannot be loaded"),
    "optimizer_moments_of_other_shapes": (lambda s: s["optimizer"]["state"].update(
        {0: {"step": torch.tensor(1.0), "exp_avg": torch.zeros(5), "exp_avg_sq": torch.zeros(5)}}),
        "optimizer state cannot be loaded"),
    "optimizer_text": (lambda s: s.update(optimizer="adam"), "its optimizer is a str"),
    "rng_short": (lambda s: s["rng"].update(torch=torch.zeros(3, dtype=torch.uint8)), "random states"),
    "rng_missing_generators": (lambda s: s["rng"].pop("generators"), "random states"),
    "rng_text": (lambda s: s.update(rng="seed"), "its rng is a str"),
    "best_model_text": (lambda s: s.update(best_model="weights", best_epoch=1), "best weights"),
}

for _name, (_edit, _needle) in RESUME_DAMAGE.items():
    def _build(tmp_path, ctx, edit=_edit, needle=_needle):
        return _resume(with_resume_point(tmp_path, ctx, edit)), needle
    _build.__name__ = f"resume_with_{_name}"
    case(_build)


@case
def resume_with_a_changed_flag(tmp_path, ctx):
    return [*_resume(str(copy_run(tmp_path, ctx.resumable))), "--epochs", "9"], "--epochs cannot change"


@case
def resume_with_another_model(tmp_path, ctx):
    return [*_resume(str(copy_run(tmp_path, ctx.resumable))), "--model", "fast"], "--model cannot change"


@case
def resume_with_changed_data(tmp_path, ctx):
    run = copy_run(tmp_path, ctx.resumable)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    x, y = bars(20, seed=9)
    np.savez(tmp_path / "changed.npz", x_train=x, y_train=y)
    cfg["source"] = f"npz:{tmp_path / 'changed.npz'}"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return _resume(str(run)), "differs from the one the run started with"


@case
def resume_a_finished_run(tmp_path, ctx):
    return _resume(str(copy_run(tmp_path, ctx.base))), "nothing to resume"


@case
def resume_a_folder_that_is_not_a_run(tmp_path, ctx):
    return _resume(str(tmp_path)), "not a cnnlab run"


# ================================================================ init-from, freeze-until, head-epochs

@case
def init_from_a_missing_run(tmp_path, ctx):
    return train_args(tmp_path, ctx, "--init-from", str(tmp_path / "nope")), "--init-from"


@case
def init_from_an_onnx_file(tmp_path, ctx):
    (tmp_path / "m.onnx").write_bytes(b"x")
    return train_args(tmp_path, ctx, "--init-from", str(tmp_path / "m.onnx")), "a run directory or a .safetensors"


@case
def init_from_corrupt_safetensors(tmp_path, ctx):
    (tmp_path / "w.safetensors").write_bytes(b"garbage")
    return train_args(tmp_path, ctx, "--init-from", str(tmp_path / "w.safetensors")), "w.safetensors"


@case
def init_from_a_run_of_another_input_shape(tmp_path, ctx):
    spec = json.loads(json.dumps(TINY_SPEC))
    spec["layers"][0]["filters"] = 6
    return ["train", f"npz:{ctx.npz}", "-m", spec_file(tmp_path, spec), "--epochs", "1", "--quiet", "--no-report",
            "--init-from", str(ctx.base), *runs(tmp_path)], "conv2d"


@case
def freeze_until_an_unknown_layer(tmp_path, ctx):
    return train_args(tmp_path, ctx, "--freeze-until", "conv9"), "no layer named 'conv9'"


@case
def freeze_until_the_last_layer(tmp_path, ctx):
    return train_args(tmp_path, ctx, "--freeze-until", "dense_1"), "every layer is frozen"


@case
def head_epochs_without_init_from(tmp_path, ctx):
    return train_args(tmp_path, ctx, "--head-epochs", "1"), "needs --init-from"


@case
def head_epochs_as_many_as_epochs(tmp_path, ctx):
    return train_args(tmp_path, ctx, "--init-from", str(ctx.base), "--head-epochs", "1"), "fewer than epochs"


# ================================================================ --nproc

for _n in ("0", "-1", "1000", "300"):
    def _build(tmp_path, ctx, n=_n):
        return train_args(tmp_path, ctx, "--nproc", n), "--nproc"
    _build.__name__ = f"nproc_{_n.replace('-', 'minus_')}"
    case(_build)


@case
def nproc_with_a_missing_folder(tmp_path, ctx):
    return ["train", f"folder:{tmp_path / 'nope'}", "--nproc", "2", *runs(tmp_path)], "folder not found"


@case
def nproc_with_an_unknown_preset(tmp_path, ctx):
    return ["train", f"npz:{ctx.npz}", "--model", "nosuch", "--nproc", "2", *runs(tmp_path)], "unknown preset"


@case
def nproc_with_a_batch_it_cannot_split(tmp_path, ctx):
    return train_args(tmp_path, ctx, "--nproc", "2", "--batch-size", "3"), "batch"


# ================================================================ --cache disk

@case
def cache_disk_in_an_unwritable_place(tmp_path, ctx):
    from conftest import write_folder

    x, y = bars(4)
    write_folder(tmp_path / "photos", x, y, ["a", "b", "c"])
    (tmp_path / "blocker").write_text("a file where the cache folder would go")
    os.environ["CNNLAB_CACHE"] = str(tmp_path / "blocker")
    return (["train", f"folder:{tmp_path / 'photos'}", "--cache", "disk", "--epochs", "1", *runs(tmp_path)],
            "cannot create the decoded-image cache")


@case
def cache_with_a_bad_mode(tmp_path, ctx):
    return train_args(tmp_path, ctx, "--cache", "ssd"), "invalid choice"


# ================================================================ tune

@case
def tune_start_with_a_typo(tmp_path, ctx):
    return tune_args(tmp_path, ctx, {**SPACE, "start": [{"filtres": 4}]}), "did you mean 'filters'"


@case
def tune_start_out_of_range(tmp_path, ctx):
    return tune_args(tmp_path, ctx, {**SPACE, "start": [{"lr": 5.0}]}), "lr: 5.0 is not a number in"


@case
def tune_start_outside_the_choices(tmp_path, ctx):
    return tune_args(tmp_path, ctx, {**SPACE, "start": [{"filters": 5}]}), "is not one of the choices"


@case
def tune_start_not_a_list(tmp_path, ctx):
    return tune_args(tmp_path, ctx, {**SPACE, "start": {"lr": 0.01}}), "start must be a list"


@case
def tune_an_unknown_layer(tmp_path, ctx):
    space = json.loads(json.dumps(SPACE))
    space["model"]["layers"][0]["type"] = "Conv2DD"
    return tune_args(tmp_path, ctx, space), "Conv2DD"


@case
def tune_a_layer_argument_typo(tmp_path, ctx):
    space = json.loads(json.dumps(SPACE))
    space["model"]["layers"][0]["kernal_size"] = 3
    return tune_args(tmp_path, ctx, space), "kernal_size"


@case
def tune_an_unknown_layer_in_one_choice(tmp_path, ctx):
    space = json.loads(json.dumps(SPACE))
    space["model"]["layers"][1] = {"choice": [{"type": "Flatten"}, {"type": "Flaten"}]}
    return tune_args(tmp_path, ctx, space), "Flaten"


@case
def tune_a_huge_int_range(tmp_path, ctx):
    space = json.loads(json.dumps(SPACE))
    space["model"]["layers"][0]["filters"] = {"int": [1, 10 ** 12]}
    return tune_args(tmp_path, ctx, space), "values per image"


@case
def tune_a_huge_repeat(tmp_path, ctx):
    space = json.loads(json.dumps(SPACE))
    conv = space["model"]["layers"][0]
    space["model"]["layers"][0] = {"repeat": {"int": [1, 100000]}, "layers": [{**conv, "padding": "same"}]}
    return tune_args(tmp_path, ctx, space), "repeat"


@case
def tune_a_setting_out_of_range_at_the_high_end(tmp_path, ctx):
    return tune_args(tmp_path, ctx, {**SPACE, "label_smoothing": {"uniform": [0.0, 1.5]}}), "label_smoothing"


@case
def tune_an_unknown_key(tmp_path, ctx):
    return tune_args(tmp_path, ctx, {**SPACE, "learning_rate": {"choice": [0.1]}}), "unknown key 'learning_rate'"


for _step, _needle in (("0", "step"), ("-0.1", "step"), ("'a'", "step")):
    def _build(tmp_path, ctx, step=_step, needle=_needle):
        space = {**SPACE, "label_smoothing": {"uniform": [0.0, 0.2], "step": yaml.safe_load(step)}}
        return tune_args(tmp_path, ctx, space), needle
    _build.__name__ = f"tune_uniform_step_{_step.strip(chr(39)).replace('-', 'minus_').replace('.', '_')}"
    case(_build)


@case
def tune_int_step_zero(tmp_path, ctx):
    return tune_args(tmp_path, ctx, {**SPACE, "batch_size": {"int": [8, 32], "step": 0}}), "step"


@case
def tune_a_range_backwards(tmp_path, ctx):
    return tune_args(tmp_path, ctx, {**SPACE, "lr": {"uniform": [0.1, 0.01]}}), "low < high"


@case
def tune_loguniform_from_zero(tmp_path, ctx):
    return tune_args(tmp_path, ctx, {**SPACE, "lr": {"loguniform": [0.0, 0.1]}}), "low above 0"


@case
def tune_an_empty_choice(tmp_path, ctx):
    return tune_args(tmp_path, ctx, {**SPACE, "batch_size": {"choice": []}}), "choice needs a list"


@case
def tune_two_kinds_in_a_node(tmp_path, ctx):
    return tune_args(tmp_path, ctx, {**SPACE, "lr": {"uniform": [0.1, 0.2], "choice": [1]}}), "beside"


@case
def tune_a_searched_seed(tmp_path, ctx):
    return tune_args(tmp_path, ctx, {**SPACE, "seed": {"choice": [1, 2]}}), "'seed' cannot be part of a search"


@case
def tune_an_empty_space(tmp_path, ctx):
    (tmp_path / "empty.yaml").write_text("")
    return tune_args(tmp_path, ctx, str(tmp_path / "empty.yaml")), "empty"


@case
def tune_a_space_that_is_a_list(tmp_path, ctx):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    return tune_args(tmp_path, ctx, str(tmp_path / "list.yaml")), "not a mapping"


@case
def tune_a_missing_space(tmp_path, ctx):
    return tune_args(tmp_path, ctx, str(tmp_path / "none.yaml")), "cannot read"


@case
def tune_without_validation(tmp_path, ctx):
    return tune_args(tmp_path, ctx, SPACE, "--val-split", "0"), "needs validation data"


@case
def tune_zero_trials(tmp_path, ctx):
    argv = tune_args(tmp_path, ctx, SPACE)
    argv[argv.index("--trials") + 1] = "0"
    return argv, "trials must be a whole number of at least 1"


@case
def tune_a_negative_time_limit(tmp_path, ctx):
    return tune_args(tmp_path, ctx, SPACE, "--time-limit", "-5"), "--time-limit"


@case
def tune_a_bad_storage(tmp_path, ctx):
    return tune_args(tmp_path, ctx, SPACE, "--storage", "nosuchdb://x"), "cannot open the study storage"


@case
def tune_a_bad_metric(tmp_path, ctx):
    return tune_args(tmp_path, ctx, SPACE, "--metric", "accuracy"), "metric"


def _continued(tmp_path, ctx, flag: str, value: str):
    out = tmp_path / "study"
    assert main(["tune", f"npz:{ctx.npz}", "--space", write_space(tmp_path, SPACE), "--trials", "1", "--out",
                 str(out), "--quiet"]) == 0
    return ["tune", f"npz:{ctx.npz}", "--space", write_space(tmp_path, SPACE), "--trials", "2", "--out", str(out),
            "--quiet", flag, value]


for _flag, _value in (("--val-split", "0.3"), ("--seed", "7"), ("--scale", "standard")):
    def _build(tmp_path, ctx, flag=_flag, value=_value):
        return _continued(tmp_path, ctx, flag, value), f"continue it with the same {flag}"
    _build.__name__ = f"tune_continued_with_another_{_flag.strip('-').replace('-', '_')}"
    case(_build)


# ================================================================ tracking

@case
def track_uri_garbage_for_mlflow(tmp_path, ctx):
    return train_args(tmp_path, ctx, "--track", "mlflow", "--track-uri", "::garbage::"), "cannot use the mlflow"


@case
def track_uri_a_file_for_tensorboard(tmp_path, ctx):
    (tmp_path / "afile").write_text("x")
    return train_args(tmp_path, ctx, "--track", "tensorboard", "--track-uri", str(tmp_path / "afile")), "is a file"


@case
def track_uri_under_a_file_for_mlflow(tmp_path, ctx):
    (tmp_path / "afile").write_text("x")
    return (train_args(tmp_path, ctx, "--track", "mlflow", "--track-uri", f"sqlite:///{tmp_path / 'afile' / 'm.db'}"),
            "cannot use the mlflow")


@case
def track_uri_without_track(tmp_path, ctx):
    return train_args(tmp_path, ctx, "--track-uri", str(tmp_path / "tb")), "--track-uri needs --track"


@case
def track_an_unknown_tracker(tmp_path, ctx):
    return train_args(tmp_path, ctx, "--track", "wandb"), "invalid choice"


@case
def tune_with_a_track_uri_that_cannot_be_used(tmp_path, ctx):
    (tmp_path / "afile").write_text("x")
    argv = tune_args(tmp_path, ctx, SPACE, "--track", "tensorboard", "--track-uri", str(tmp_path / "afile"))
    return argv, "is a file"


@case
def compare_with_a_track_uri_that_cannot_be_used(tmp_path, ctx):
    return ["compare", f"npz:{ctx.npz}", "--models", "tree", "--track", "mlflow", "--track-uri", "nonsense",
            "--out", str(tmp_path / "runs" / "cmp")], "cannot use the mlflow"


# ================================================================ check

@case
def check_a_missing_folder(tmp_path, ctx):
    return ["check", f"folder:{tmp_path / 'nope'}"], "folder not found"


@case
def check_a_missing_table(tmp_path, ctx):
    return ["check", f"csv:{tmp_path / 'nope.csv'}"], "not found"


@case
def check_an_empty_folder(tmp_path, ctx):
    (tmp_path / "empty").mkdir()
    return ["check", f"folder:{tmp_path / 'empty'}"], "no class sub-folders"


@case
def check_a_folder_of_text_files(tmp_path, ctx):
    for c in ("a", "b"):
        (tmp_path / "txt" / c).mkdir(parents=True)
        (tmp_path / "txt" / c / "x.txt").write_text("x")
    return ["check", f"folder:{tmp_path / 'txt'}"], "no class sub-folders"


@case
def check_an_empty_csv(tmp_path, ctx):
    (tmp_path / "e.csv").write_text("")
    return ["check", f"csv:{tmp_path / 'e.csv'}"], "e.csv"


@case
def check_an_unknown_source(tmp_path, ctx):
    return ["check", "fashion-mnst"], "did you mean fashion-mnist"


@case
def check_a_val_split_of_two(tmp_path, ctx):
    return ["check", f"npz:{ctx.npz}", "--val-split", "2"], "val_split"


@case
def check_json_out_onto_a_folder(tmp_path, ctx):
    (tmp_path / "dir").mkdir()
    return ["check", f"npz:{ctx.npz}", "--json", "--out", str(tmp_path / "dir")], "dir"


@case
def check_a_corrupt_npz(tmp_path, ctx):
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04 not really")
    return ["check", f"npz:{tmp_path / 'c.npz'}"], "c.npz"


# ================================================================ backbones, weights, precision

@case
def backbone_unknown(tmp_path, ctx):
    return ["train", f"npz:{ctx.npz}", "--backbone", "resnet18", *runs(tmp_path)], "unknown backbone"


@case
def backbone_with_a_width_it_lacks(tmp_path, ctx):
    return ["train", f"npz:{ctx.npz}", "--backbone", "mobilenet_v2:0.6", *runs(tmp_path)], "mobilenet_v2:W"


@case
def backbone_with_a_model(tmp_path, ctx):
    return ["train", f"npz:{ctx.npz}", "--model", "fast", "--backbone", "mobilenet_v2", *runs(tmp_path)], \
        "both a model"


@case
def backbone_on_images_too_small(tmp_path, ctx):
    return ["train", f"npz:{ctx.npz}", "--backbone", "mobilenet_v2", *runs(tmp_path)], "at least 32x32"


@case
def weights_without_a_backbone(tmp_path, ctx):
    (tmp_path / "w.h5").write_bytes(b"x")
    return train_args(tmp_path, ctx, "--weights", str(tmp_path / "w.h5")), "--backbone"


@case
def weights_missing(tmp_path, ctx):
    return (["train", f"npz:{ctx.npz}", "--backbone", "mobilenet_v2", "--image-size", "32", "32", "--weights",
             str(tmp_path / "nope.h5"), *runs(tmp_path)], "weights")


@case
def weights_a_text_file(tmp_path, ctx):
    (tmp_path / "w.h5").write_text("not hdf5")
    return (["train", f"npz:{ctx.npz}", "--backbone", "mobilenet_v2:0.35", "--image-size", "32", "32", "--color-mode",
             "rgb", "--weights", str(tmp_path / "w.h5"), "--epochs", "1", *runs(tmp_path)], "not an HDF5")


@case
def weights_of_a_keras_3_model_file_of_another_model(tmp_path, ctx):
    return (["train", f"npz:{ctx.npz}", "--backbone", "mobilenet_v2:0.35", "--image-size", "32", "32", "--color-mode",
             "rgb", "--weights", str(ctx.keras_file), "--epochs", "1", *runs(tmp_path)],
            "the weights file has no layer")


@case
def precision_unknown(tmp_path, ctx):
    return train_args(tmp_path, ctx, "--precision", "fp8"), "invalid choice"




@case
def model_is_a_keras_file(tmp_path, ctx):
    return ["train", f"npz:{ctx.npz}", "--model", str(ctx.keras_file), *runs(tmp_path)], "cnnlab import-keras"


@case
def model_is_a_binary_yaml(tmp_path, ctx):
    (tmp_path / "m.yaml").write_bytes(b"\xff\xfe\x00garbage")
    return ["train", f"npz:{ctx.npz}", "--model", str(tmp_path / "m.yaml"), *runs(tmp_path)], "m.yaml"


@case
def loss_that_does_not_fit_the_labels(tmp_path, ctx):
    return train_args(tmp_path, ctx, "--loss", "binary_crossentropy"), "binary_crossentropy is for 2 classes"


@case
def on_bad_image_skip_that_empties_a_class(tmp_path, ctx):
    from conftest import write_folder

    x, y = bars(4)
    write_folder(tmp_path / "photos", x, y, ["a", "b", "c"])
    for f in (tmp_path / "photos" / "b").iterdir():
        f.write_bytes(b"not an image")
    return (["train", f"folder:{tmp_path / 'photos'}", "--on-bad-image", "skip", "--epochs", "1", *runs(tmp_path)],
            "every image of class b is unreadable")


@case
def compare_with_one_invalid_spec(tmp_path, ctx):
    bad = json.loads(json.dumps(TINY_SPEC))
    bad["layers"][1]["pool_size"] = 30
    return ["compare", f"npz:{ctx.npz}", "--models", f"tree,{spec_file(tmp_path, bad)}", "--out",
            str(tmp_path / "runs" / "cmp")], "pool_size"


# ================================================================ the table

@pytest.mark.parametrize("build", CASES, ids=lambda f: f.__name__)
def test_hostile_input_is_one_line_and_exit_2(build, tmp_path, ctx, capsys, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))  # restored after the row, whatever it sets
    argv, needle = build(tmp_path, ctx)
    capsys.readouterr()
    before = {p for p in tmp_path.rglob("*")}
    code = main(argv)
    line = one_error_line(code, capsys.readouterr().err, needle)
    assert len(line) < 700
    left = tmp_path / "runs"
    assert not left.exists() or not any(p.is_dir() for p in left.iterdir()), "a run or study folder was left behind"
    new = {p for p in tmp_path.rglob("*")} - before
    assert not [p for p in new if p.name.endswith(".tmp") or ".tmp" in p.name], "a temporary file was left behind"
    assert ".tmp" not in line, "a temporary file's name leaked into the message"


# ================================================================ the Python API

API = []


def api(fn):
    API.append(fn)
    return fn


@api
def api_predict_on_an_int(ctx):
    return lambda: cnnlab.predict(123, np.zeros((1, 12, 12), np.uint8)), TypeError, "expected a run"


@api
def api_predict_on_a_list_of_ints(ctx):
    return lambda: cnnlab.predict([1, 2], np.zeros((1, 12, 12), np.uint8)), TypeError, "expected a run"


@api
def api_predict_a_string_that_is_no_file(ctx):
    return lambda: cnnlab.predict(ctx.base, "nope.png"), FileNotFoundError, "input not found"


@api
def api_predict_a_dict(ctx):
    return lambda: cnnlab.predict(ctx.base, {"x": 1}), TypeError, "expected images"


@api
def api_predict_nan_images(ctx):
    return lambda: cnnlab.predict(ctx.base, np.full((2, 12, 12), np.nan)), ValueError, "NaN"


@api
def api_predict_uint16_images(ctx):
    return lambda: cnnlab.predict(ctx.base, np.full((2, 12, 12), 4000, np.uint16)), ValueError, "pixel values span"


@api
def api_predict_an_ambiguous_array(ctx):
    return lambda: cnnlab.predict(ctx.base, np.zeros((12, 12, 3), np.uint8)), ValueError, "x[None]"


@api
def api_predict_a_5d_array(ctx):
    return lambda: cnnlab.predict(ctx.base, np.zeros((1, 1, 12, 12, 1), np.uint8)), ValueError, "5 dimension"


@api
def api_predict_object_arrays(ctx):
    return lambda: cnnlab.predict(ctx.base, np.array([None, 1], dtype=object)), ValueError, "Python objects"


@api
def api_predict_an_empty_list(ctx):
    return lambda: cnnlab.predict(ctx.base, []), ValueError, "empty"


@api
def api_evaluate_on_an_int_source(ctx):
    return lambda: cnnlab.evaluate(ctx.base, 5), TypeError, "expected a source or arrays"


@api
def api_evaluate_on_an_unknown_split(ctx):
    return lambda: cnnlab.evaluate(ctx.base, split="dev"), ValueError, "unknown split"


@api
def api_evaluate_with_labels_out_of_range(ctx):
    x, _ = bars(2)
    return lambda: cnnlab.evaluate(ctx.base, (x, np.full(len(x), 7)), save=False), ValueError, "labels go up to 7"


@api
def api_train_none(ctx):
    return lambda: cnnlab.train(None), TypeError, "expected a source"


@api
def api_train_an_int_source(ctx):
    return lambda: cnnlab.train(3), TypeError, "expected a source"


@api
def api_train_callbacks_as_text(ctx):
    return lambda: cnnlab.train(f"npz:{ctx.npz}", callbacks="x"), TypeError, "callbacks must be a list"


@api
def api_train_a_model_that_is_a_number(ctx):
    return lambda: cnnlab.train(f"npz:{ctx.npz}", model=7), TypeError, "expected a preset name"


@api
def api_train_unknown_key(ctx):
    return lambda: cnnlab.train(f"npz:{ctx.npz}", epoch=3), ValueError, "did you mean 'epochs'"


@api
def api_train_epochs_as_text(ctx):
    return lambda: cnnlab.train(f"npz:{ctx.npz}", epochs="3"), ValueError, "epochs must be a whole number"


@api
def api_train_torch_tensors(ctx):
    x, y = bars(10)
    return (lambda: cnnlab.train((torch.from_numpy(x), torch.from_numpy(y)), model=TINY_SPEC, epochs=1,
                                 quiet=True, runs_dir=str(Path(ctx.npz).parent / "api-runs")), None, None)


@api
def api_train_images_and_labels_of_other_lengths(ctx):
    x, y = bars(10)
    return lambda: cnnlab.train((x, y[:-1]), model=TINY_SPEC), ValueError, "images but"


@api
def api_train_string_labels(ctx):
    x, _ = bars(10)
    return lambda: cnnlab.train((x, np.array(["a"] * len(x))), model=TINY_SPEC), ValueError, "labels"


@api
def api_tune_fractional_trials(ctx):
    return lambda: cnnlab.tune(f"npz:{ctx.npz}", SPACE, trials=2.5), ValueError, "trials must be a whole number"


@api
def api_tune_jobs_as_text(ctx):
    return lambda: cnnlab.tune(f"npz:{ctx.npz}", SPACE, jobs="2"), ValueError, "jobs must be a whole number"


@api
def api_load_run_of_a_missing_folder(ctx):
    return lambda: cnnlab.load_run("nope/never"), FileNotFoundError, "run directory not found"


@api
def api_resume_an_int(ctx):
    return lambda: cnnlab.resume(5), TypeError, "expected a run"


@api
def api_compare_unknown_model(ctx):
    return lambda: cnnlab.compare(f"npz:{ctx.npz}", ["tree", "foresst"]), ValueError, "foresst"


@api
def api_import_keras_missing(ctx):
    return lambda: cnnlab.import_keras("nope.keras"), FileNotFoundError, "not found"


@api
def api_export_keras_of_an_int(ctx):
    return lambda: cnnlab.export_keras(5), TypeError, "expected a run"


@api
def api_viz_kernels_of_a_string(ctx):
    from cnnlab import viz

    return lambda: viz.kernels("conv"), TypeError, "expected a run, a model or kernels"


@pytest.mark.parametrize("build", API, ids=lambda f: f.__name__)
def test_api_mistakes_are_builtin_exceptions_with_one_line(build, ctx, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a row that wrongly starts training writes here, not in the repository
    call, kind, needle = build(ctx)
    if kind is None:  # a clean, correct result
        run = call()
        assert isinstance(run, cnnlab.Run) and run.metrics["epochs_run"] == 1
        return
    with pytest.raises(kind) as e:
        call()
    msg = str(e.value)
    assert needle in msg and "\n" not in msg and len(msg) < 700, msg
    assert isinstance(e.value, cnnlab.CnnlabError), type(e.value)
    assert not (tmp_path / "runs").exists()


def test_the_tables_hold_at_least_150_rows():
    assert len(CASES) + len(API) >= 150, len(CASES) + len(API)
