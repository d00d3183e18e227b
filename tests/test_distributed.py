"""Data-parallel training (issue 16): several processes through torchrun's launcher on this
machine's CPU (gloo), the same loop and run directory. Each test starts real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import free_port

pytestmark = pytest.mark.distributed

CNNLAB = [sys.executable, "-m", "cnnlab"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
DIGITS = ["train", "digits", "--model", "lenet", "--image-size", "32", "32", "--epochs", "3", "--seed", "5",
          "--no-report", "--quiet", "--no-check"]


def env() -> dict:
    e = dict(os.environ, OMP_NUM_THREADS="1")
    e.pop("WORLD_SIZE", None)
    return e


def cnnlab(*args, timeout=240, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CNNLAB, *args], capture_output=True, text=True, timeout=timeout, env=env(), **kw)


def only_run(runs: Path) -> Path:
    dirs = list(runs.iterdir())
    assert len(dirs) == 1, dirs  # rank 0 alone writes
    return dirs[0]


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    one = cnnlab(*DIGITS, "--runs-dir", str(tmp_path / "one"))
    two = cnnlab(*DIGITS, "--runs-dir", str(tmp_path / "two"), "--nproc", "2")
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("test accuracy") == 1  # one report, from rank 0
    m1 = json.loads((only_run(tmp_path / "one") / "metrics.json").read_text())
    m2 = json.loads((only_run(tmp_path / "two") / "metrics.json").read_text())
    assert m2["distributed"] == {"world_size": 2, "backend": "gloo", "global_batch_size": 32,
                                 "batch_size_per_process": 16}
    assert "distributed" not in m1 and m2["epochs_run"] == m1["epochs_run"] == 3
    # The same global batch and order, split over two replicas: the same learning, up to float sums.
    assert abs(m2["test"]["accuracy"] - m1["test"]["accuracy"]) <= 0.02
    assert abs(m2["best"]["val_accuracy"] - m1["best"]["val_accuracy"]) <= 0.02
    # Validation counted once: 288 validation images, never padded.
    ev = json.loads((only_run(tmp_path / "two") / "evaluation.json").read_text())
    assert ev["n"] == 360


def test_every_rank_ends_with_the_same_parameters_and_statistics(tmp_path):
    """An all-gather of every parameter and BatchNorm statistic after training (BatchNorm running
    statistics are averaged on CPU, where SyncBatchNorm does not run)."""
    script = tmp_path / "check.py"
    script.write_text(textwrap.dedent(f"""
        import json, torch, torch.distributed as dist
        import cnnlab

        class Gather(cnnlab.Callback):
            def on_train_end(self, state):
                flat = torch.cat([t.detach().float().flatten() for t in state.model.state_dict().values()])
                parts = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
                dist.all_gather(parts, flat)
                if dist.get_rank() == 0:
                    json.dump({{"n": flat.numel(), "max_diff": float((parts[0] - parts[1]).abs().max())}},
                              open({str(tmp_path / "gather.json")!r}, "w"))

        cnnlab.train("digits", model="deep-bn-cnn", image_size=(28, 28), epochs=2, batch_size=64, seed=2,
                     patience=None, quiet=True, check=False, horizontal_flip=True, runs_dir={str(tmp_path / "r")!r},
                     callbacks=[Gather()])
    """))
    done = subprocess.run([*TORCHRUN, "--standalone", "--nproc-per-node", "2", str(script)], capture_output=True,
                          text=True, timeout=300, env=env())
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads((tmp_path / "gather.json").read_text())
    assert got["n"] > 900_000 and got["max_diff"] == 0.0


def test_two_nodes_meet_at_a_rendezvous(tmp_path):
    """Two 'machines' (two torchrun agents, one process each) rendezvous on 127.0.0.1."""
    port = free_port()
    procs = [subprocess.Popen([*TORCHRUN, "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                               "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "cnnlab-test",
                               "-m", "cnnlab", *DIGITS, "--runs-dir", str(tmp_path / "runs")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    m = json.loads((only_run(tmp_path / "runs") / "metrics.json").read_text())
    assert m["distributed"]["world_size"] == 2 and m["status"] == "completed"


def workers(launcher: int) -> dict[int, int]:
    """rank -> pid of the launcher's worker processes."""
    out = {}
    for d in Path("/proc").iterdir():
        try:
            if not d.name.isdigit() or int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) != launcher:
                continue
            e = dict(kv.split("=", 1) for kv in (d / "environ").read_bytes().decode(errors="replace").split("\0")
                     if "=" in kv)
        except (OSError, ValueError, IndexError):
            continue
        if "RANK" in e:
            out[int(e["RANK"])] = int(d.name)
    return out


SLOW = ["train", "digits", "--model", "wide-cnn", "--image-size", "20", "20", "--epochs", "3", "--seed", "4",
        "--batch-size", "64", "--patience", "none", "--no-report", "--quiet", "--no-check", "--nproc", "2"]


def test_a_killed_rank_ends_the_job_with_one_line_and_the_run_resumes(tmp_path):
    whole = cnnlab(*SLOW, "--runs-dir", str(tmp_path / "whole"), timeout=600)
    assert whole.returncode == 0, whole.stderr

    runs = tmp_path / "killed"
    p = subprocess.Popen([*CNNLAB, *SLOW, "--runs-dir", str(runs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env())
    deadline = time.time() + 300
    while time.time() < deadline:  # after the first finished epoch's resume point (in the second epoch)
        points = list(runs.glob("*/resume.pt"))  # written by rename: a file there is whole
        if points and torch.load(points[0], weights_only=True)["epoch"] >= 1:  # not the epoch-0 point
            break
        time.sleep(0.05)
    ranks = workers(p.pid)
    assert set(ranks) == {0, 1}, ranks
    os.kill(ranks[1], signal.SIGKILL)
    t0 = time.time()
    _, err = p.communicate(timeout=120)
    assert time.time() - t0 <= 60  # no hang: every rank ends within the collective timeout
    assert p.returncode == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert lines[-1].startswith("error: training process 1 of 2 was killed by signal 9 (--nproc)"), err

    run = only_run(runs)
    state = torch.load(run / "resume.pt", weights_only=True)
    assert len(state["rng_ranks"]) == 2 and state["epoch"] in (1, 2)
    done = cnnlab("train", "--resume", str(run), "--nproc", "2", "--no-report", timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"after epoch {state['epoch']} of 3" in done.stderr
    m = json.loads((run / "metrics.json").read_text())
    assert m["resumed_after_epochs"] == [state["epoch"]] and m["epochs_run"] == 3
    a = load_file(str(run / "model.safetensors"))
    b = load_file(str(only_run(tmp_path / "whole") / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # gloo's two-rank sums are exact: bit for bit


def test_nproc_checks_the_global_batch_before_starting(tmp_path, capsys):
    from cnnlab.cli import main

    assert main([*DIGITS, "--nproc", "3", "--batch-size", "32", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "batch_size 32 does not split over 3 processes (--batch-size)" in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir())
