"""Runs that survive a crash (issue 16, item 3): every epoch end writes a resume point; `cnnlab
train --resume RUN` continues a killed, interrupted or timed-out run, and ends as the uninterrupted
run would have, bit for bit on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import cnnlab
from cnnlab.cli import main
from cnnlab.runs import read_history
from conftest import TINY_SPEC

# Dropout (torch's global generator) and augmentation (the loop's own generator) both draw random
# numbers, so a resumed run is identical only if every random state is restored.
SPEC = dict(TINY_SPEC, layers=[*TINY_SPEC["layers"][:3], {"type": "Dropout", "rate": 0.3}, *TINY_SPEC["layers"][3:]])
OPTIONS = dict(model=SPEC, epochs=5, batch_size=16, seed=3, patience=None, quiet=True, threads=2,
               rotation_range=10.0, horizontal_flip=True, schedule="onecycle", lr=0.01)


def killed_run(npz_path: Path, runs: Path, epoch: int, batch: int) -> Path:
    """A run whose process is killed with SIGKILL at ``batch`` of ``epoch``: no clean-up runs."""
    script = textwrap.dedent(f"""
        import os, signal
        import cnnlab

        class Kill(cnnlab.Callback):
            def on_batch_end(self, state, step):
                if state.epoch == {epoch} and step == {batch}:
                    os.kill(os.getpid(), signal.SIGKILL)

        cnnlab.train("npz:{npz_path}", callbacks=[Kill()], runs_dir="{runs}", **{OPTIONS!r})
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr
    return next(runs.iterdir())


def same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def without_times(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "time_s"} for h in history]


def test_a_run_killed_mid_epoch_resumes_to_the_same_weights_bit_for_bit(npz_path, tmp_path, capsys):
    whole = cnnlab.train(f"npz:{npz_path}", runs_dir=str(tmp_path / "whole"), **OPTIONS)
    assert not (whole.path / "resume.pt").exists()  # a completed run keeps no resume point

    run = killed_run(npz_path, tmp_path / "killed", epoch=3, batch=2)
    assert cnnlab.load_run(run).state == "crashed"
    assert len(read_history(run / "history.csv")) == 2 and (run / "resume.pt").is_file()

    assert main(["train", "--resume", str(run), "--no-report"]) == 0
    err = capsys.readouterr().err
    assert f"resuming {run} after epoch 2 of 5" in err
    same_weights(whole.path / "model.safetensors", run / "model.safetensors")
    same_weights(whole.path / "best.safetensors", run / "best.safetensors")
    assert without_times(read_history(run / "history.csv")) == without_times(read_history(whole.path / "history.csv"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["resumed_after_epochs"] == [2] and metrics["epochs_run"] == 5
    assert metrics["test"] == whole.metrics["test"]
    assert cnnlab.load_run(run).state == "finished" and not (run / "resume.pt").exists()


def test_a_timed_out_run_resumes_and_early_stopping_keeps_its_count(npz_path, tmp_path):
    opts = dict(OPTIONS, epochs=40, patience=2, schedule="constant", lr=None)
    whole = cnnlab.train(f"npz:{npz_path}", runs_dir=str(tmp_path / "whole"), **opts)
    assert whole.metrics["status"] == "early_stopped"

    class StopAfter(cnnlab.Callback):  # as a time limit or Ctrl-C would, after an epoch
        def on_epoch_end(self, state, logs):
            if state.epoch == 2:
                state.request_stop("stopped for the test", "time_limit")

    part = cnnlab.train(f"npz:{npz_path}", runs_dir=str(tmp_path / "part"), callbacks=[StopAfter()], **opts)
    assert part.metrics["status"] == "time_limit" and (part.path / "resume.pt").is_file()
    done = cnnlab.resume(part)
    assert done.metrics["status"] == "early_stopped"
    assert done.metrics["best_epoch"] == whole.metrics["best_epoch"]
    assert done.metrics["epochs_run"] == whole.metrics["epochs_run"]
    same_weights(whole.path / "model.safetensors", done.path / "model.safetensors")


def test_resume_refuses_what_it_cannot_continue(npz_path, tmp_path, capsys):
    whole = cnnlab.train(f"npz:{npz_path}", runs_dir=str(tmp_path / "r"), **dict(OPTIONS, epochs=1))
    assert main(["train", "--resume", str(whole.path)]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(whole.path), "--epochs", "9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --epochs cannot change a resumed run") and err.count("\n") == 1
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    (whole.path / "resume.pt").write_bytes(b"not a checkpoint")
    assert main(["train", "--resume", str(whole.path)]) == 2
    assert "cannot read resume.pt" in capsys.readouterr().err


def test_resume_point_never_runs_code_from_the_file(npz_path, tmp_path):
    """A resume point is read with torch.load(weights_only=True): a pickle that would run code is refused."""
    import os
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    run = cnnlab.train(f"npz:{npz_path}", runs_dir=str(tmp_path / "r"), **dict(OPTIONS, epochs=1))
    with open(run.path / "resume.pt", "wb") as f:
        pickle.dump({"epoch": 1, "model": Evil()}, f)
    with pytest.raises(cnnlab.CnnlabError, match="cannot read resume.pt"):
        cnnlab.resume(run)
    assert not (tmp_path / "pwned").exists()


def test_a_run_stopped_mid_epoch_by_its_time_limit_resumes_bit_for_bit(npz_path, tmp_path):
    whole = cnnlab.train(f"npz:{npz_path}", runs_dir=str(tmp_path / "whole"), **OPTIONS)

    class TimeUp(cnnlab.Callback):  # what --time-limit does: a stop after a batch inside an epoch
        def on_batch_end(self, state, step):
            if state.epoch == 3 and step == 2:
                state.request_stop("time limit for the test", "time_limit")

    part = cnnlab.train(f"npz:{npz_path}", runs_dir=str(tmp_path / "part"), callbacks=[TimeUp()], **OPTIONS)
    assert part.metrics["status"] == "time_limit" and len(part.history) == 3  # the partial epoch is validated
    done = cnnlab.resume(part)
    assert done.metrics["resumed_after_epochs"] == [2]  # from the last whole epoch, not the partial one
    same_weights(whole.path / "model.safetensors", done.path / "model.safetensors")
    same_weights(whole.path / "best.safetensors", done.path / "best.safetensors")
    assert without_times(done.history) == without_times(whole.history)


def test_a_run_interrupted_in_its_first_epoch_resumes_from_the_start(npz_path, tmp_path, capsys):
    whole = cnnlab.train(f"npz:{npz_path}", runs_dir=str(tmp_path / "whole"), **OPTIONS)

    class CtrlC(cnnlab.Callback):
        def on_batch_end(self, state, step):
            if state.epoch == 1 and step == 2 and state.resumed_from is None:
                raise KeyboardInterrupt

    with pytest.raises(cnnlab.CnnlabError, match="before an epoch finished") as e:
        cnnlab.train(f"npz:{npz_path}", runs_dir=str(tmp_path / "part"), callbacks=[CtrlC()], **OPTIONS)
    assert "cnnlab train --resume" in str(e.value)
    (part,) = (tmp_path / "part").iterdir()
    assert (part / "resume.pt").is_file()
    assert main(["train", "--resume", str(part), "--no-report"]) == 0
    assert "after epoch 0 of 5" in capsys.readouterr().err
    same_weights(whole.path / "model.safetensors", part / "model.safetensors")
    assert without_times(read_history(part / "history.csv")) == without_times(whole.history)
