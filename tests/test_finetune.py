"""Fine-tuning from an earlier run (issue 17, item 5): --init-from and --freeze-until."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import cnnlab
from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from conftest import TINY_SPEC, bars

OPTS = dict(epochs=2, batch_size=16, quiet=True, threads=2, check=False)
BN_SPEC = dict(TINY_SPEC, name="bn", layers=[TINY_SPEC["layers"][0], {"type": "BatchNormalization"},
                                             *TINY_SPEC["layers"][1:]])


def arrays(classes: int, seed: int = 0, channels: int = 1):
    x, y = bars(12, classes=classes, seed=seed, channels=channels)
    return (x, y)


def head(spec: dict, classes: int) -> dict:
    return dict(spec, layers=[*spec["layers"][:-1], {"type": "Dense", "units": classes, "activation": "softmax"}])


class Capture(cnnlab.Callback):
    def on_train_begin(self, state):
        self.start = {k: v.clone() for k, v in state.model.state_dict().items()}


def test_init_from_loads_matching_layers_and_reinitialises_a_new_head(tmp_path):
    base = cnnlab.train(arrays(3), model=TINY_SPEC, runs_dir=str(tmp_path / "a"), **OPTS)
    cap = Capture()
    tuned = cnnlab.train(arrays(4, seed=1), model=head(TINY_SPEC, 4), init_from=str(base.path),
                         runs_dir=str(tmp_path / "b"), callbacks=[cap], **OPTS)
    report = tuned.metrics["init_from"]
    assert report["loaded"] == ["conv2d", "dense"] and report["reinitialised"] == ["dense_1"]
    source = load_file(str(base.path / "model.safetensors"))
    for k in ("blocks.0.0.weight", "blocks.0.0.bias", "blocks.3.0.weight"):
        assert torch.equal(cap.start[k], source[k]), k
    assert tuned.config["init_from"] == str(base.path)  # recorded in the new run's config
    # a .safetensors file works too (layers matched by position)
    again = cnnlab.train(arrays(3), model=TINY_SPEC, init_from=str(base.path / "model.safetensors"),
                         runs_dir=str(tmp_path / "c"), **OPTS)
    assert again.metrics["init_from"]["loaded"] == ["conv2d", "dense", "dense_1"]


def test_freeze_until_keeps_weights_and_batchnorm_statistics(tmp_path):
    base = cnnlab.train(arrays(3), model=BN_SPEC, runs_dir=str(tmp_path / "a"), **OPTS)
    tuned = cnnlab.train(arrays(3, seed=5), model=BN_SPEC, init_from=str(base.path), freeze_until="dense",
                         runs_dir=str(tmp_path / "b"), **OPTS)
    before, after = load_file(str(base.path / "model.safetensors")), load_file(str(tuned.path / "model.safetensors"))
    frozen = [k for k in before if not k.startswith("blocks.5.")]  # everything up to 'dense' (block 4)
    assert all(torch.equal(before[k], after[k]) for k in frozen)  # BatchNorm's running statistics too
    assert not torch.equal(before["blocks.5.0.weight"], after["blocks.5.0.weight"])  # the head trained


def test_fine_tuning_errors_are_one_line(tmp_path, capsys):
    gray = cnnlab.train(arrays(3), model=TINY_SPEC, runs_dir=str(tmp_path / "g"), **OPTS)
    rgb_spec = dict(TINY_SPEC, input_shape=[12, 12, 3])
    with pytest.raises(CnnlabError, match="layer 'conv2d' has weights"):
        cnnlab.train(arrays(3, channels=3), model=rgb_spec, init_from=str(gray.path),
                     runs_dir=str(tmp_path / "x"), **OPTS)
    with pytest.raises(CnnlabError, match="did you mean dense"):
        cnnlab.train(arrays(3), model=TINY_SPEC, freeze_until="dens", runs_dir=str(tmp_path / "x"), **OPTS)
    with pytest.raises(CnnlabError, match="every layer is frozen"):
        cnnlab.train(arrays(3), model=TINY_SPEC, freeze_until="dense_1", runs_dir=str(tmp_path / "x"), **OPTS)
    x, y = arrays(3)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    code = main(["train", f"npz:{tmp_path / 'd.npz'}", "--init-from", str(tmp_path / "nothing"),
                 "--runs-dir", str(tmp_path / "y")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: init_from must be a run directory or a .safetensors file")
    assert err.count("\n") == 1 and "(--init-from)" in err
    assert not (tmp_path / "y").exists() and not any((tmp_path / "x").iterdir())  # no run for a bad start


def test_recipe_finetune_trains_the_head_then_everything_at_a_lower_rate(tmp_path):
    base = cnnlab.train(arrays(3), model=TINY_SPEC, runs_dir=str(tmp_path / "a"), **OPTS)
    source = load_file(str(base.path / "model.safetensors"))
    seen = {}

    class Watch(cnnlab.Callback):
        def on_epoch_end(self, state, logs):
            seen[state.epoch] = torch.equal(state.model.state_dict()["blocks.0.0.weight"], source["blocks.0.0.weight"])

    opts = dict(OPTS, epochs=4)
    tuned = cnnlab.train(arrays(4, seed=1), model=head(TINY_SPEC, 4), init_from=str(base.path), recipe="finetune",
                         head_epochs=2, runs_dir=str(tmp_path / "b"), callbacks=[Watch()], **opts)
    assert seen == {1: True, 2: True, 3: False, 4: False}  # the loaded layers wait, then train
    lrs = [h["lr"] for h in tuned.history]
    assert lrs[:2] == [0.001, 0.001] and lrs[2:] == pytest.approx([0.0003, 0.0003])  # both phases in history.csv
    assert tuned.config["head_epochs"] == 2 and tuned.metrics["epochs_run"] == 4
    with pytest.raises(CnnlabError, match="head_epochs 3 needs --init-from"):
        cnnlab.train(arrays(3), model=TINY_SPEC, recipe="finetune", runs_dir=str(tmp_path / "c"), **OPTS)


def test_a_finetune_run_resumes_in_the_right_phase(tmp_path):
    base = cnnlab.train(arrays(3), model=TINY_SPEC, runs_dir=str(tmp_path / "a"), **OPTS)
    opts = dict(OPTS, epochs=4, seed=9)
    kw = dict(model=head(TINY_SPEC, 4), init_from=str(base.path), head_epochs=2)
    whole = cnnlab.train(arrays(4, seed=1), runs_dir=str(tmp_path / "w"), **kw, **opts)

    for stop_after in (1, 3):  # in the first phase, and in the second
        class Stop(cnnlab.Callback):
            def on_epoch_end(self, state, logs, n=stop_after):
                if state.epoch == n:
                    state.request_stop("test", "time_limit")

        part = cnnlab.train(arrays(4, seed=1), runs_dir=str(tmp_path / f"p{stop_after}"), callbacks=[Stop()],
                            **kw, **opts)
        done = cnnlab.resume(part, arrays(4, seed=1))
        a, b = load_file(str(whole.path / "model.safetensors")), load_file(str(done.path / "model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), stop_after


def test_the_curves_mark_the_second_phase():
    from cnnlab.viz.figures import curves

    history = [{"epoch": i, "loss": 1 / i, "accuracy": 0.5, "lr": 0.001 if i < 4 else 0.0003} for i in range(1, 8)]
    labels = [line.get_label() for line in curves(history).axes[0].get_lines()]
    assert "lr 0.0003 from epoch 4" in labels
    steady = [dict(h, lr=0.001) for h in history]
    steady_labels = [line.get_label() for line in curves(steady).axes[0].get_lines()]
    assert not any(label.startswith("lr ") for label in steady_labels)
