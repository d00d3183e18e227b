"""Ship a run: an ONNX model that takes the images users hold and returns probabilities.

The graph's input is a uint8 batch ``(N, H, W, C)`` at the run's image size (the batch dimension
is dynamic). The run's scaling (``preprocessing.json``), test-time flip (if the run uses one) and
calibration temperature are inside the graph. The outputs are the class probabilities ``(N, K)``
(a binary model, a final Dense(1, sigmoid), gives the probability of its second class, ``(N, 1)``)
and ``ood_score`` ``(N,)``: the energy score of the raw logits, higher for images like the training
data; metadata ``ood_threshold`` is the score below which ``predict --reject auto`` says unknown.
The file carries the class names, image size, colour mode, cnnlab version, run id and test accuracy
as metadata, and every export is checked against the run's own predictions (both outputs) before
it is kept.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from . import atomic
from .errors import CnnlabError, RunError, first_line
from .parity import Parity, certify, measure, parity_images, record, timed
from .runs import Run, RunDir, as_run

ONNX_HINT = "pip install 'cnnlab[onnx]' (onnx and onnxruntime)"
OUTPUTS = ("probabilities", "ood_score")


def require_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise CnnlabError("ONNX export and the onnx engine need the onnx and onnxruntime packages", "--format onnx",
                          ONNX_HINT) from None
    return onnx, onnxruntime


class RawImageModel(torch.nn.Module):
    """uint8 (N, H, W, C) -> (probabilities, ood score), with the run's scaling, flip averaging and
    temperature inside; the score is the energy of the raw logits (engine/ood.py)."""

    def __init__(self, run: Run):
        super().__init__()
        self.model = run.model.cpu().eval()
        off, inv = run.preprocessing.tensors("cpu")
        self.off: torch.Tensor
        self.inv: torch.Tensor
        self.register_buffer("off", off)
        self.register_buffer("inv", inv)
        self.flip = run.config.get("tta", "none") == "flip"
        self.binary = run.spec.head == "binary"
        self.temperature = float(getattr(run.model, "temperature", 1.0))  # calibration: in the graph

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (images.permute(0, 3, 1, 2).float() - self.off) * self.inv
        logits = self.model(x)
        if self.flip:
            logits = (logits + self.model(x.flip(3))) / 2
        energy = torch.nn.functional.softplus(logits[:, 0]) if self.binary else torch.logsumexp(logits, 1)
        if self.temperature != 1.0:
            logits = logits / self.temperature
        return (torch.sigmoid(logits) if self.binary else torch.softmax(logits, 1)), energy


def calibrated_state(run: Run) -> dict:
    """The run's weights with its temperature folded into the output layer: a Dense layer's
    kernel and bias divided by T give logits / T, so a Keras file that knows nothing of
    calibration predicts the calibrated probabilities."""
    state = dict(run.model.state_dict())
    t = float(getattr(run.model, "temperature", 1.0))
    if t == 1.0:
        return state
    last = len(run.spec.layers) - 1
    if run.spec.layers[-1].type != "Dense":
        raise CnnlabError(f"the run's temperature ({t:.3f}) can only be carried by a final Dense layer, and this "
                          f"model ends in {run.spec.layers[-1].type}", str(run.path),
                          "export the raw model: cnnlab calibrate RUN --method none, then export")
    for name in (f"blocks.{last}.0.weight", f"blocks.{last}.0.bias"):
        if name in state:
            state[name] = state[name] / t
    return state


def weights_digest(model) -> str:
    """A short hash of a model's weights and buffers (names, shapes and values) and its
    calibration temperature: which model an exported file was made from."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    if getattr(model, "temperature", 1.0) != 1.0:
        h.update(f"temperature {model.temperature!r}".encode())
    return h.hexdigest()[:16]


def metadata(run: Run) -> dict[str, str]:
    ood = {"ood_score": "energy (logsumexp of the raw logits), (N,): higher is more like the training data"}
    if run.ood:
        ood["ood_threshold"] = json.dumps(run.ood_threshold(0.95))  # keeps 95% of the held-out images
        ood["ood_percentiles"] = json.dumps(run.ood["percentiles"])  # any other share: read off these
    return {**ood, "weights_digest": weights_digest(run.model),
            "class_names": json.dumps(run.class_names, ensure_ascii=False),
            "image_size": json.dumps(list(run.image_size)), "color_mode": run.color_mode,
            "input": "uint8 images (N, H, W, C), pixel values 0..255",
            "output": ("probability of the second class (N, 1)" if run.spec.head == "binary"
                       else "class probabilities (N, K)"),
            "cnnlab_version": _version(), "run_id": run.path.name,
            "test_accuracy": json.dumps(run.metrics.get("test", {}).get("accuracy"))}


def _version() -> str:
    from .version import __version__

    return __version__


def export_onnx(run: Run, out: str | Path | None = None, opset: int = 17,
                check_images: np.ndarray | None = None) -> dict:
    """Write ``out`` (default RUN/model.onnx), checked against the run on ``check_images`` (default:
    its whole test split: parity.parity_images) before it is kept; export-check.json, MODEL_CARD.md
    and metadata.json go beside it. Returns where it went and the parity record."""
    onnx, _ = require_onnx()
    if not 7 <= opset <= 23:
        raise CnnlabError(f"opset {opset} is not one the exporter writes", "--opset", "use e.g. --opset 17")
    out = Path(out) if out else run.path / RunDir.ONNX
    images, split = (check_images, "given") if check_images is not None else parity_images(run)[:2]
    found = {}

    def write_checked(tmp: str) -> None:
        write_graph(run, tmp, opset)
        found["parity"] = check_onnx(tmp, run, images, split, out.name)
        certify(found["parity"], out)

    not_a_folder(out, "model.onnx")
    atomic.write_with(out, write_checked)  # kept only once it has been read back and checked
    return {"path": out, "opset": opset, **finish(run, found["parity"], out)}


def write_graph(run: Run, path: str | Path, opset: int, extra: dict | None = None) -> None:
    """The run's ONNX graph (RawImageModel) with cnnlab's metadata (and ``extra``), checked by
    onnx's checker, written to ``path``."""
    onnx, _ = require_onnx()
    h, w = run.image_size
    example = torch.zeros(2, h, w, 3 if run.color_mode == "rgb" else 1, dtype=torch.uint8)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(RawImageModel(run), (example,), str(path), input_names=["images"],
                              output_names=list(OUTPUTS),
                              dynamic_axes={"images": {0: "batch"}, **{o: {0: "batch"} for o in OUTPUTS}},
                              opset_version=opset, dynamo=False)
    except Exception as e:  # torch.onnx's UnsupportedOperatorError, SymbolicValueError, tracer errors, ...
        kinds = ", ".join(sorted({la.type for la in run.spec.layers}))
        raise CnnlabError(f"the model cannot be written as ONNX ({first_line(e)})", str(run.path),
                          f"its layers are {kinds}: every layer kind cnnlab ships exports; one of your own needs "
                          "a torch module torch.onnx can export (docs/architecture.md)") from None
    stamp(onnx.load(str(path)), {**metadata(run), **(extra or {})}, path)


def stamp(proto, meta: dict, path: str | Path) -> None:
    """An ONNX model with ``meta`` as its metadata, checked and saved to ``path``."""
    onnx, _ = require_onnx()
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "cnnlab"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def not_a_folder(out: Path, example: str) -> None:
    if out.is_dir():
        raise CnnlabError("the output is a folder", str(out), f"give a file name, e.g. --out {example}")


def finish(run: Run, p: Parity, out: Path) -> dict:
    """After a checked export: export-check.json, MODEL_CARD.md and metadata.json beside ``out``;
    what the export returns about its check."""
    from . import modelcard

    record(p, out.parent)
    modelcard.write(run, out.parent)
    return {"parity": p, "max_abs_diff": p.max_abs_dp, "max_score_diff": p.ood_score_max_rel_diff,
            "checked_images": p.images}


def check_onnx(path: str | Path, run: Run, images: np.ndarray, split: str, name: str | None = None,
               precision: str = "float32") -> Parity:
    """The parity of an ONNX file with the run (both outputs, when the file has the ood score)."""
    sess = session(path)
    names = tuple(o.name for o in sess.get_outputs() if o.name in OUTPUTS) or ("probabilities",)
    if names[0] != "probabilities":
        names = ("probabilities",)
    (ours, energy), torch_speed = timed(run.predict_scored, images)
    got, speed = timed(lambda x: onnx_outputs(sess, x, run.spec.head == "binary", 256, names), images)
    scores = (energy, got[1]) if len(names) > 1 else None
    return measure(ours, got[0], scores, file=name or path, runtime="onnxruntime-cpu", split=split,
                   images_per_s={"torch": torch_speed, "onnxruntime-cpu": speed}, precision=precision)


def session(path: str | Path):
    """An ONNX Runtime session on the CPU; a file ONNX Runtime cannot read (empty, truncated, not
    ONNX) is a RunError naming it."""
    _, ort = require_onnx()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own InvalidProtobuf, Fail, NoSuchFile, ...
        raise RunError(f"cannot read the ONNX model ({first_line(e)})", str(path),
                       "the file is damaged or not an ONNX model: delete it, and cnnlab export RUN writes it "
                       "again") from None


def check_identity(sess, run: Run, path: Path) -> None:
    """The exported file is this run's: made from the same weights, with the same classes and image
    size. A model.onnx copied from another run (another class count) once answered with the wrong
    classes."""
    meta = sess.get_modelmeta().custom_metadata_map
    fix = "delete it, or export this run again: cnnlab export RUN"
    if meta.get("weights_digest") != weights_digest(run.model):
        other = meta.get("run_id")
        names = meta.get("class_names")
        try:
            k = len(json.loads(names)) if names else None
        except ValueError:
            k = None
        what = f"run {other}" if other else "a model cnnlab did not export"
        extra = f" ({k} classes; this run has {len(run.class_names)})" if k is not None and \
            k != len(run.class_names) else ""
        raise RunError(f"{path.name} was exported from {what}{extra}, not from this run's weights", str(path), fix)


def onnx_outputs(sess, x: np.ndarray, binary: bool, batch_size: int = 256,
                 names: tuple[str, ...] = OUTPUTS) -> list[np.ndarray]:
    """The outputs ``names`` of an exported model for uint8 images, probabilities in cnnlab's layout
    ([1 - p, p] for binary)."""
    feed = sess.get_inputs()[0].name
    parts = [sess.run(list(names), {feed: np.ascontiguousarray(x[i:i + batch_size])})
             for i in range(0, len(x), batch_size)]
    outs = [np.concatenate([p[j] for p in parts]) if parts else np.zeros((0, 1) if n == "probabilities" else 0,
                                                                          np.float32) for j, n in enumerate(names)]
    if binary and names[0] == "probabilities":
        outs[0] = np.concatenate([1 - outs[0], outs[0]], 1)
    return outs


def onnx_proba(sess, x: np.ndarray, binary: bool, batch_size: int = 256) -> np.ndarray:
    """(N, K) probabilities from an exported model, in cnnlab's layout ([1 - p, p] for binary)."""
    return onnx_outputs(sess, x, binary, batch_size, ("probabilities",))[0]


def onnx_file(run: Run) -> Path:
    """RUN/model.onnx, exported now if it is missing or older than the run's weights."""
    path = run.path / RunDir.ONNX
    weights = RunDir(run.path).weights_file()
    if not path.is_file() or path.stat().st_mtime < weights.stat().st_mtime:
        try:
            export_onnx(run, path)
        except OSError as e:
            raise RunError(f"cannot write {path.name}: {e.strerror}", str(run.path),
                           "export it elsewhere: cnnlab export RUN --out FILE") from None
    return path


SNIPPET = """import numpy as np, onnxruntime as ort
from PIL import Image
sess = ort.InferenceSession("{path}")
x = np.asarray(Image.open("image.png").convert("{mode}").resize(({w}, {h})), np.uint8).reshape(1, {h}, {w}, {c})
probabilities, ood_score = sess.run(None, {{"images": x}})  # classes in metadata "class_names"
print(probabilities, ood_score)  # unknown when ood_score < metadata "ood_threshold\""""


def snippet(run: Run, path: Path) -> str:
    h, w = run.image_size
    c = 3 if run.color_mode == "rgb" else 1
    return SNIPPET.format(path=path, mode="RGB" if c == 3 else "L", w=w, h=h, c=c)


def use_onnx(run: Run) -> Run:
    """``run`` predicting with ONNX Runtime on its exported model (RUN/model.onnx, exported now when
    missing or older than the weights); a model.onnx of other weights is refused."""
    path = onnx_file(run)
    sess = session(path)
    meta = sess.get_modelmeta().custom_metadata_map
    ours = meta.get("run_id") == run.path.name
    if ours and ("weights_digest" not in meta or [o.name for o in sess.get_outputs()] != list(OUTPUTS)):
        export_onnx(run, path)  # exported by an older cnnlab (no weights digest, or no ood_score output)
        sess = session(path)
    check_identity(sess, run, path)
    return run.with_engine(OnnxEngine(sess, run.spec.head == "binary"))


class OnnxEngine:
    """Predictions through ONNX Runtime on an exported model: probabilities (``engine(x)``), and
    those with the ood score from one run of the graph (``engine.scored(x)``), of conformed uint8
    images."""

    def __init__(self, sess, binary: bool):
        self.sess, self.binary = sess, binary

    def __call__(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        return onnx_proba(self.sess, x, self.binary, batch_size)

    def scored(self, x: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        probs, energy = onnx_outputs(self.sess, x, self.binary, batch_size)
        return probs, energy


def export_keras(run: Run, out: str | Path | None = None, check_images: np.ndarray | None = None) -> dict:
    """Write ``out`` (default RUN/model.keras): a Keras 3 functional model that takes raw pixel
    values (the run's scaling is a leading Rescaling layer) and gives the calibrated probabilities
    and, from a model ending in Dense, the ood score (N, 1) as a second output; the class names and
    the ood threshold are in its metadata.json. The file is read back and checked against the run
    (both outputs) before it is kept."""
    from .models.kerasfiles import write_keras

    run = as_run(run)
    out = Path(out) if out else run.path / RunDir.KERAS
    not_a_folder(out, "model.keras")
    h, w = run.image_size
    prep = run.preprocessing
    per_channel = [1.0 / s for s in prep.scale]  # (x - off) / s = x * (1 / s) + (-off / s)
    offsets = [-o / s for o, s in zip(prep.offset, prep.scale)]
    one = len(set(per_channel)) == 1 and len(set(offsets)) == 1
    scale: float | list[float] = per_channel[0] if one else per_channel
    offset: float | list[float] = offsets[0] if one else offsets
    branch = ood_branch(run)
    meta: dict = {"class_names": run.class_names, "preprocessing": prep.to_dict(), "run_id": run.path.name,
                  "image_size": [h, w], "color_mode": run.color_mode, "cnnlab_version": _version(),
                  "outputs": ["probabilities", "ood_score"] if branch else ["probabilities"]}
    if branch and run.ood:
        meta.update(ood_threshold=run.ood_threshold(0.95), ood_percentiles=run.ood["percentiles"])
    images, split = (check_images, "given") if check_images is not None else parity_images(run)[:2]
    found: dict = {}

    def write_checked(tmp: str) -> None:
        write_keras(Path(tmp), run.spec, calibrated_state(run), (scale, offset), run.spec.name, meta, branch)
        found["parity"] = check_keras(tmp, run, images, split, out.name)
        certify(found["parity"], out)

    atomic.write_with(out, write_checked)  # kept only once it has been read back and checked
    return {"path": out, **finish(run, found["parity"], out),
            "flip_tta_left_out": run.config.get("tta", "none") == "flip"}


def keras_runtime():
    """Keras 3 (on the torch backend unless KERAS_BACKEND says otherwise), or None when it is not
    installed or cannot start here."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except Exception:  # not installed, or its backend is missing: ImportError, ModuleNotFoundError, ...
        return None
    return keras


def keras_load(keras, path: Path):
    """``keras.saving.load_model`` of a file whatever its name (Keras reads only names ending in
    .keras, and an export is checked under its temporary name)."""
    import tempfile

    if path.suffix == ".keras":
        return keras.saving.load_model(str(path))
    with tempfile.TemporaryDirectory() as d:
        link = Path(d) / "model.keras"
        link.symlink_to(path.resolve())
        return keras.saving.load_model(str(link))


def check_keras(path: str | Path, run: Run, images: np.ndarray, split: str, name: str | None = None) -> Parity:
    """The parity of a .keras file with the run's torch model without test-time flips (a Keras file
    has none), run by Keras 3 when it is installed, else by cnnlab's own reading of the file."""
    from .engine.inference import predict_proba
    from .models.kerasfiles import keras_outputs, parse_keras_spec, read_keras

    def run_torch(x: np.ndarray) -> np.ndarray:
        return predict_proba(run.model, run.preprocessing, x, run.image_size, run.color_mode, "none")

    ours, torch_speed = timed(run_torch, images)
    keras = keras_runtime()
    if keras is not None:
        model = keras_load(keras, Path(path))
        runtime = f"keras-{keras.__version__}-{keras.backend.backend()}"

        def run_keras(x: np.ndarray) -> list:
            out = model.predict(x.astype(np.float32), batch_size=256, verbose=0)
            return list(out) if isinstance(out, (list, tuple)) else [out]

        got, speed = timed(run_keras, images)
        probs, score = got[0], (got[1][:, 0] if len(got) > 1 else None)
        if run.spec.head == "binary":
            probs = np.concatenate([1 - probs, probs], 1)
    else:
        from .data.preprocess import Preprocessing

        kf = read_keras(path)
        runtime = "cnnlab-keras-reader (keras is not installed)"
        (probs, score), speed = timed(lambda x: keras_outputs(kf, parse_keras_spec(kf), x, Preprocessing.from_dict(
            (kf.cnnlab or {})["preprocessing"])), images)
    scores = (raw_energy(run, images), score) if carries_score(run) else None
    flip = run.config.get("tta", "none") == "flip"
    return measure(ours, probs, scores, file=name or path, runtime=runtime, split=split,
                   images_per_s={"torch": torch_speed, runtime: speed},
                   against="cnnlab predict without --tta flip" if flip else "cnnlab predict")


def carries_score(run: Run) -> bool:
    """Whether the run's .keras file has the ood score output: a model ending in Dense."""
    return run.spec.layers[-1].type == "Dense"


def ood_branch(run: Run) -> dict | None:
    """The Keras file's energy branch (kerasfiles.ood_weights) from the last layer's uncalibrated
    weights; None for a model that does not end in Dense (it then has one output)."""
    from .models.kerasfiles import ood_weights

    last = len(run.spec.layers) - 1
    if not carries_score(run):
        return None
    state = run.model.state_dict()
    kernel = state[f"blocks.{last}.0.weight"].detach().cpu().float().numpy()
    bias = state.get(f"blocks.{last}.0.bias")
    return ood_weights(kernel, np.zeros(len(kernel), np.float32) if bias is None else
                       bias.detach().cpu().float().numpy(), run.spec.head == "binary")


def raw_energy(run: Run, images: np.ndarray) -> np.ndarray:
    """The ood score of the run's torch model without test-time flips (what a Keras file computes)."""
    from .engine.inference import predict_logits, to_tensor
    from .engine.ood import scores

    with torch.inference_mode():
        device = next(run.model.parameters()).device
        logits = predict_logits(run.model, to_tensor(images, device), run.preprocessing, tta="none").cpu().numpy()
    return scores(logits, run.spec.head == "binary")["energy"]


KERAS_SNIPPET = """import os; os.environ.setdefault("KERAS_BACKEND", "torch")  # or tensorflow / jax
import keras, numpy as np
from PIL import Image
model = keras.saving.load_model("{path}")
x = np.asarray(Image.open("image.png").convert("{mode}").resize(({w}, {h})), np.float32).reshape(1, {h}, {w}, {c})
print(model.predict(x))  # raw pixel values in; probabilities and the ood score out"""


def keras_snippet(run: Run, path: Path) -> str:
    h, w = run.image_size
    c = 3 if run.color_mode == "rgb" else 1
    return KERAS_SNIPPET.format(path=path, mode="RGB" if c == 3 else "L", w=w, h=h, c=c)
