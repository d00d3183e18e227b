"""Run directories: ``runs/<YYYYmmdd-HHMMSS>-<name>/`` with everything needed to reload.

``RunDir`` owns the files (their names, what each holds, how each is written and read); no other
module names a run file. Loading never unpickles anything: weights are safetensors, the rest is
JSON / YAML. A damaged file is a RunError naming it; a run that did not finish (status.json still
'running') loads with a warning.
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import atomic
from .data.dataset import Dataset
from .data.preprocess import Preprocessing
from .errors import DataError, MissingRunError, RunError, first_line, warn
from .models import Spec, SpecModel, build_module, parse_spec


def environment(device: str, threads: int, seed: int) -> dict:
    from importlib.metadata import version

    import PIL
    import torch

    from .engine.allocator import keep_freed_memory
    from .version import __version__

    return {"cnnlab": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "pillow": PIL.__version__, "scikit_learn": version("scikit-learn"),
            "platform": platform.platform(), "machine": platform.machine(),
            "cuda": torch.version.cuda if torch.cuda.is_available() else None,
            "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
            "device": device, "threads": threads, "seed": seed, "allocator": keep_freed_memory(),
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
                       f"the file is corrupt; train again or use {RunDir.BEST}") from None


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
    fix = f"the run directory is damaged; delete {path.name} to load the run without curves"
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if any(None in row or not row.get("epoch") for row in rows):
            raise RunError(f"{path.name} has rows without an epoch or with extra fields", str(path), fix)
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v not in ("", None)}
                for row in rows]
    except (OSError, UnicodeDecodeError, csv.Error, ValueError, TypeError) as e:
        raise RunError(f"cannot read {path.name}: {e}", str(path), fix) from None


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
    atomic.write_json(run_dir / RunDir.STATUS, {"status": "running", "pid": os.getpid(),
                                                "host": socket.gethostname(),
                                                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def mark_finished(run_dir: Path, status: str, reason: str = "") -> None:
    d = _status(run_dir) or {}
    d.update({"status": status, "reason": reason, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    atomic.write_json(run_dir / RunDir.STATUS, d)


def _status(run_dir: Path) -> dict | None:
    try:
        d = json.loads((run_dir / RunDir.STATUS).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return d if isinstance(d, dict) else None


def run_state(run_dir: Path) -> tuple[str, str]:
    """('finished' | 'training' | 'crashed' | 'unknown', a sentence for the user)."""
    d = _status(run_dir)
    if d is None:
        if (run_dir / RunDir.STATUS).exists():
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


@dataclass(frozen=True, eq=False)
class Run:
    """A loaded run: its model, preprocessing, class names and records. Immutable: another way of
    predicting is a new view of the same run (``with_engine``, ``with_precision``); the one thing it
    keeps once made is its data, loaded on first use (``dataset_or``)."""

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
    dataset: Dataset | None = field(default=None, repr=False, compare=False)
    state: str = "finished"  # finished | training | crashed | unknown (see run_state)
    # another engine's probabilities for conformed uint8 images, e.g. ONNX Runtime (exporting.use_onnx)
    engine: Any = field(default=None, repr=False, compare=False)
    # predictions' precision: fp32 (exact), or auto / bf16 / fp16 autocast (engine.precision)
    precision: str = "fp32"
    # the out-of-distribution score's record (ood.json: the energy's quantiles on held-out images)
    ood: dict | None = field(default=None, repr=False, compare=False)
    _memo: dict = field(default_factory=dict, repr=False, compare=False)  # the data, once loaded

    def with_engine(self, engine) -> Run:
        """This run predicting with ``engine`` (probabilities of conformed uint8 images, e.g. ONNX
        Runtime's: exporting.use_onnx); None: the torch model again."""
        return replace(self, engine=engine)

    def with_precision(self, precision: str) -> Run:
        """This run predicting in ``precision`` (fp32, or auto / bf16 / fp16 autocast)."""
        return replace(self, precision=precision)

    def with_results(self, metrics: dict, dataset=None) -> Run:
        """This run with the metrics of the training that just ended, and its data."""
        return replace(self, metrics=metrics, dataset=dataset)

    def dataset_or(self, load) -> object:
        """The run's data: the one it was made with, else ``load(self)``, called once per run."""
        if self.dataset is not None:
            return self.dataset
        if "dataset" not in self._memo:
            self._memo["dataset"] = load(self)
        return self._memo["dataset"]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.spec.input_shape[:2])  # type: ignore[return-value]

    @property
    def color_mode(self) -> str:
        c = self.spec.input_shape[2] if len(self.spec.input_shape) == 3 else 1
        return "rgb" if c == 3 else "grayscale"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the images the model takes (C 1 or 3)."""
        return (*self.image_size, 3 if self.color_mode == "rgb" else 1)  # type: ignore[return-value]

    def predict_proba(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class probabilities (N, K) for images (N, H, W, C) or (N, H, W), uint8 or floats in [0, 1];
        one image without its batch axis, (H, W) or (H, W, C), gives a batch of one (K probabilities
        in a (1, K) array). Other sizes and colour modes are converted to the model's."""
        from .data.dataset import model_batch
        from .engine.inference import predict_proba

        if not hasattr(x, "subset"):  # images on disk stay there
            x = model_batch(x, self.image_shape)
        if self.engine is not None:
            from .data.dataset import as_uint8_images
            from .data.sources import conform

            return self.engine(conform(as_uint8_images(x, "images"), self.image_size, self.color_mode), batch_size)
        return predict_proba(self.model, self.preprocessing, x, self.image_size, self.color_mode,
                             self.config.get("tta", "none"), batch_size, self.precision)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_proba(x).argmax(1)

    def _conformed(self, x) -> np.ndarray:
        """uint8 (N, H, W, C) at the model's size and colour mode."""
        from .data.dataset import as_uint8_images, model_batch
        from .data.sources import conform

        return conform(as_uint8_images(model_batch(np.asarray(x), self.image_shape), "images"), self.image_size,
                       self.color_mode)

    def predict_logits(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Raw logits (N, K) of the torch model (no temperature), the run's size, colour mode,
        test-time flips and precision applied as predict_proba applies them."""
        import torch

        from .engine.inference import predict_logits, to_tensor
        from .engine.precision import autocast_dtype

        device = next(self.model.parameters()).device
        with torch.inference_mode():
            return predict_logits(self.model, to_tensor(self._conformed(x), device), self.preprocessing, batch_size,
                                  tta=self.config.get("tta", "none"),
                                  dtype=autocast_dtype(self.precision, device)).cpu().numpy()

    def ood_scores(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The out-of-distribution score (N,) of each image: the energy ``logsumexp`` of the raw
        logits (engine/ood.py), higher for images like the training data. Through the engine when
        it computes one (an ONNX export's ``ood_score`` output), else the torch model."""
        return self.predict_scored(x, batch_size)[1]

    def predict_scored(self, x: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """The probabilities (N, K) and the ood score (N,) of the same images, from one pass: the
        engine's (an ONNX export gives both outputs) or the torch model's logits."""
        if getattr(self.engine, "scored", None) is not None:
            return self.engine.scored(self._conformed(x), batch_size)
        import torch

        from .engine.ood import scores

        logits = self.predict_logits(x, batch_size)
        with torch.inference_mode():
            probs = self.model.probabilities(torch.from_numpy(logits)).numpy()
        return probs, scores(logits, self.spec.head == "binary")["energy"]

    def ood_threshold(self, keep: float) -> float:
        """The score below which an image is "unknown", so that ``keep`` of the run's held-out
        images pass (``predict --reject``, ``serve``); a run without ood.json is a DataError."""
        from .engine.ood import threshold

        if not self.ood:
            raise DataError("the run has no out-of-distribution threshold (it was trained before cnnlab kept one)",
                            str(self.path), "train it again, or cnnlab calibrate RUN to fit one")
        return threshold(self.ood, keep)

    def __repr__(self) -> str:
        acc = self.metrics.get("test", {}).get("accuracy")
        return f"Run({str(self.path)!r}, model={self.spec.name!r}, test_accuracy={acc})"


def check_resume_point(state: dict, where: str, epochs: int | None = None, record_keys: tuple = ()) -> None:
    """The fields a resume point's reader relies on, by type and range (what each is in
    engine.resume.training_state); the weights and random states are checked as they are loaded.
    With the run's settings: ``epochs`` bounds the epoch, every epoch record holds ``record_keys``."""
    def bad(what: str):
        return RunError(f"resume.pt is damaged: {what}", where, "train again")

    epoch = state["epoch"]
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise bad(f"its epoch is {type(epoch).__name__} {str(epoch)[:40]!r}, not a whole number >= 0")
    if epochs is not None and epoch >= epochs:
        raise bad(f"it says epoch {epoch} finished, but the run has {epochs} epochs")
    history = state["history"]
    if not isinstance(history, list) or len(history) != epoch or not all(isinstance(h, dict) for h in history):
        raise bad(f"its history is not the {epoch} epoch record(s) its epoch says")
    best = state.get("best_epoch")
    if best is not None and (not isinstance(best, int) or isinstance(best, bool) or not 1 <= best <= epoch):
        raise bad(f"its best epoch {str(best)[:40]!r} is not one of its {epoch} epochs")
    for key in ("model", "optimizer", "rng"):
        if not isinstance(state[key], dict):
            raise bad(f"its {key} is a {type(state[key]).__name__}, not a mapping")
    if "best_model" in state and not isinstance(state["best_model"], dict):
        raise bad("its best weights are not a mapping")
    if any(not all(isinstance(h.get(k), (int, float)) for k in record_keys) for h in history):
        raise bad("an epoch record lacks its loss or accuracy")


def _damaged(what: str, path: Path) -> RunError:
    return RunError(what, str(path), "the run directory is damaged; train again")


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


class RunDir:
    """The one owner of a run directory's files: each file name is written here once, and every
    module writes and reads run files through these methods (start, checkpoint, history, finish
    / load, describe)."""

    CONFIG = "config.yaml"  # resolved training configuration (usable again with --config)
    SPEC = "spec.json"  # the model spec as built (adapted to the data)
    MODEL = "model.safetensors"  # final weights (the best epoch's unless --no-restore-best)
    BEST = "best.safetensors"  # the best checkpoint, written whenever the monitored metric improves
    PREPROCESSING = "preprocessing.json"  # scaling statistics fitted on the training split
    CLASSES = "classes.json"  # class names
    DATA = "data.json"  # source, image size, colour mode, split sizes and hashes, class counts
    HISTORY = "history.csv"  # one row per epoch
    METRICS = "metrics.json"  # test loss/accuracy, best epoch, times, status, environment
    EVALUATION = "evaluation.json"  # classification report and confusion matrix, test split
    STATUS = "status.json"  # 'running' from the first second, then how the run ended
    CHECK = "check.json"  # the data check made before training
    CLASS_WEIGHTS = "class_weights.json"  # the loss weight of each class, when used
    WEIGHTS_INIT = "weights_init.json"  # weight statistics at initialisation (histograms)
    REPORT = "report.html"
    RESUME = "resume.pt"  # after each epoch: what `cnnlab train --resume` needs; removed when the run ends
    ONNX = "model.onnx"  # cnnlab export's default ONNX file (and the onnx engine's)
    KERAS = "model.keras"  # cnnlab export --format keras's default file
    CALIBRATION = "calibration.json"  # the temperature fitted on the validation split, and its measures
    CORRUPTIONS = "evaluation-corruptions.json"  # cnnlab evaluate --corruptions: accuracy per corruption
    OOD = "evaluation-ood.json"  # cnnlab evaluate --ood SOURCE: how the run tells its data from another's
    OOD_SCORE = "ood.json"  # the energy score on held-out images at the end of training: --reject's thresholds
    REQUIRED = (SPEC, PREPROCESSING, CLASSES, DATA)

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------------ writing (training)
    @classmethod
    def create(cls, runs_dir: str | Path, name: str) -> RunDir:
        """A new directory ``runs_dir/<timestamp>-<name>``, marked running from its first second."""
        rd = cls(new_run_dir(runs_dir, name))
        mark_running(rd.path)
        return rd

    @classmethod
    def create_at(cls, path: str | Path) -> RunDir:
        """A run directory at ``path`` (made, or empty), marked running."""
        p = Path(path)
        if p.exists() and (not p.is_dir() or any(p.iterdir())):
            raise RunError("the run directory exists and is not empty", str(p), "give a new folder, or remove it")
        check_writable(p)
        rd = cls(p)
        mark_running(rd.path)
        return rd

    def start(self, *, config: dict, spec: dict, preprocessing: dict, classes: dict, data: dict,
              weights_init: dict, check: dict | None = None) -> None:
        """What a run knows before its first step."""
        import yaml

        if check is not None:
            atomic.write_json(self / self.CHECK, check)
        atomic.write_text(self / self.CONFIG, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        atomic.write_json(self / self.SPEC, spec)
        atomic.write_json(self / self.PREPROCESSING, preprocessing)
        atomic.write_json(self / self.CLASSES, classes)
        atomic.write_json(self / self.DATA, data)
        atomic.write_json(self / self.WEIGHTS_INIT, weights_init)

    def save_class_weights(self, weights: dict) -> None:
        atomic.write_json(self / self.CLASS_WEIGHTS, weights)

    def checkpoint(self, state_dict: dict) -> None:
        save_weights(self / self.BEST, state_dict)

    def write_history(self, history: list[dict]) -> None:
        write_history(self / self.HISTORY, history)

    def save_model(self, state_dict: dict) -> None:
        save_weights(self / self.MODEL, state_dict)

    @staticmethod
    def evaluation_name(source=None, split: str = "test") -> str:
        """The run's own test split is evaluation.json; other splits and sources have their own."""
        if source is None:
            return RunDir.EVALUATION if split == "test" else f"evaluation-{split}.json"
        if isinstance(source, (tuple, list)):
            return "evaluation-arrays.json"
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", str(source)).strip("-")[:60] or "source"
        return f"evaluation-{slug}-{split}.json"

    def save_evaluation(self, ev: dict, source=None, split: str = "test") -> Path:
        return atomic.write_json(self / self.evaluation_name(source, split), ev)

    def finish(self, metrics: dict) -> None:
        atomic.write_json(self / self.METRICS, metrics)

    def save_resume(self, state: dict) -> None:
        """The training state after an epoch (tensors, numbers, lists, dicts: loaded back with
        torch.load(weights_only=True), which never runs code from the file)."""
        import torch

        atomic.write_with(self / self.RESUME, lambda tmp: torch.save(state, tmp))

    def read_resume(self) -> dict:
        import pickle

        import torch

        path = self / self.RESUME
        if not path.is_file():
            raise RunError(f"nothing to resume: the run has no {self.RESUME}", str(self.path),
                           "a run keeps a resume point from its first finished epoch until it completes; this "
                           "one completed or never finished an epoch: train again")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except OSError as e:
            raise RunError(f"cannot read {self.RESUME}: {e.strerror or e}", str(path), "check the file") from None
        except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, IndexError, KeyError, TypeError,
                AttributeError, UnicodeDecodeError) as e:  # garbage, text, empty: torch.load raises any of these
            raise RunError(f"cannot read {self.RESUME}: {first_line(e)}", str(path),
                           "the file is damaged; train again") from None
        if not isinstance(state, dict) or not {"epoch", "model", "optimizer", "rng", "history"} <= set(state):
            raise RunError(f"{self.RESUME} is not a resume point", str(path), "train again")
        check_resume_point(state, str(path))
        return state

    def discard_resume(self) -> None:
        (self / self.RESUME).unlink(missing_ok=True)

    def reopen(self) -> None:
        """A stopped run continues: marked running again by this process."""
        mark_running(self.path)

    def mark_finished(self, status: str, reason: str = "") -> None:
        mark_finished(self.path, status, reason)

    # ------------------------------------------------------------------ reading
    def is_run(self) -> bool:
        """A complete-enough run: the required files and some weights."""
        return self.path.is_dir() and all((self / f).is_file() for f in self.REQUIRED) and (
            (self / self.MODEL).is_file() or (self / self.BEST).is_file())

    def state(self) -> tuple[str, str]:
        return run_state(self.path)

    def read_spec(self) -> Spec:
        return parse_spec(_read_json(self / self.SPEC), str(self / self.SPEC))

    def read_class_names(self, spec: Spec) -> list[str]:
        classes = _read_json(self / self.CLASSES).get("class_names")
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise _damaged(f"{self.CLASSES} has no list of class names", self / self.CLASSES)
        if len(classes) != spec.num_classes:
            raise _damaged(f"{self.CLASSES} names {len(classes)} classes but the model has {spec.num_classes} "
                           "outputs", self / self.CLASSES)
        return list(classes)

    def read_preprocessing(self, spec: Spec) -> Preprocessing:
        f = self / self.PREPROCESSING
        try:
            prep = Preprocessing.from_dict(_read_json(f))
        except (KeyError, TypeError, ValueError) as e:
            raise _damaged(f"{f.name} is incomplete or invalid ({type(e).__name__}: {e})", f) from None
        c = spec.input_shape[2] if len(spec.input_shape) == 3 else 1
        if len(prep.offset) != c or len(prep.scale) != c or not all(
                math.isfinite(v) for v in prep.offset + prep.scale) or not all(v != 0 for v in prep.scale):
            raise _damaged(f"{f.name} does not fit a {c}-channel model (offset {list(prep.offset)}, "
                           f"scale {list(prep.scale)})", f)
        return prep

    def read_config(self) -> dict:
        import yaml

        f = self / self.CONFIG
        if not f.is_file():
            return {}
        try:
            config = yaml.safe_load(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise _damaged(f"cannot read {f.name}: {str(e).splitlines()[0]}", f) from None
        if config is None:
            return {}
        if not isinstance(config, dict):
            raise _damaged(f"{f.name} is not a mapping of keys", f)
        return config

    def read_data(self) -> dict:
        return _read_json(self / self.DATA)

    def read_metrics(self) -> dict:
        return _read_json(self / self.METRICS) if (self / self.METRICS).is_file() else {}

    def read_history(self) -> list[dict]:
        return read_history(self / self.HISTORY)

    def save_calibration(self, record: dict) -> None:
        atomic.write_json(self / self.CALIBRATION, record)

    def save_corruptions(self, table: dict) -> Path:
        return self.save_json(self.CORRUPTIONS, table)

    def save_json(self, name: str, record: dict) -> Path:
        """A JSON record among the run's files (one of the names above), written atomically."""
        return atomic.write_json(self / name, record)

    def read_optional(self, name: str) -> dict | None:
        """A JSON record that may be absent or damaged (check, weights_init, an evaluation): None then."""
        try:
            return _read_json(self / name)
        except RunError:
            return None

    def _fitted(self, name: str) -> dict | None:
        """calibration.json or ood.json: None when absent; damaged ones are a RunError (a run must
        not quietly predict without its calibration or its "unknown" threshold)."""
        return _read_json(self / name) if (self / name).exists() else None

    def read_temperature(self) -> float:
        """The calibration temperature (calibration.json), 1.0 without one."""
        record = self._fitted(self.CALIBRATION)
        if not record or record.get("method") != "temperature":
            return 1.0
        t = record.get("temperature")
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 < t < float("inf"):
            raise RunError(f"{self.CALIBRATION} is damaged: its temperature is {str(t)[:40]!r}, not a number > 0",
                           str(self / self.CALIBRATION), "fit it again: cnnlab calibrate RUN")
        return float(t)

    def read_ood(self) -> dict | None:
        """ood.json: the energy score's 101 percentiles (0..100) on held-out images, rising."""
        record = self._fitted(self.OOD_SCORE)
        if record is None:
            return None
        pct = record.get("percentiles")
        if not isinstance(pct, list) or len(pct) != 101 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in pct) or \
                any(b < a for a, b in zip(pct, pct[1:])):
            raise RunError(f"{self.OOD_SCORE} is damaged: it needs 101 rising percentiles", str(self / self.OOD_SCORE),
                           "fit it again: cnnlab calibrate RUN")
        return record

    def weights_file(self, weights: str | None = None) -> Path:
        f = self / (weights or self.MODEL)
        if weights is None and not f.is_file() and (self / self.BEST).is_file():
            f = self / self.BEST
        return f

    def describe(self, rid: str | None = None) -> dict:
        """What a listing shows, from the small JSON files alone (no weights loaded)."""
        spec = self.read_spec()
        h, w, *c = spec.input_shape
        state, why = self.state()
        return {"id": rid or self.path.name, "model": spec.name, "source": self.read_data().get("source"),
                "classes": self.read_class_names(spec), "image_size": [h, w],
                "color_mode": "rgb" if c and c[0] == 3 else "grayscale",
                "test_accuracy": (self.read_metrics().get("test") or {}).get("accuracy"),
                "params": spec.total_params,
                **({"warning": f"the run did not finish: {why}"} if state != "finished" else {})}

    def load(self, device: str = "cpu", weights: str | None = None) -> Run:
        """The run with its model (weights: model.safetensors, or best.safetensors if that is all).
        A run that is still training, or whose process crashed, loads with a warning."""
        p = self.path
        if not p.is_dir():
            raise MissingRunError("run directory not found", str(p), "give a folder under runs/ (ls runs/ lists them)")
        missing = [f for f in self.REQUIRED if not (p / f).is_file()]
        if missing:
            raise RunError(f"not a cnnlab run (missing {', '.join(missing)})", str(p),
                           "give a folder written by cnnlab train")
        spec = self.read_spec()
        state, why = self.state()
        wfile = self.weights_file(weights)
        if not wfile.is_file():
            raise RunError("the run has no weights", str(p),
                           "it is still in its first epoch; wait for it to finish" if state == "training" else
                           "its training did not finish an epoch; train again")
        model = build_module(spec)
        try:
            model.load_state_dict(load_weights(wfile))
        except RuntimeError as e:
            raise RunError(f"weights do not match {self.SPEC}: {str(e).splitlines()[0]}", str(wfile),
                           "the run directory is damaged; train again") from None
        model.to(device).eval()
        model.temperature = self.read_temperature()
        config = self.read_config()
        class_names = self.read_class_names(spec)
        prep = self.read_preprocessing(spec)
        run = Run(p, spec, model, prep, class_names, self.read_data(), config, self.read_metrics(),
                  self.read_history(), state=state, ood=self.read_ood())
        if state != "finished":
            warn(f"the run did not finish: {why}", str(p),
                 "wait for it to finish" if state == "training" else
                 f"continue it: cnnlab train --resume {p}" if (p / self.RESUME).is_file() else
                 "train again for a complete run")
        return run


def run_path(run) -> Path:
    """A run's directory, from a Run or a str or Path; anything else is a TypeError naming what it got."""
    if isinstance(run, Run):
        return run.path
    if not isinstance(run, (str, Path)):
        from .data.dataset import describe_value
        from .errors import ArgumentTypeError

        raise ArgumentTypeError(f"expected a run, got {describe_value(run)}", "run",
                                "pass the run cnnlab.train returned, or its directory (a str or Path)")
    return Path(run)


def as_run(run) -> Run:
    """A loaded run from a Run or its directory (run_path says what else is refused)."""
    return run if isinstance(run, Run) else load_run(run_path(run))


def load_run(path: str | Path, device: str = "cpu", weights: str | None = None) -> Run:
    """Load a run directory (weights: model.safetensors, or best.safetensors if that is all).

    A run that is still training, or whose process crashed, loads with a warning."""
    return RunDir(path).load(device, weights)
