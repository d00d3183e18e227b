"""Issue 32, items 3 and 4: every export checked on the whole test split (export-check.json, the
parity line), a disagreeing file refused, --check-only, and MODEL_CARD.md / metadata.json."""

import json

import numpy as np
import pytest

import cnnlab
from cnnlab.cli import main
from conftest import TINY_SPEC, bars, one_error_line, train_tiny_run

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("parity"), ["가로", "세로", "대각선"])


def corrupt_one_weight(path) -> None:
    """Add 5 to one value of the first bias in an ONNX file (every image's features move)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    init = next(t for t in model.graph.initializer if "bias" in t.name)
    arr = numpy_helper.to_array(init).copy()
    arr.flat[0] += 5.0
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(path))


def test_every_export_is_checked_on_the_whole_test_split_and_says_so(run, tmp_path, capsys):
    out = tmp_path / "ship"
    out.mkdir()
    assert main(["export", str(run.path), "--out", str(out / "m.onnx")]) == 0
    printed = capsys.readouterr().out
    assert "parity: 18/18 top-1 agree, max |Δp|" in printed and "(test split, onnxruntime-cpu" in printed
    assert main(["export", str(run.path), "--format", "keras", "--out", str(out / "m.keras")]) == 0
    checks = json.loads((out / "export-check.json").read_text())
    assert set(checks) == {"m.onnx", "m.keras"}  # one entry per file in the folder
    for name, runtime in (("m.onnx", "onnxruntime-cpu"), ("m.keras", "keras-")):
        c = checks[name]
        assert c["images"] == 18 and c["agree"] == 18 and c["split"] == "test" and c["runtime"].startswith(runtime)
        assert 0 <= c["mean_abs_dp"] <= c["max_abs_dp"] <= 1e-5 and c["ood_score_max_rel_diff"] <= 1e-5
        assert set(c["images_per_s"]) == {"torch", c["runtime"]} and min(c["images_per_s"].values()) > 0
    # the model card: what a person deciding to use the model needs, from the run's records
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    for section in ("## Model", "## Data", "## Classes", "## Training recipe", "## Test results",
                    "## Calibration and \"unknown\"", "## Export parity", "## Reproduce", "## Software"):
        assert section in card, section
    assert f"{run.spec.total_params:,} parameters" in card and "| 1 | 세로 |" in card
    assert run.data["fingerprints"]["test"] in card and "precision | recall" in card
    assert f"cnnlab train --config {run.path / 'config.yaml'}" in card
    assert card.count("parity: 18/18 top-1 agree") == 2 and "Unknown below ood score" in card
    meta = json.loads((out / "metadata.json").read_text(encoding="utf-8"))
    assert meta["class_names"] == ["가로", "세로", "대각선"] and meta["params"] == run.spec.total_params
    assert meta["test"]["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])
    assert meta["unknown"]["threshold_keep_95"] == pytest.approx(run.ood_threshold(0.95))
    assert set(meta["parity"]) == {"m.onnx", "m.keras"} and meta["versions"]["exported_with"]["onnxruntime"]


def test_a_run_without_a_test_split_is_checked_on_its_validation_split(tmp_path):
    x, y = bars(30)
    np.savez(tmp_path / "b.npz", x_train=x, y_train=y)
    r = cnnlab.train(f"npz:{tmp_path / 'b.npz'}", model=TINY_SPEC, epochs=1, runs_dir=str(tmp_path / "runs"),
                     quiet=True, test_split=0)
    assert "test" not in r.data["splits"]
    result = cnnlab.export_keras(r, tmp_path / "m.keras")
    assert result["parity"].split == "validation" and result["parity"].images == r.data["splits"]["validation"]
    assert "has no test split" in (tmp_path / "MODEL_CARD.md").read_text()


def test_an_export_that_disagrees_is_refused_and_leaves_nothing(run, tmp_path, monkeypatch, capsys):
    from cnnlab import exporting

    real = exporting.check_onnx

    def corrupted(path, *args, **kwargs):  # one weight changed in the file between writing and checking
        corrupt_one_weight(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(exporting, "check_onnx", corrupted)
    out = tmp_path / "out"
    out.mkdir()
    code = main(["export", str(run.path), "--out", str(out / "m.onnx")])
    line = one_error_line(code, capsys.readouterr().err, "the exported model disagrees with the run")
    assert "parity: " in line and "the file was not kept" in line
    assert list(out.iterdir()) == []  # no model, no temporary file, no certificate, no card


def test_check_only_rechecks_a_file_and_finds_a_corrupted_one(run, tmp_path, capsys):
    path = tmp_path / "m.onnx"
    assert main(["export", str(run.path), "--out", str(path)]) == 0
    capsys.readouterr()
    assert main(["export", "--check-only", str(path), str(run.path)]) == 0
    assert "parity: 18/18 top-1 agree" in capsys.readouterr().out
    corrupt_one_weight(path)
    code = main(["export", "--check-only", str(path), str(run.path)])
    one_error_line(code, capsys.readouterr().err, "the file disagrees with the run")
    record = json.loads((tmp_path / "export-check.json").read_text())["m.onnx"]
    assert record["refused"] and record["max_abs_dp"] > 1e-5  # the failed check is on record too
    for bad, needle in ((tmp_path / "none.onnx", "not there"), (tmp_path / "export-check.json", "cannot check")):
        code = main(["export", "--check-only", str(bad), str(run.path)])
        one_error_line(code, capsys.readouterr().err, needle)


def test_parity_rules():
    from cnnlab.parity import measure

    about = {"file": "m.onnx", "runtime": "rt", "split": "test"}
    ours = np.array([[0.7, 0.3], [0.5, 0.5 - 1e-7], [0.1, 0.9]])
    near_tie = np.array([[0.7, 0.3], [0.5 - 2e-7, 0.5 + 1e-7], [0.1, 0.9]])
    p = measure(ours, near_tie, **about)
    assert p.agree == 2 and p.refused is None  # a tie within the tolerance may flip the class
    p = measure(ours, ours[:, ::-1], **about)
    assert p.refused and "differs by" in p.refused
    int8 = measure(np.eye(2)[np.r_[np.zeros(99, int), 1]], np.eye(2)[np.zeros(100, int)], precision="int8", **about)
    assert int8.refused is None and int8.line() == "parity: 99/100 top-1 agree, max |Δp| 1.0e+00 (int8)"
    assert measure(ours, ours, (np.ones(3), None), **about).refused == "the file gives no ood score"


def test_int8_export_reports_size_speed_and_accuracy_against_float32(tmp_path, capsys):
    x, y = bars(60)
    xt, yt = bars(40, seed=2)
    np.savez(tmp_path / "b.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    r = cnnlab.train(f"npz:{tmp_path / 'b.npz'}", model=TINY_SPEC, epochs=3, runs_dir=str(tmp_path / "runs"),
                     quiet=True, batch_size=16)
    out = tmp_path / "q" / "m.int8.onnx"
    out.parent.mkdir()
    assert main(["export", str(r.path), "--quantize", "int8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(int8)" in printed and "x smaller" in printed and "test accuracy:" in printed
    c = json.loads((out.parent / "export-check.json").read_text())["m.int8.onnx"]
    assert c["precision"] == "int8" and c["agree"] >= 0.99 * c["images"] == 0.99 * 120
    assert c["file_bytes"]["int8"] < c["file_bytes"]["float32"]
    assert set(c["images_per_s"]) == {"torch", "onnxruntime-cpu", "onnxruntime-cpu float32"}
    assert abs(c["accuracy"]["int8"] - c["accuracy"]["float32"]) <= 0.05
    import onnx

    model = onnx.load(str(out))
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)  # really quantized
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["quantization"])["calibration_images"] == r.data["splits"]["train"]  # <= 1,000 of them
    assert "(int8)" in (out.parent / "MODEL_CARD.md").read_text()


@pytest.mark.parametrize("argv,needle", [(["--quantize", "int4"], "--quantize"),
                                         (["--format", "keras", "--quantize", "int8"], "is for ONNX exports")])
def test_bad_quantize_requests_are_one_line_and_leave_nothing(run, tmp_path, argv, needle, capsys):
    out = tmp_path / "o"
    out.mkdir()
    code = main(["export", str(run.path), "--out", str(out / "m.onnx"), *argv])
    one_error_line(code, capsys.readouterr().err, needle)
    assert list(out.iterdir()) == []


def triton_model_config():
    """Triton's own ModelConfig message (tritonclient's model_config_pb2.py, loaded by path: the
    package's dependencies pin an older protobuf than onnx's, so scripts/install.sh installs its
    files alone)."""
    import importlib.util

    found = importlib.util.find_spec("tritonclient")
    if found is None or not found.submodule_search_locations:
        pytest.skip("tritonclient is not installed (scripts/install.sh installs it)")
    path = f"{list(found.submodule_search_locations)[0]}/grpc/model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_triton_repository_has_a_config_triton_parses_that_matches_the_model(run, tmp_path, capsys):
    import onnx
    from google.protobuf import text_format

    pb = triton_model_config()
    repo = tmp_path / "model_repository"
    assert main(["export", str(run.path), "--format", "triton", "--out", str(repo)]) == 0
    printed = capsys.readouterr().out
    assert "parity: 18/18 top-1 agree" in printed and "tritonserver --model-repository=/models" in printed
    folder = repo / run.spec.name
    cfg = text_format.Parse((folder / "config.pbtxt").read_text(), pb.ModelConfig())
    assert cfg.name == folder.name and cfg.backend == "onnxruntime" and cfg.max_batch_size > 0
    assert cfg.HasField("dynamic_batching")
    graph = onnx.load(str(folder / "1" / "model.onnx")).graph
    onnx_types = {onnx.TensorProto.UINT8: pb.TYPE_UINT8, onnx.TensorProto.FLOAT: pb.TYPE_FP32}
    for declared, actual in ((cfg.input, graph.input), (cfg.output, graph.output)):
        assert [t.name for t in declared] == [t.name for t in actual]
        for t, a in zip(declared, actual):
            assert t.data_type == onnx_types[a.type.tensor_type.elem_type]
            shape = [d.dim_value for d in a.type.tensor_type.shape.dim][1:]  # Triton's dims leave out the batch
            assert list(t.reshape.shape if t.HasField("reshape") else t.dims) == shape
    assert (folder / "labels.txt").read_text(encoding="utf-8").split() == ["가로", "세로", "대각선"]
    assert (folder / "1" / "export-check.json").is_file() and (folder / "1" / "MODEL_CARD.md").is_file()
    # a second export never overwrites a model in the repository; a file is not a repository
    code = main(["export", str(run.path), "--format", "triton", "--out", str(repo)])
    one_error_line(code, capsys.readouterr().err, "already holds a model named")
    (tmp_path / "file").write_text("x")
    code = main(["export", str(run.path), "--format", "triton", "--out", str(tmp_path / "file")])
    one_error_line(code, capsys.readouterr().err, "is a folder")
    assert sorted(p.name for p in repo.iterdir()) == [folder.name]  # no temporary folder left


def test_a_failed_triton_export_leaves_nothing(run, tmp_path, monkeypatch, capsys):
    from cnnlab import exporting

    real = exporting.check_onnx

    def corrupted(path, *args, **kwargs):
        corrupt_one_weight(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(exporting, "check_onnx", corrupted)
    repo = tmp_path / "repo"
    code = main(["export", str(run.path), "--format", "triton", "--out", str(repo)])
    one_error_line(code, capsys.readouterr().err, "disagrees with the run")
    assert list(repo.iterdir()) == []
