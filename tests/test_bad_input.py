"""The hostile tester's list: every bad input ends in one line `error: ...` and exit code 2 (never an
"internal error", never a traceback), and no run directory is left behind when validation fails.

One row per case: a builder makes the files in ``tmp_path`` and returns the command line and a piece
of the message the user must see.
"""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cnnlab.cli import main
from conftest import TINY_SPEC, bars, one_error_line, train_tiny_run, write_folder

CASES = []


def case(fn):
    CASES.append(fn)
    return fn


def bomb_png(path: Path, width: int = 30000, height: int = 30000) -> None:
    """A valid PNG header claiming width x height 1-bit pixels: 900 million pixels in 100 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def tiny_folder(root: Path, n: int = 6) -> Path:
    x, y = bars(n)
    write_folder(root, x, y, ["horizontal", "vertical", "diagonal"])
    return root


def spec_file(tmp_path: Path, change) -> str:
    spec = yaml.safe_load(yaml.safe_dump(TINY_SPEC))
    change(spec)
    p = tmp_path / f"spec{len(list(tmp_path.glob('spec*.yaml')))}.yaml"
    p.write_text(yaml.safe_dump(spec))
    return str(p)


def train_args(tmp_path: Path, *extra) -> list[str]:
    x, y = bars(10)
    np.savez(tmp_path / "ok.npz", x_train=x, y_train=y)
    return ["train", f"npz:{tmp_path / 'ok.npz'}", "-m", spec_file(tmp_path, lambda s: None), "--epochs", "1",
            "--runs-dir", str(tmp_path / "runs"), "--quiet", "--no-report", *extra]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base")
    return train_tiny_run(folder).path


def damaged_run(tmp_path: Path, base: Path, name: str, content: str) -> str:
    run = tmp_path / "run"
    shutil.copytree(base, run)
    (run / name).write_text(content, encoding="utf-8")
    return str(run)


# ---------------------------------------------------------------- data files

@case
def bomb_in_training_folder(tmp_path, base):
    root = tiny_folder(tmp_path / "photos")
    bomb_png(root / "vertical" / "bomb.png")
    return ["train", f"folder:{root}", "--runs-dir", str(tmp_path / "runs")], "the limit of"


@case
def truncated_png_in_training_folder(tmp_path, base):
    root = tiny_folder(tmp_path / "photos")
    good = next((root / "vertical").iterdir()).read_bytes()
    (root / "vertical" / "cut.png").write_bytes(good[: len(good) // 2])
    return ["train", f"folder:{root}", "--image-size", "12", "12", "--runs-dir", str(tmp_path / "runs")], "cut.png"


@case
def npz_with_object_arrays(tmp_path, base):
    np.savez(tmp_path / "o.npz", x_train=np.array([[1], [2, 3]], dtype=object), y_train=np.array([0, 1]))
    return ["train", f"npz:{tmp_path / 'o.npz'}", "--runs-dir", str(tmp_path / "runs")], "object arrays"


@case
def npz_empty_file(tmp_path, base):
    (tmp_path / "e.npz").write_bytes(b"")
    return ["train", f"npz:{tmp_path / 'e.npz'}", "--runs-dir", str(tmp_path / "runs")], "empty"


@case
def npz_not_a_zip(tmp_path, base):
    (tmp_path / "n.npz").write_bytes(b"this is not a zip archive at all")
    return ["train", f"npz:{tmp_path / 'n.npz'}", "--runs-dir", str(tmp_path / "runs")], "not an .npz"


@case
def npz_without_arrays(tmp_path, base):
    np.savez(tmp_path / "none.npz")
    return ["train", f"npz:{tmp_path / 'none.npz'}", "--runs-dir", str(tmp_path / "runs")], "missing arrays"


@case
def npz_string_labels(tmp_path, base):
    x, _ = bars(4)
    np.savez(tmp_path / "s.npz", x_train=x, y_train=np.array(["a"] * len(x)))
    return ["train", f"npz:{tmp_path / 's.npz'}", "--runs-dir", str(tmp_path / "runs")], "dtype"


@case
def csv_image_column_is_the_label_column(tmp_path, base):
    (tmp_path / "train.csv").write_text("class\n0\n1\n2\n")
    return ["train", f"csv:{tmp_path / 'train.csv'}", "--runs-dir", str(tmp_path / "runs")], "--image-column index"


@case
def csv_conflicting_duplicate_ids(tmp_path, base):
    x, _ = bars(2)
    (tmp_path / "images").mkdir()
    for i in range(4):
        Image.fromarray(x[i, ..., 0]).save(tmp_path / "images" / f"{i}.png")
    (tmp_path / "t.csv").write_text("id,class\n0,0\n1,1\n2,0\n3,1\n1,0\n")
    return (["train", f"csv:{tmp_path / 't.csv'}", "--image-pattern", "images/{}.png",
             "--runs-dir", str(tmp_path / "runs")], "listed twice with different labels")


@case
def csv_pattern_without_placeholder(tmp_path, base):
    (tmp_path / "t.csv").write_text("id,class\n0,0\n1,1\n")
    return (["train", f"csv:{tmp_path / 't.csv'}", "--image-pattern", "images/x.png",
             "--runs-dir", str(tmp_path / "runs")], "has no {}")


@case
def csv_pattern_with_bad_format(tmp_path, base):
    (tmp_path / "t.csv").write_text("id,class\na,0\nb,1\n")
    return (["train", f"csv:{tmp_path / 't.csv'}", "--image-pattern", "images/{:05d}.png",
             "--runs-dir", str(tmp_path / "runs")], "cannot put the id 'a'")


@case
def labels_ko_on_unnamed_csv_classes(tmp_path, base):
    x, y = bars(4)
    (tmp_path / "images").mkdir()
    rows = ["id,class"]
    for i in range(len(x)):
        Image.fromarray(x[i, ..., 0]).save(tmp_path / "images" / f"{i}.png")
        rows.append(f"{i},{y[i]}")
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    return (["train", f"csv:{tmp_path / 't.csv'}", "--image-pattern", "images/{}.png", "--labels", "ko",
             "--runs-dir", str(tmp_path / "runs")], "--labels ko translates")


@case
def labels_ko_on_folder_classes(tmp_path, base):
    root = tiny_folder(tmp_path / "photos")
    return ["train", f"folder:{root}", "--labels", "ko", "--runs-dir", str(tmp_path / "runs")], "horizontal"


@case
def class_names_file_missing(tmp_path, base):
    return train_args(tmp_path, "--class-names", str(tmp_path / "nope.txt")), "cannot read class names"


@case
def single_class_folder(tmp_path, base):
    x, y = bars(3, classes=1)
    write_folder(tmp_path / "one", x, y, ["only"])
    return ["train", f"folder:{tmp_path / 'one'}", "--runs-dir", str(tmp_path / "runs")], "only one class"


# ---------------------------------------------------------------- specs

@case
def spec_type_is_a_list(tmp_path, base):
    return train_args(tmp_path, "-m", spec_file(tmp_path, lambda s: s["layers"][0].update(type=["Conv2D"]))), \
        "is not a layer name"


@case
def spec_batchnorm_momentum_text(tmp_path, base):
    def change(s):
        s["layers"].insert(1, {"type": "BatchNormalization", "momentum": "high"})
    return train_args(tmp_path, "-m", spec_file(tmp_path, change)), "momentum='high'"


@case
def spec_batchnorm_negative_epsilon(tmp_path, base):
    def change(s):
        s["layers"].insert(1, {"type": "BatchNormalization", "epsilon": -1})
    return train_args(tmp_path, "-m", spec_file(tmp_path, change)), "epsilon=-1"


@case
def spec_absurd_units(tmp_path, base):
    return train_args(tmp_path, "-m", spec_file(tmp_path, lambda s: s["layers"][3].update(units=10**7))), \
        "parameters"


@case
def spec_absurd_filters(tmp_path, base):
    return train_args(tmp_path, "-m", spec_file(tmp_path, lambda s: s["layers"][0].update(filters=10**9))), \
        "values per image"


@case
def spec_not_a_mapping(tmp_path, base):
    (tmp_path / "s.yaml").write_text("- just\n- a list\n")
    return train_args(tmp_path, "-m", str(tmp_path / "s.yaml")), "not a mapping"


# ---------------------------------------------------------------- flags and config values

@case
def negative_weight_decay(tmp_path, base):
    return train_args(tmp_path, "--weight-decay", "-1"), "weight_decay"


@case
def negative_momentum(tmp_path, base):
    return train_args(tmp_path, "--momentum", "-1"), "momentum"


@case
def infinite_lr(tmp_path, base):
    return train_args(tmp_path, "--lr", "inf"), "lr must be a finite number"


@case
def nan_min_delta(tmp_path, base):
    return train_args(tmp_path, "--min-delta", "nan"), "min_delta"


@case
def zero_image_size(tmp_path, base):
    return train_args(tmp_path, "--image-size", "0", "0"), "image_size"


@case
def absurd_image_size(tmp_path, base):
    return train_args(tmp_path, "--image-size", "100000", "100000"), "pixels per image"


@case
def batch_too_large_for_memory(tmp_path, base):
    return train_args(tmp_path, "--batch-size", "100000000"), "GiB"


@case
def summary_with_one_class(tmp_path, base):
    return ["summary", "lenet", "--classes", "1"], "at least 2 classes"


@case
def export_images_negative_limit(tmp_path, base):
    return ["export-images", "digits", str(tmp_path / "out"), "--limit", "-1"], "limit must be >= 1"


@case
def plot_into_a_folder_that_cannot_exist(tmp_path, base):
    (tmp_path / "file").write_text("x")
    return ["plot", str(base), "curves", "--out", str(tmp_path / "file" / "c.png")], "c.png"


@case
def quoted_false_in_config(tmp_path, base):
    (tmp_path / "c.yaml").write_text("horizontal_flip: 'false'\n")
    return train_args(tmp_path, "--config", str(tmp_path / "c.yaml")), "horizontal_flip must be true or false"


@case
def text_batch_size_in_config(tmp_path, base):
    (tmp_path / "c.yaml").write_text("batch_size: big\n")
    return train_args(tmp_path, "--config", str(tmp_path / "c.yaml")), "batch_size must be a whole number"


@case
def unknown_config_key(tmp_path, base):
    (tmp_path / "c.yaml").write_text("epoch: 3\n")
    return train_args(tmp_path, "--config", str(tmp_path / "c.yaml")), "did you mean 'epochs'"


@case
def runs_dir_is_a_file(tmp_path, base):
    (tmp_path / "file").write_text("x")
    args = train_args(tmp_path)
    args[args.index("--runs-dir") + 1] = str(tmp_path / "file")
    return args, "runs folder"


@case
def read_only_runs_dir(tmp_path, base):
    args = train_args(tmp_path)
    if os.getuid() == 0:  # root writes anywhere chmod allows nothing: use a read-only file system
        target = "/sys/cnnlab-runs"
        if not Path("/sys").is_dir() or os.access("/sys/fs", os.W_OK) and _can_mkdir("/sys"):
            pytest.skip("no read-only file system to write to as root")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = str(ro / "runs")
    args[args.index("--runs-dir") + 1] = target
    return args, "runs folder"


def _can_mkdir(parent: str) -> bool:
    try:
        os.mkdir(os.path.join(parent, "cnnlab-probe"))
    except OSError:
        return False
    os.rmdir(os.path.join(parent, "cnnlab-probe"))
    return True


# ---------------------------------------------------------------- damaged runs

@case
def damaged_config_yaml(tmp_path, base):
    return ["evaluate", damaged_run(tmp_path, base, "config.yaml", "epochs: [1\n")], "config.yaml"


@case
def damaged_classes_json(tmp_path, base):
    return ["predict", damaged_run(tmp_path, base, "classes.json", "{not json"), str(base)], "classes.json"


@case
def two_class_names_for_three_outputs(tmp_path, base):
    run = damaged_run(tmp_path, base, "classes.json", '{"class_names": ["a", "b"]}')
    return ["evaluate", run], "2 classes but the model has 3 outputs"


@case
def damaged_preprocessing_json(tmp_path, base):
    return ["evaluate", damaged_run(tmp_path, base, "preprocessing.json", '{"mode": "255"}')], "preprocessing.json"


@case
def damaged_history_csv(tmp_path, base):
    return ["plot", damaged_run(tmp_path, base, "history.csv", "epoch,loss\n1,abc\n"), "curves"], "history.csv"


@case
def damaged_data_json(tmp_path, base):
    return ["report", damaged_run(tmp_path, base, "data.json", "[1, 2]")], "data.json"


@case
def damaged_metrics_json(tmp_path, base):
    return ["report", damaged_run(tmp_path, base, "metrics.json", "")], "metrics.json"


@case
def damaged_weights(tmp_path, base):
    return ["evaluate", damaged_run(tmp_path, base, "model.safetensors", "garbage")], "weights"


# ---------------------------------------------------------------- using runs

@case
def predict_template_without_pattern(tmp_path, base):
    (tmp_path / "test_sample.csv").write_text("id,class\n0,\n1,\n")
    return ["predict", str(base), str(tmp_path / "test_sample.csv"), "--submission",
            "--out", str(tmp_path / "sub.csv")], "--image-pattern"


@case
def predict_missing_file(tmp_path, base):
    return ["predict", str(base), str(tmp_path / "nope.png")], "input not found"


@case
def predict_not_an_image(tmp_path, base):
    (tmp_path / "x.png").write_text("hello")
    return ["predict", str(base), str(tmp_path / "x.png")], "cannot read image"


@case
def predict_bomb(tmp_path, base):
    bomb_png(tmp_path / "b.png")
    return ["predict", str(base), str(tmp_path / "b.png")], "the limit of"


@case
def evaluate_on_unknown_class_names(tmp_path, base):
    x, y = bars(4)
    write_folder(tmp_path / "other", x, y, ["cats", "dogs", "birds"])
    return ["evaluate", str(base), f"folder:{tmp_path / 'other'}", "--split", "all"], "not among the run's classes"


@case
def evaluate_on_more_classes(tmp_path, base):
    return ["evaluate", str(base), "digits", "--split", "all"], "the run has 3 classes"


@case
def plot_kernels_without_conv(tmp_path, base):
    folder = tmp_path / "mlp"
    folder.mkdir()
    x, y = bars(10)
    np.savez(folder / "b.npz", x_train=x, y_train=y)
    spec = {"input_shape": [12, 12, 1], "layers": [{"type": "Flatten"}, {"type": "Dense", "units": 3,
                                                                       "activation": "softmax"}]}
    import cnnlab

    run = cnnlab.train(f"npz:{folder / 'b.npz'}", model=spec, epochs=1, runs_dir=str(folder / "runs"), quiet=True)
    return ["plot", str(run.path), "kernels"], "no Conv2D"


@case
def serve_bad_port(tmp_path, base):
    return ["serve", str(base), "--port", "70000"], "invalid port"


@case
def not_a_run(tmp_path, base):
    return ["evaluate", str(tmp_path)], "not a cnnlab run"


@pytest.mark.parametrize("build", CASES, ids=lambda f: f.__name__)
def test_bad_input_is_one_line_and_exit_2(build, tmp_path, base_run, capsys):
    argv, needle = build(tmp_path, base_run)
    runs = tmp_path / "runs"
    code = main(argv)
    one_error_line(code, capsys.readouterr().err, needle)
    assert not runs.exists() or not any(runs.iterdir()), "a run directory was left behind"
