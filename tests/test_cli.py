import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import build_parser, main
from conftest import TINY_SPEC, bars


@pytest.fixture
def spec_file(tmp_path):
    import yaml

    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(TINY_SPEC))
    return p


@pytest.fixture
def trained(npz_path, spec_file, tmp_path):
    runs = tmp_path / "runs"
    code = main(["train", f"npz:{npz_path}", "--model", str(spec_file), "--epochs", "3", "--batch-size", "16",
                 "--runs-dir", str(runs), "--quiet", "--threads", "2", "--no-report"])
    assert code == 0
    return next(runs.iterdir())


def run_cli(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_subcommand_help_shows_defaults(capsys):
    parser = build_parser()
    subs = parser._subparsers._group_actions[0].choices
    for name in subs:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = capsys.readouterr().out
        assert "usage: cnnlab " + name in text
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # undo help's line wrapping
    for needle in ("--epochs", "(default: 20)", "--batch-size", "(default: 32)", "(default: adam)",
                   "--patience", "(default: 2)", "--val-split", "(default: 0.2)", "--no-restore-best",
                   "--rotation-range", "--fill-mode", "(default: nearest)", "--scale", "(default: 255)",
                   "--device", "(default: auto)"):
        assert needle in text, needle


def test_train_prints_report_and_run_dir(npz_path, spec_file, tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", f"npz:{npz_path}", "-m", str(spec_file), "--epochs", "2",
                             "--runs-dir", str(tmp_path / "r"), "--batch-size", "16")
    assert code == 0
    assert "precision" in out and "confusion matrix" in out and "test accuracy" in out
    assert "run written to" in out and "report written to" in out
    run_dir = Path(out.split("run written to ")[1].split()[0])
    assert (run_dir / "report.html").is_file()
    assert "Epoch 1/2" in err and "val_accuracy" in err  # epoch summary lines (a log, not a tty)


def test_evaluate_prints_report_and_saves_json(trained, capsys):
    code, out, _ = run_cli(capsys, "evaluate", str(trained))
    assert code == 0 and "accuracy" in out and "confusion matrix" in out
    ev = json.loads((trained / "evaluation.json").read_text())
    assert len(ev["confusion_matrix"]) == 3 and "macro avg" in ev["classification_report"]
    code, out, _ = run_cli(capsys, "evaluate", str(trained), "--split", "validation", "--json")
    assert code == 0 and json.loads(out)["split"] == "validation"
    assert (trained / "evaluation-validation.json").is_file()


def test_evaluate_on_another_source(trained, tmp_path, capsys):
    x, y = bars(5, seed=9)
    np.savez(tmp_path / "other.npz", x_train=x, y_train=y)
    code, out, _ = run_cli(capsys, "evaluate", str(trained), f"npz:{tmp_path / 'other.npz'}", "--split", "all")
    assert code == 0 and "15 images" in out


def test_predict_single_image_files_folder_and_glob(trained, tmp_path, capsys):
    x, _ = bars(2, seed=4)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, img in enumerate(x):
        Image.fromarray(img[..., 0]).resize((24, 24)).save(folder / f"im{i}.png")  # resized back to 12x12
    code, out, _ = run_cli(capsys, "predict", str(trained), str(folder / "im0.png"))
    assert code == 0 and out.count("\n") == 4  # the class line + one line per class
    assert all(name in out for name in ("0 ", "1 ", "2 "))
    out_csv = tmp_path / "preds.csv"
    code, out, _ = run_cli(capsys, "predict", str(trained), str(folder), "--out", str(out_csv), "--top-k", "2")
    assert code == 0
    rows = list(csv.DictReader(open(out_csv)))
    assert len(rows) == 6
    assert {"input", "class_index", "class_name", "top1_class", "top2_prob", "prob_0", "prob_2"} <= set(rows[0])
    assert abs(sum(float(rows[0][f"prob_{c}"]) for c in "012") - 1) < 1e-4
    code, out, _ = run_cli(capsys, "predict", str(trained), str(folder / "im*.png"))
    assert code == 0 and out.count(".png,") == 6


def test_predict_fills_a_csv_template(trained, tmp_path, capsys):
    x, _ = bars(2, seed=5)
    (tmp_path / "images" / "test").mkdir(parents=True)
    for i, img in enumerate(x):
        Image.fromarray(img[..., 0]).save(tmp_path / "images" / "test" / f"{i}.png")
    template = tmp_path / "test_sample.csv"
    template.write_text("id,class\n" + "".join(f"{i},\n" for i in range(len(x))))
    out = tmp_path / "submission.csv"
    code, _, _ = run_cli(capsys, "predict", str(trained), str(template), "--image-pattern", "images/test/{}.png",
                         "--out", str(out), "--submission")
    assert code == 0
    rows = list(csv.DictReader(open(out)))
    assert list(rows[0]) == ["id", "class"] and len(rows) == 6
    assert all(r["class"] in {"0", "1", "2"} for r in rows)
    code, _, _ = run_cli(capsys, "predict", str(trained), str(template), "--image-pattern", "images/test/{}.png",
                         "--out", str(out))
    assert "class_name" in next(csv.DictReader(open(out)))


def test_config_file_and_flag_override(npz_path, spec_file, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"source: npz:{npz_path}\nmodel: {spec_file}\nepochs: 3\nbatch_size: 16\nquiet: true\n"
                   f"runs_dir: {tmp_path / 'r'}\n")
    code, out, _ = run_cli(capsys, "train", "--config", str(cfg), "--epochs", "1", "--no-report")
    assert code == 0
    run = next((tmp_path / "r").iterdir())
    import yaml

    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["epochs"] == 1 and saved["batch_size"] == 16
    bad = tmp_path / "bad.yaml"
    bad.write_text("epoch: 3\n")
    code, _, err = run_cli(capsys, "train", "--config", str(bad))
    assert code == 2 and "unknown key 'epoch'" in err and "did you mean 'epochs'" in err


def test_models_datasets_summary(capsys):
    code, out, _ = run_cli(capsys, "models")
    assert code == 0 and "fashion-cnn" in out and "333,526" in out and "small-convnet" in out
    code, out, _ = run_cli(capsys, "datasets")
    assert code == 0 and "digits" in out and "fashion-mnist" in out and "apt-get install" in out
    code, out, _ = run_cli(capsys, "summary", "lenet", "--input-shape", "28", "28", "1", "--classes", "5", "--json")
    s = json.loads(out)
    assert s["layers"][-1]["output_shape"] == [None, 5] and s["total_params"] != 61706


def test_export_images_writes_competition_layout(npz_path, tmp_path, capsys):
    out = tmp_path / "export"
    code, msg, _ = run_cli(capsys, "export-images", f"npz:{npz_path}", str(out))
    assert code == 0
    rows = list(csv.DictReader(open(out / "train.csv")))
    assert len(rows) == 90 and list(rows[0]) == ["id", "class"]
    assert (out / "images" / "test" / "29.png").is_file() and (out / "test_sample.csv").is_file()
    # and the export reads back as the same data
    from cnnlab.data.sources import DataOptions, load_source

    back = load_source(f"csv:{out / 'train.csv'}", DataOptions(image_pattern="images/train/{}.png"))
    orig = np.load(npz_path)
    assert np.array_equal(back["train"].x[..., 0], orig["x_train"][..., 0])


BAD_INPUTS = [
    (["train", "fashion-mnist", "--no-download"], "fashion-mnist not found"),
    (["train", "npz:/nonexistent/x.npz"], "cannot read .npz"),
    (["train", "digits", "--model", "resnet"], "unknown preset 'resnet'"),
    (["train", "digits", "--model", "mnist-convnet"], "output of size 0x0"),
    (["train", "digits", "--optimizer", "adamm"], "invalid choice"),
    (["evaluate", "/nonexistent/run"], "run directory not found"),
    (["predict", "/nonexistent/run", "x.png"], "run directory not found"),
    (["summary", "nope"], "unknown preset 'nope'"),
]


@pytest.mark.parametrize("argv,needle", BAD_INPUTS)
def test_bad_input_one_line_exit_2(argv, needle, capsys):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors also exit 2
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err
    if "invalid choice" not in needle:
        assert err.count("\n") == 1 and err.startswith("error: ")
    assert "Traceback" not in err


def test_bad_spec_and_spec_that_does_not_fit(npz_path, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"input_shape": [12, 12, 1], "layers": [{"type": "Conv2D", "filters": 4}]}))
    code, _, err = run_cli(capsys, "train", f"npz:{npz_path}", "--model", str(bad), "--runs-dir", str(tmp_path / "r"))
    assert code == 2 and "missing argument 'kernel_size'" in err and "layer 0" in err
    wrong = dict(TINY_SPEC, layers=TINY_SPEC["layers"][:-1] + [{"type": "Dense", "units": 10, "activation": "softmax"}])
    bad.write_text(json.dumps(wrong))
    code, _, err = run_cli(capsys, "train", f"npz:{npz_path}", "--model", str(bad), "--runs-dir", str(tmp_path / "r"))
    assert code == 2 and "10 units but the data has 3 classes" in err and "units: 3" in err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())  # nothing half-written


def test_bad_folder_csv_and_images_through_cli(tmp_path, capsys, csv_dataset, trained):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "train", f"folder:{tmp_path / 'empty'}")
    assert code == 2 and "no class sub-folders" in err
    code, _, err = run_cli(capsys, "train", f"csv:{csv_dataset}", "--label-column", "label")
    assert code == 2 and "no label column 'label'" in err
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    code, _, err = run_cli(capsys, "predict", str(trained), str(broken))
    assert code == 2 and "broken.jpg" in err and "Traceback" not in err


def test_console_script_has_no_traceback(tmp_path):
    exe = Path(sys.executable).with_name("cnnlab")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "cnnlab.cli"]
    env = dict(os.environ)
    p = subprocess.run(cmd + ["evaluate", str(tmp_path / "missing")], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and p.stderr.startswith("error: run directory not found") and "Traceback" not in p.stderr


def test_missing_and_corrupt_idx_files_through_cli(tmp_path, capsys):
    from test_data import make_idx_set

    folder = tmp_path / "data" / "fashion-mnist"
    make_idx_set(folder)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    code, _, err = run_cli(capsys, "train", "fashion-mnist", "--data-dir", str(tmp_path / "data"), "--no-download")
    assert code == 2 and "missing t10k-labels-idx1-ubyte.gz" in err and err.count("\n") == 1
    make_idx_set(folder)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08garbage")
    code, _, err = run_cli(capsys, "train", "fashion-mnist", "--data-dir", str(tmp_path / "data"))
    assert code == 2 and "corrupt gzip data" in err and "train-images-idx3-ubyte.gz" in err


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["check", "--help"], ["summary", "fashion-cnn"],
                                  ["models"]])
def test_light_commands_import_neither_torch_nor_matplotlib(args):
    code = ("import sys, cnnlab.cli\n"
            "try:\n    cnnlab.cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('heavy:', sorted(m for m in ('torch', 'matplotlib') if m in sys.modules), file=sys.stderr)")
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert "heavy: []" in res.stderr, res.stderr[-500:]


def test_training_imports_no_plotting_library(npz_path, spec_file, tmp_path):
    code = ("import sys, cnnlab.cli\n"
            "rc = cnnlab.cli.main(sys.argv[1:])\n"
            "print('rc', rc, 'matplotlib' in sys.modules, file=sys.stderr)")
    res = subprocess.run([sys.executable, "-c", code, "train", f"npz:{npz_path}", "-m", str(spec_file), "--epochs", "1",
                          "--quiet", "--no-report", "--runs-dir", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=300)
    assert "rc 0 False" in res.stderr, res.stderr[-500:]
