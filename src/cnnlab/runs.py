"""Run directories: ``runs/<YYYYmmdd-HHMMSS>-<name>/`` with everything needed to reload.

config.yaml       resolved training configuration (usable again with --config)
spec.json         the model spec as built (adapted to the data)
model.safetensors the final weights (the best epoch's unless --no-restore-best)
best.safetensors  the best checkpoint, written whenever the monitored metric improves
preprocessing.json the scaling statistics fitted on the training split
classes.json      class names
data.json         where the data came from, image size, colour mode, split sizes, class counts
history.csv       one row per epoch
metrics.json      test loss/accuracy, best epoch, times, status and the environment
evaluation.json   classification report and confusion matrix on the test split
status.json       'running' from the run's first second (with the process id and host), then how
                  it ended; a run still 'running' whose process is gone crashed (kill -9, power)

Loading never unpickles anything: weights are safetensors, the rest is JSON / YAML. A damaged
file is a RunError naming it; a run that did not finish loads with a warning.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import re
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import atomic
from .data.preprocess import Preprocessing
from .errors import RunError, warn
from .models import Spec, SpecModel, build_module, parse_spec

REQUIRED = ("spec.json", "preprocessing.json", "classes.json", "data.json")


def environment(device: str, threads: int, seed: int) -> dict:
    import PIL
    import sklearn
    import torch

    from . import __version__

    return {"cnnlab": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "pillow": PIL.__version__, "scikit_learn": sklearn.__version__,
            "platform": platform.platform(), "machine": platform.machine(),
            "cuda": torch.version.cuda if torch.cuda.is_available() else None,
            "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
            "device": device, "threads": threads, "seed": seed,
            "command": " ".join(sys.argv)}


def check_writable(runs_dir: str | Path) -> None:
    """The runs folder exists (or can be made) and takes new files: checked before training."""
    base = Path(runs_dir)
    try:
        base.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunError("the runs folder is a file", str(base), "give a folder with --runs-dir") from None
    except OSError as e:
        raise RunError(f"cannot create the runs folder: {e.strerror}", str(base),
                       "give a folder you can write to with --runs-dir") from None
    if not base.is_dir():
        raise RunError("the runs folder is not a folder", str(base), "give a folder with --runs-dir")
    try:  # a real write: os.access says yes to root on a read-only file system
        fd, probe = tempfile.mkstemp(prefix=".cnnlab-write-test-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RunError(f"cannot write in the runs folder: {e.strerror}", str(base),
                       "give a folder you can write to with --runs-dir") from None


def new_run_dir(runs_dir: str | Path, name: str) -> Path:
    """Create ``runs_dir/<timestamp>-<name>`` (a numeric suffix keeps names unique)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(runs_dir)
    check_writable(base)
    for i in range(1000):
        path = base / (f"{stamp}-{safe}" + (f"-{i + 1}" if i else ""))
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RunError("cannot create a unique run directory", str(base), "choose another --name")


def save_weights(path: Path, state_dict: dict) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    atomic.write_with(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))


def load_weights(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise RunError(f"cannot read weights: {e}", str(path),
                       "the file is corrupt; train again or use best.safetensors") from None


def write_history(path: Path, history: list[dict]) -> None:
    keys = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "time_s"]
    keys = [k for k in keys if any(k in h for h in history)] or ["epoch"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, keys, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for h in history:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in h.items() if k in keys})
    atomic.write_text(path, buf.getvalue())


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    fix = "the run directory is damaged; delete history.csv to load the run without curves"
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if any(None in row or not row.get("epoch") for row in rows):
            raise RunError("history.csv has rows without an epoch or with extra fields", str(path), fix)
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v not in ("", None)}
                for row in rows]
    except (OSError, UnicodeDecodeError, csv.Error, ValueError, TypeError) as e:
        raise RunError(f"cannot read history.csv: {e}", str(path), fix) from None


# ------------------------------------------------------------------ status: running, then how it ended

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def mark_running(run_dir: Path) -> None:
    """Written when the run directory is created: a run says from its first second that it is
    in progress, so a crash (kill -9) is told apart from a finished run."""
    atomic.write_json(run_dir / "status.json", {"status": "running", "pid": os.getpid(),
                                                "host": socket.gethostname(),
                                                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def mark_finished(run_dir: Path, status: str, reason: str = "") -> None:
    d = _status(run_dir) or {}
    d.update({"status": status, "reason": reason, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    atomic.write_json(run_dir / "status.json", d)


def _status(run_dir: Path) -> dict | None:
    try:
        d = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return d if isinstance(d, dict) else None


def run_state(run_dir: Path) -> tuple[str, str]:
    """('finished' | 'training' | 'crashed' | 'unknown', a sentence for the user)."""
    d = _status(run_dir)
    if d is None:
        if (run_dir / "status.json").exists():
            return "unknown", "its status.json is damaged"
        return "finished", ""  # runs written before status.json existed
    if d.get("status") != "running":
        return "finished", ""
    pid, host = d.get("pid"), d.get("host")
    if pid == os.getpid() and host == socket.gethostname():
        return "finished", ""  # the training process itself, loading its own best weights
    if isinstance(pid, int) and host == socket.gethostname() and _pid_alive(pid):
        return "training", f"it is still training (process {pid})"
    where = "" if host == socket.gethostname() else f" on {host}"
    return "crashed", (f"its training process{where} ended without finishing (crashed or killed); "
                       "the weights are the last checkpoint it saved")


@dataclass
class Run:
    """A loaded run: its model, preprocessing, class names and records."""

    path: Path
    spec: Spec
    model: SpecModel
    preprocessing: Preprocessing
    class_names: list[str]
    data: dict
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    # The run's data with its splits, once loaded (by training, or on first use by figures).
    dataset: object = field(default=None, repr=False, compare=False)
    state: str = "finished"  # finished | training | crashed | unknown (see run_state)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.spec.input_shape[:2])  # type: ignore[return-value]

    @property
    def color_mode(self) -> str:
        c = self.spec.input_shape[2] if len(self.spec.input_shape) == 3 else 1
        return "rgb" if c == 3 else "grayscale"

    def predict_proba(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class probabilities (N, K) for uint8 images (N, H, W, C) or (N, H, W)."""
        from .prediction import predict_proba

        return predict_proba(self, x, batch_size)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_proba(x).argmax(1)

    def __repr__(self) -> str:
        acc = self.metrics.get("test", {}).get("accuracy")
        return f"Run({str(self.path)!r}, model={self.spec.name!r}, test_accuracy={acc})"


def _read_json(path: Path, kind: type = dict):
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"cannot read {path.name}: {e}", str(path),
                       "the run directory is damaged; train again") from None
    if not isinstance(d, kind):
        raise _damaged(f"{path.name} holds a JSON {type(d).__name__}, not the expected "
                       f"{'object' if kind is dict else kind.__name__}", path)
    return d


def _damaged(what: str, path: Path) -> RunError:
    return RunError(what, str(path), "the run directory is damaged; train again")


def read_class_names(p: Path, spec: Spec) -> list[str]:
    classes = _read_json(p / "classes.json").get("class_names")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise _damaged("classes.json has no list of class names", p / "classes.json")
    if len(classes) != spec.num_classes:
        raise _damaged(f"classes.json names {len(classes)} classes but the model has {spec.num_classes} outputs",
                       p / "classes.json")
    return list(classes)


def read_preprocessing(p: Path, spec: Spec) -> Preprocessing:
    d = _read_json(p / "preprocessing.json")
    try:
        prep = Preprocessing.from_dict(d)
    except (KeyError, TypeError, ValueError) as e:
        raise _damaged(f"preprocessing.json is incomplete or invalid ({type(e).__name__}: {e})",
                       p / "preprocessing.json") from None
    c = spec.input_shape[2] if len(spec.input_shape) == 3 else 1
    if len(prep.offset) != c or len(prep.scale) != c or not all(
            math.isfinite(v) for v in prep.offset + prep.scale) or not all(v != 0 for v in prep.scale):
        raise _damaged(f"preprocessing.json does not fit a {c}-channel model (offset {list(prep.offset)}, "
                       f"scale {list(prep.scale)})", p / "preprocessing.json")
    return prep


def read_config(p: Path) -> dict:
    import yaml

    f = p / "config.yaml"
    if not f.is_file():
        return {}
    try:
        config = yaml.safe_load(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise _damaged(f"cannot read config.yaml: {str(e).splitlines()[0]}", f) from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise _damaged("config.yaml is not a mapping of keys", f)
    return config


def load_run(path: str | Path, device: str = "cpu", weights: str | None = None) -> Run:
    """Load a run directory (weights: model.safetensors, or best.safetensors if that is all).

    A run that is still training, or whose process crashed, loads with a warning."""
    p = Path(path)
    if not p.is_dir():
        raise RunError("run directory not found", str(p),
                       "give a folder under runs/ (ls runs/ lists them)")
    missing = [f for f in REQUIRED if not (p / f).is_file()]
    if missing:
        raise RunError(f"not a cnnlab run (missing {', '.join(missing)})", str(p),
                       "give a folder written by cnnlab train")
    spec = parse_spec(_read_json(p / "spec.json"), str(p / "spec.json"))
    state, why = run_state(p)
    wfile = p / (weights or "model.safetensors")
    if weights is None and not wfile.is_file() and (p / "best.safetensors").is_file():
        wfile = p / "best.safetensors"
    if not wfile.is_file():
        raise RunError("the run has no weights", str(p),
                       "it is still in its first epoch; wait for it to finish" if state == "training" else
                       "its training did not finish an epoch; train again")
    model = build_module(spec)
    try:
        model.load_state_dict(load_weights(wfile))
    except RuntimeError as e:
        raise RunError(f"weights do not match spec.json: {str(e).splitlines()[0]}", str(wfile),
                       "the run directory is damaged; train again") from None
    model.to(device).eval()
    config = read_config(p)
    class_names = read_class_names(p, spec)
    prep = read_preprocessing(p, spec)
    metrics = _read_json(p / "metrics.json") if (p / "metrics.json").is_file() else {}
    run = Run(p, spec, model, prep, class_names, _read_json(p / "data.json"), config, metrics,
              read_history(p / "history.csv"))
    run.state = state
    if state != "finished":
        warn(f"the run did not finish: {why}", str(p),
             "wait for it to finish" if state == "training" else "train again for a complete run")
    return run
