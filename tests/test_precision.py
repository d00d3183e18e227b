"""Precision (issue 19): --precision auto|fp32|bf16|fp16 for training and prediction. Lower
precision is autocast; weights, BatchNorm statistics and the loss stay float32; auto takes bf16
only where the hardware has it natively; the run records what it used."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

import cnnlab
from cnnlab.cli import main
from cnnlab.engine import precision
from conftest import bars

SPEC = {"name": "bn", "input_shape": [12, 12, 1], "layers": [
    {"type": "Conv2D", "filters": 8, "kernel_size": 3, "padding": "same"}, {"type": "BatchNormalization"},
    {"type": "ReLU"}, {"type": "MaxPooling2D"}, {"type": "Flatten"}, {"type": "Dropout", "rate": 0.2},
    {"type": "Dense", "units": 3, "activation": "softmax"}]}


@pytest.fixture
def flags(monkeypatch):
    """Pretend the CPU has (or lacks) native bf16."""
    def set_flags(*names):
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(names))
    return set_flags


def test_auto_is_bf16_only_where_the_cpu_has_it(flags):
    cpu = torch.device("cpu")
    flags("avx2", "avx512f")
    assert precision.autocast_dtype("auto", cpu) is None
    flags("avx512f", "avx512_bf16")
    assert precision.autocast_dtype("auto", cpu) == torch.bfloat16
    flags("amx_bf16")
    assert precision.autocast_dtype("auto", cpu) == torch.bfloat16
    assert precision.autocast_dtype("fp32", cpu) is None and precision.autocast_dtype("fp16", cpu) == torch.float16


def _train(tmp_path, name, **kw):
    x, y = bars(20)
    xt, yt = bars(6, seed=2)
    np.savez(tmp_path / "b.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    # threads fixed: the thread governor follows other processes' load, and another thread count
    # sums in another order (a run beside a busy process would not repeat bit for bit)
    return cnnlab.train(f"npz:{tmp_path / 'b.npz'}", model=SPEC, epochs=3, batch_size=16,
                        runs_dir=str(tmp_path / name), quiet=True, check=False, seed=3, threads=1, **kw)


def test_bf16_training_keeps_float32_weights_and_statistics_and_repeats(tmp_path):
    a = _train(tmp_path, "a", precision="bf16")
    b = _train(tmp_path, "b", precision="bf16")
    assert a.metrics["environment"]["precision"] == "bfloat16 mixed"
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]  # a seed still repeats
    assert all(np.isfinite(h["loss"]) for h in a.history)
    with safe_open(str(a.path / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys() if not k.endswith("num_batches_tracked")} == {torch.float32}
    fp32 = _train(tmp_path, "c", precision="fp32")
    assert fp32.metrics["environment"]["precision"] == "float32"
    assert [h["loss"] for h in fp32.history] != [h["loss"] for h in a.history]  # it did run in bf16
    assert abs(fp32.history[-1]["loss"] - a.history[-1]["loss"]) < 0.1


def test_auto_without_native_bf16_trains_in_float32(tmp_path, flags):
    flags("avx2")
    run = _train(tmp_path, "auto")
    assert run.metrics["environment"]["precision"] == "float32"
    assert json.loads(json.dumps(run.config))["precision"] == "auto"
    fp32 = _train(tmp_path, "fp32", precision="fp32")
    assert [h["loss"] for h in run.history] == [h["loss"] for h in fp32.history]


def test_prediction_precision(tmp_path, capsys):
    run = _train(tmp_path, "p", precision="fp32")
    xt, _ = bars(6, seed=2)
    exact = run.predict_proba(xt)
    low = run.with_precision("bf16").predict_proba(xt)
    assert run.precision == "fp32"  # a view is a new run; this one is unchanged, and cannot be changed
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.precision = "bf16"
    assert low.dtype == np.float32 and np.abs(low - exact).max() < 0.05
    assert np.allclose(low.sum(1), 1, atol=1e-5)
    assert main(["evaluate", str(run.path), "--precision", "bf16", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == len(xt)


def test_a_bad_precision_is_one_line(tmp_path, capsys):
    assert main(["train", "digits", "--precision", "bf8", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bf8" in err and "bf16" in err
