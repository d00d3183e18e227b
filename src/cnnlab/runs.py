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

Loading never unpickles anything: weights are safetensors, the rest is JSON / YAML.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import atomic
from .data.preprocess import Preprocessing
from .errors import RunError
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


def new_run_dir(runs_dir: str | Path, name: str) -> Path:
    """Create ``runs_dir/<timestamp>-<name>`` (a numeric suffix keeps names unique)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(runs_dir)
    base.mkdir(parents=True, exist_ok=True)
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
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v != ""}
                for row in csv.DictReader(f)]


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

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.spec.input_shape[:2])  # type: ignore[return-value]

    @property
    def color_mode(self) -> str:
        c = self.spec.input_shape[2] if len(self.spec.input_shape) == 3 else 1
        return "rgb" if c == 3 else "grayscale"

    def predict_proba(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class probabilities (N, K) for uint8 images (N, H, W, C) or (N, H, W)."""
        from .predict import predict_proba

        return predict_proba(self, x, batch_size)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_proba(x).argmax(1)

    def __repr__(self) -> str:
        acc = self.metrics.get("test", {}).get("accuracy")
        return f"Run({str(self.path)!r}, model={self.spec.name!r}, test_accuracy={acc})"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise RunError(f"cannot read {path.name}: {e}", str(path),
                       "the run directory is damaged; train again") from None


def load_run(path: str | Path, device: str = "cpu", weights: str | None = None) -> Run:
    """Load a run directory (weights: model.safetensors, or best.safetensors if that is all)."""
    import yaml

    p = Path(path)
    if not p.is_dir():
        raise RunError("run directory not found", str(p),
                       "give a folder under runs/ (ls runs/ lists them)")
    missing = [f for f in REQUIRED if not (p / f).is_file()]
    if missing:
        raise RunError(f"not a cnnlab run (missing {', '.join(missing)})", str(p),
                       "give a folder written by cnnlab train")
    spec = parse_spec(_read_json(p / "spec.json"), str(p / "spec.json"))
    wfile = p / (weights or "model.safetensors")
    if weights is None and not wfile.is_file() and (p / "best.safetensors").is_file():
        wfile = p / "best.safetensors"
    if not wfile.is_file():
        raise RunError("the run has no weights", str(p),
                       "its training did not finish an epoch; train again")
    model = build_module(spec)
    try:
        model.load_state_dict(load_weights(wfile))
    except RuntimeError as e:
        raise RunError(f"weights do not match spec.json: {str(e).splitlines()[0]}", str(wfile),
                       "the run directory is damaged; train again") from None
    model.to(device).eval()
    config = {}
    if (p / "config.yaml").is_file():
        config = yaml.safe_load((p / "config.yaml").read_text(encoding="utf-8")) or {}
    classes = _read_json(p / "classes.json")
    return Run(p, spec, model, Preprocessing.from_dict(_read_json(p / "preprocessing.json")),
               list(classes["class_names"]), _read_json(p / "data.json"), config,
               _read_json(p / "metrics.json") if (p / "metrics.json").is_file() else {},
               read_history(p / "history.csv"))
