"""Issue 31, item 1: temperature scaling fitted on the validation split after training, stored
with the run, applied by predict / evaluate / exports, measured (ECE, NLL) before and after; the
arg-max, and so the accuracy, never changes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab.cli import main
from cnnlab.engine.calibration import ece, fit_temperature, nll, scaled
from conftest import TINY_SPEC, bars, one_error_line


@pytest.fixture
def noisy_bars(tmp_path):
    """1,200 bar images with 15% of the training labels flipped (a model cannot be sure of them, so
    its probabilities are worth calibrating), a clean test split, and the runs folder."""
    x, y = bars(400)
    rng = np.random.default_rng(0)
    flip = rng.random(len(y)) < 0.15
    y[flip] = (y[flip] + 1) % 3
    xt, yt = bars(100, seed=2)
    np.savez(tmp_path / "b.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    return {"source": f"npz:{tmp_path / 'b.npz'}", "runs": tmp_path / "runs", "xt": xt, "yt": yt}


def train(n, **kw):
    return cnnlab.train(n["source"], model=TINY_SPEC, epochs=3, runs_dir=str(n["runs"]), quiet=True, batch_size=32,
                        **kw)


def test_the_math():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2000, 5)) * 4
    y = np.array([rng.choice(5, p=np.exp(z / 4) / np.exp(z / 4).sum()) for z in logits])  # true T = 4
    probs = torch.softmax(torch.tensor(logits), 1).numpy()
    t = fit_temperature(probs, y)
    assert 3.3 < t < 4.8  # recovers the temperature the labels were drawn with
    assert np.allclose(scaled(probs, t), torch.softmax(torch.tensor(logits / t), 1).numpy(), atol=1e-6)
    assert (scaled(probs, t).argmax(1) == probs.argmax(1)).all()
    assert nll(scaled(probs, t), y) < nll(probs, y) and ece(scaled(probs, t), y) < ece(probs, y)
    perfect = np.eye(5)[y]
    assert ece(perfect, y) == 0.0


def test_training_fits_it_and_every_prediction_uses_it(noisy_bars, capsys):
    run = train(noisy_bars)
    cal = json.loads((run.path / "calibration.json").read_text())
    t = cal["temperature"]
    assert cal["method"] == "temperature" and cal["fitted_on"] == "validation" and t != 1.0
    assert cal["validation"]["nll"] <= cal["validation"]["nll_raw"] + 1e-9
    m = run.metrics["calibration"]
    assert m["test"]["n"] == 300 and {"ece", "ece_raw", "nll", "nll_raw"} <= set(m["test"])
    probs = cnnlab.load_run(run.path).predict_proba(noisy_bars["xt"])
    run.model.temperature = 1.0
    raw = run.predict_proba(noisy_bars["xt"])
    assert np.abs(probs - scaled(raw, t)).max() < 1e-5
    assert (probs.argmax(1) == raw.argmax(1)).all(), "the accuracy cannot change"
    assert abs(m["test"]["nll"] - nll(probs, noisy_bars["yt"])) < 1e-4
    assert abs(run.metrics["test"]["loss"] - nll(probs, noisy_bars["yt"])) < 1e-4  # metrics are calibrated
    assert main(["plot", str(run.path), "calibration"]) == 0 and (run.path / "calibration.png").is_file()


def test_exports_carry_the_temperature(noisy_bars, tmp_path):
    pytest.importorskip("onnxruntime")
    run = train(noisy_bars)
    assert run.model.temperature != 1.0
    assert main(["export", str(run.path), "--out", str(tmp_path / "m.onnx")]) == 0  # checked against predict
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "m.onnx"))
    got, score = sess.run(None, {"images": noisy_bars["xt"]})
    assert np.abs(got - run.predict_proba(noisy_bars["xt"])).max() < 1e-5
    # the ood score is in the graph too (from the raw logits, the temperature not applied), and its threshold
    energy = run.ood_scores(noisy_bars["xt"])
    assert score.shape == (300,) and (np.abs(score - energy) / np.maximum(1, np.abs(energy))).max() < 1e-5
    meta = sess.get_modelmeta().custom_metadata_map
    assert float(meta["ood_threshold"]) == pytest.approx(run.ood_threshold(0.95))
    assert json.loads(meta["ood_percentiles"]) == run.ood["percentiles"]
    assert main(["export", str(run.path), "--format", "keras", "--out", str(tmp_path / "m.keras")]) == 0
    from cnnlab.models.kerasfiles import keras_proba, parse_keras_spec, read_keras

    kf = read_keras(tmp_path / "m.keras")
    from cnnlab.data.preprocess import Preprocessing

    prep = Preprocessing.from_dict(kf.cnnlab["preprocessing"])
    theirs = keras_proba(kf, parse_keras_spec(kf), noisy_bars["xt"], prep)
    assert np.abs(theirs - run.predict_proba(noisy_bars["xt"])).max() < 1e-5
    assert kf.cnnlab["outputs"] == ["probabilities", "ood_score"]
    assert kf.cnnlab["ood_threshold"] == pytest.approx(run.ood_threshold(0.95))


def test_none_keeps_raw_probabilities_and_calibrate_fits_later(noisy_bars, capsys):
    run = train(noisy_bars, calibration="none")
    assert not (run.path / "calibration.json").exists() and run.metrics["calibration"] == {"method": "none"}
    assert run.model.temperature == 1.0
    raw = run.predict_proba(noisy_bars["xt"])
    fitted = json.loads((run.path / "ood.json").read_text())
    (run.path / "ood.json").unlink()  # as a run trained before cnnlab kept the unknown threshold
    assert main(["calibrate", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert "temperature" in out and "ECE" in out and "test (300 images)" in out
    assert "unknown below ood score" in out  # and the threshold fitted on the same validation images again
    assert np.allclose(json.loads((run.path / "ood.json").read_text())["percentiles"], fitted["percentiles"],
                       atol=1e-4)
    again = cnnlab.load_run(run.path)
    t = again.model.temperature
    assert t != 1.0 and np.abs(again.predict_proba(noisy_bars["xt"]) - scaled(raw, t)).max() < 1e-5
    assert main(["calibrate", str(run.path), "--method", "none"]) == 0
    assert cnnlab.load_run(run.path).model.temperature == 1.0


def test_too_few_held_out_images_leave_it_raw(tmp_path, capsys):
    x, y = bars(30)
    np.savez(tmp_path / "s.npz", x_train=x, y_train=y)
    run = cnnlab.train(f"npz:{tmp_path / 's.npz'}", model=TINY_SPEC, epochs=1, runs_dir=str(tmp_path / "runs"),
                       quiet=True, test_split=0)
    assert run.metrics["calibration"]["method"] == "none" and "at least 200" in run.metrics["calibration"]["why"]
    code = main(["calibrate", str(run.path)])
    one_error_line(code, capsys.readouterr().err, "at least 200")
    code = main(["calibrate", str(run.path), "--split", "tset"])
    one_error_line(code, capsys.readouterr().err, "did you mean test")


def test_no_preset_changes_its_arg_max_under_any_temperature():
    from cnnlab.models import build_module, spec_from
    from cnnlab.models.presets import PRESETS

    torch.manual_seed(0)
    for name in PRESETS:
        model = build_module(spec_from(name)).eval()
        shape = tuple(model.spec.input_shape)
        x = torch.rand(4, shape[2] if len(shape) == 3 else 1, shape[0], shape[1]) * 2
        with torch.no_grad():
            logits = model(x)
            base = model.probabilities(logits).argmax(1)
            for t in (0.3, 1.7, 8.0):
                model.temperature = t
                assert torch.equal(model.probabilities(logits).argmax(1), base), (name, t)


def test_a_resumed_run_fits_its_temperature_on_raw_probabilities(noisy_bars):
    """A run stopped by its time limit is calibrated when it stops; resumed, the temperature is fitted
    again on the raw probabilities of the final weights, never on the first temperature's output."""

    class StopAfterOne(cnnlab.Callback):
        def on_epoch_end(self, state, logs):
            if state.epoch == 1:
                state.request_stop("stopped for the tests", "time_limit")

    first = train(noisy_bars, callbacks=[StopAfterOne()])
    assert first.metrics["status"] == "time_limit" and (first.path / "calibration.json").is_file()
    done = cnnlab.resume(first.path)
    t = json.loads((done.path / "calibration.json").read_text())["temperature"]
    again = cnnlab.load_run(done.path)
    again.model.temperature = 1.0
    ds = cnnlab.load_dataset(noisy_bars["source"])
    assert abs(fit_temperature(again.predict_proba(ds["validation"].x), ds["validation"].y) - t) < 1e-6
