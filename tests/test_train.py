import json

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab.engine.callbacks import early_stopping
from cnnlab.errors import TrainingError
from cnnlab.models.build import SpecModel
from cnnlab.runs import load_run, load_weights
from cnnlab.viz.inspect import grad_cam
from conftest import TINY_SPEC


def test_early_stopping_rule_matches_keras():
    stop, best, reason = early_stopping([0.5, 0.4, 0.45, 0.46], "min", 2)
    assert (stop, best) == (True, 1) and "patience 2" in reason
    assert early_stopping([0.5, 0.4, 0.45], "min", 2)[0] is False
    assert early_stopping([0.5, 0.4, 0.399], "min", 1, min_delta=0.01)[:2] == (True, 1)
    assert early_stopping([0.8, 0.9, 0.85, 0.86], "max", 2)[:2] == (True, 1)
    assert early_stopping([0.5, 0.6, 0.7, 0.8], "min", None)[:2] == (False, 0)


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_dropout_drops_the_configured_fraction_and_is_seeded(rate):
    from cnnlab.models.build import Dropout

    x = torch.ones(64, 16, 14, 14).contiguous(memory_format=torch.channels_last).requires_grad_()
    drop = Dropout(rate).train()
    torch.manual_seed(3)
    out = drop(x)
    assert abs((out == 0).float().mean().item() - rate) < 0.01
    assert abs(out.mean().item() - 1.0) < 0.02  # inverted dropout keeps the expected value
    assert out.is_contiguous(memory_format=torch.channels_last)
    out.sum().backward()
    assert torch.equal(x.grad, out.detach())  # the gradient passes through kept units only
    torch.manual_seed(3)
    assert torch.equal(drop(x), out)
    assert drop.eval()(x) is x


def tiny_train(npz_path, tmp_path, **kw):
    opts = dict(epochs=4, batch_size=16, seed=1, runs_dir=str(tmp_path / "runs"), quiet=True, threads=2)
    opts.update(kw)
    return cnnlab.train(f"npz:{npz_path}", model=kw.pop("model", TINY_SPEC), **opts)


def test_train_writes_a_complete_run_directory(npz_path, tmp_path):
    run = tiny_train(npz_path, tmp_path, epochs=6)
    names = {p.name for p in run.path.iterdir()}
    assert {"config.yaml", "spec.json", "model.safetensors", "best.safetensors", "preprocessing.json",
            "classes.json", "data.json", "history.csv", "metrics.json", "evaluation.json"} <= names
    assert not any(n.endswith(".tmp") for n in names)
    import os
    import stat

    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((run.path / "metrics.json").stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600
    m = json.loads((run.path / "metrics.json").read_text())
    assert {"loss", "accuracy"} <= set(m["test"]) and m["epochs_run"] >= 1 and m["best_epoch"] >= 1
    assert m["train_time_s"] > 0 and m["wall_time_s"] >= m["train_time_s"]
    env = m["environment"]
    assert env["seed"] == 1 and env["device"] == "cpu" and env["threads"] == 2 and env["torch"]
    assert env["scikit_learn"] and env["allocator"]  # e.g. "glibc, freed memory kept" (engine/allocator.py)
    assert m["test"]["accuracy"] > 0.6  # bars are easy: well above chance (0.33)
    assert run.path.name.endswith("-tiny-npz")


def test_same_seed_same_run(npz_path, tmp_path):
    a = tiny_train(npz_path, tmp_path, epochs=2, patience=None)
    b = tiny_train(npz_path, tmp_path, epochs=2, patience=None)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    wa, wb = load_weights(a.path / "model.safetensors"), load_weights(b.path / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_early_stopping_restores_the_best_epoch(npz_path, tmp_path):
    # A too-large learning rate makes validation loss bounce, so the last epoch is not the best.
    kw = dict(epochs=8, lr=0.05, optimizer="sgd", momentum=0.9, patience=2, seed=3)
    run = tiny_train(npz_path, tmp_path, **kw)
    hist = run.history
    best = min(range(len(hist)), key=lambda i: hist[i]["val_loss"])
    assert run.metrics["best_epoch"] == best + 1
    if best + 1 == len(hist):
        pytest.skip("this seed improved every epoch")
    # The saved model is the best epoch's: same weights as the best checkpoint ...
    wm, wb = load_weights(run.path / "model.safetensors"), load_weights(run.path / "best.safetensors")
    assert all(torch.equal(wm[k], wb[k]) for k in wm)
    # ... and it reproduces the best epoch's validation loss, not the last one's.
    ds = cnnlab.load_dataset(f"npz:{npz_path}", seed=3)
    probs = run.predict_proba(ds["validation"].x)
    val_loss = float(-np.log(np.clip(probs[np.arange(len(probs)), ds["validation"].y], 1e-7, 1)).mean())
    assert val_loss == pytest.approx(hist[best]["val_loss"], rel=1e-3)
    # Opting out keeps the last epoch's weights.
    last = tiny_train(npz_path, tmp_path, restore_best=False, **kw)
    wl = load_weights(last.path / "model.safetensors")
    assert any(not torch.equal(wl[k], wb[k]) for k in wl)


def test_saved_run_reloads_and_predicts_identically(npz_path, tmp_path):
    run = tiny_train(npz_path, tmp_path)
    x = cnnlab.load_dataset(f"npz:{npz_path}")["test"].x
    again = load_run(run.path)
    assert np.array_equal(run.predict_proba(x), again.predict_proba(x))
    assert again.class_names == run.class_names and again.spec.total_params == run.spec.total_params


def test_nan_loss_stops_keeps_best_checkpoint_and_says_so(npz_path, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = SpecModel.loss

    def flaky(self, logits, y, *args):
        calls["n"] += 1
        loss = original(self, logits, y, *args)
        return loss * float("nan") if calls["n"] > 9 else loss  # epoch 1 has 5 batches

    monkeypatch.setattr(SpecModel, "loss", flaky)
    with pytest.raises(TrainingError) as e:
        tiny_train(npz_path, tmp_path, epochs=5, batch_size=16)
    msg = e.value.line()
    assert "NaN" in msg and "epoch 2" in msg and "best checkpoint (epoch 1)" in msg
    run_dir = next((tmp_path / "runs").iterdir())
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "nan_loss"
    w = load_weights(run_dir / "model.safetensors")
    assert all(torch.isfinite(v.float()).all() for v in w.values())


def test_ctrl_c_keeps_best_checkpoint_and_marks_run_interrupted(npz_path, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = SpecModel.loss

    def interrupt(self, logits, y, *args):
        calls["n"] += 1
        if calls["n"] == 9:  # epoch 1: 5 batches + validation; this is epoch 2's 3rd batch
            raise KeyboardInterrupt
        return original(self, logits, y, *args)

    monkeypatch.setattr(SpecModel, "loss", interrupt)
    run = tiny_train(npz_path, tmp_path, epochs=5, batch_size=16)
    assert run.metrics["status"] == "interrupted" and run.metrics["epochs_run"] == 1
    assert run.metrics["best_epoch"] == 1 and "test" not in run.metrics
    assert (run.path / "model.safetensors").is_file() and (run.path / "best.safetensors").is_file()


def test_augmentation_and_options_train(npz_path, tmp_path):
    run = tiny_train(npz_path, tmp_path, epochs=2, rotation_range=10, width_shift_range=0.1,
                     zoom_range=0.1, horizontal_flip=True, random_crop=1, random_erasing=0.2,
                     optimizer="rmsprop", scale="standard", monitor="val_accuracy")
    assert run.metrics["epochs_run"] == 2 and run.preprocessing.mode == "standard"


@pytest.mark.parametrize("opt", ["adam", "adamw", "sgd", "rmsprop"])
def test_every_optimizer_trains(npz_path, tmp_path, opt):
    run = tiny_train(npz_path, tmp_path, epochs=1, optimizer=opt)
    assert np.isfinite(run.history[0]["loss"])


def test_binary_head_trains_with_sigmoid(tmp_path):
    from conftest import bars

    x, y = bars(20, classes=2)
    np.savez(tmp_path / "b.npz", x_train=x, y_train=y)
    spec = {"input_shape": [12, 12, 1], "layers": [
        {"type": "Conv2D", "filters": 4, "kernel_size": 3, "activation": "relu"},
        {"type": "GlobalAveragePooling2D"}, {"type": "Dense", "units": 1, "activation": "sigmoid"}]}
    run = cnnlab.train(f"npz:{tmp_path / 'b.npz'}", model=spec, epochs=2, runs_dir=str(tmp_path / "r"), quiet=True)
    probs = run.predict_proba(x[:5])
    assert probs.shape == (5, 2) and np.allclose(probs.sum(1), 1)


def test_a_model_trains_again_after_predicting(npz_path, tmp_path):
    """Prediction (inference mode) must not turn the weights into inference-only tensors."""
    from cnnlab.config import TrainConfig
    from cnnlab.data.preprocess import Preprocessing
    from cnnlab.engine.loop import FitData, fit, plan_from, to_tensor

    run = tiny_train(npz_path, tmp_path, epochs=1)
    x = cnnlab.load_dataset(f"npz:{npz_path}")["train"]
    run.predict_proba(x.x[:4])
    data = FitData(to_tensor(x.x, "cpu"), torch.from_numpy(x.y), None, None, Preprocessing.fit("255", x.x))
    result = fit(run.model.cpu(), data, plan_from(TrainConfig(epochs=1, batch_size=16)), [])
    assert result.epochs_run == 1


def test_time_limit_stops_training_and_keeps_the_epoch_reached(npz_path, tmp_path):
    run = tiny_train(npz_path, tmp_path, epochs=500, patience=None, time_limit=0.5)
    m = run.metrics
    assert m["status"] == "time_limit" and "time limit of 0.5 s" in m["stop_reason"]
    assert 1 <= m["epochs_run"] < 500 and m["best_epoch"] is not None
    assert "test" in m and (run.path / "model.safetensors").is_file()
    with pytest.raises(cnnlab.CnnlabError, match="time_limit must be > 0"):
        tiny_train(npz_path, tmp_path, time_limit=0)


def test_a_frozen_whitening_first_layer_trains_and_stays_fixed(npz_path, tmp_path):
    spec = json.loads(json.dumps(TINY_SPEC))
    spec["layers"][0].update(kernel_initializer="patch_whitening", trainable=False)
    run = cnnlab.train(f"npz:{npz_path}", model=spec, epochs=4, batch_size=16, seed=1, quiet=True,
                       runs_dir=str(tmp_path / "runs"))
    assert run.spec.non_trainable_params == 8 * 9 + 8
    init = json.loads((run.path / "weights_init.json").read_text())
    w = load_weights(run.path / "model.safetensors")
    first, dense = w["blocks.0.0.weight"], w["blocks.3.0.weight"]
    assert torch.equal(first[4:], -first[:4])  # +/- principal components of the patches
    assert float(first.double().std(correction=0)) == pytest.approx(init["conv2d"]["std"], rel=1e-6)  # not trained
    assert float(dense.double().std(correction=0)) != pytest.approx(init["dense"]["std"], rel=1e-3)  # the rest is
    assert run.metrics["test"]["accuracy"] > 0.6
    cam, _ = grad_cam(run, cnnlab.load_dataset(f"npz:{npz_path}")["test"].x[:2])  # the only conv is frozen
    assert cam.shape == (2, 12, 12) and np.isfinite(cam).all()


def test_user_callbacks_see_every_hook_and_can_stop_training(npz_path, tmp_path):
    seen = []

    class Recorder(cnnlab.Callback):
        def on_train_begin(self, state):
            seen.append("begin")

        def on_batch_end(self, state, step):
            seen.append("batch") if step == 1 else None

        def on_epoch_end(self, state, logs):
            seen.append(("epoch", state.epoch, round(logs["val_loss"], 6)))
            if state.epoch == 2:
                state.request_stop("enough after two epochs")

        def on_train_end(self, state):
            seen.append(("end", state.status))

    run = tiny_train(npz_path, tmp_path, epochs=6, patience=None, callbacks=[Recorder()])
    assert seen[0] == "begin" and seen.count("batch") == 2 and seen[-1] == ("end", "stopped")
    assert [e[1] for e in seen if isinstance(e, tuple) and e[0] == "epoch"] == [1, 2]
    assert [h["val_loss"] for h in run.history] == pytest.approx([e[2] for e in seen if e[0] == "epoch"], rel=1e-5)
    assert run.metrics["status"] == "stopped" and run.metrics["stop_reason"] == "enough after two epochs"
    assert run.metrics["epochs_run"] == 2 and "test" in run.metrics
