"""A whole training run: data -> spec -> preprocessing -> fit -> run directory -> evaluation."""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from .config import TrainConfig
from .data.dataset import Dataset
from .data.drawing import foreground_stats
from .data.preprocess import Preprocessing
from .data.sources import load_configured
from .data.split import carved_text, prepare_splits
from .engine.callbacks import (
    BestCheckpoint,
    EarlyStopping,
    HistoryWriter,
    ProgressBar,
    ResumePoint,
    TimeLimit,
    Unfreeze,
)
from .engine.distributed import Dist
from .engine.loop import FitData, fit, plan_from, resolve_device, to_tensor
from .engine.precision import autocast_dtype, describe
from .engine.progress import Progress
from .engine.signals import stop_on_sigterm
from .errors import ConfigError, DataError, MissingRunError, TrainingError, warn
from .evaluation import evaluate_probs
from .models import Spec, SpecModel, build_module, check_fits, spec_from
from .models.init import freeze_until, pretrained_weights
from .models.stats import weight_stats
from .runs import Run, RunDir, check_writable, environment, load_run

if TYPE_CHECKING:
    from .engine.threads import LoadMeter


def resolve_spec(model: str | dict, input_shape: tuple, num_classes: int) -> Spec:
    """A preset name (adapted to the data), a spec file path or a spec mapping, validated
    against the data's image shape and number of classes."""
    spec = spec_from(model, input_shape, num_classes)
    check_fits(spec, input_shape, num_classes, model if isinstance(model, str) else "spec")
    return spec


def load_data(cfg: TrainConfig) -> Dataset:
    """The configured source with train / validation / test splits."""
    from .data.edits import apply_label_edits

    raw = apply_label_edits(load_configured(cfg), cfg.exclude, cfg.relabel)
    ds = prepare_splits(raw, cfg.val_split, cfg.test_split, cfg.seed)
    if len(ds["train"]) == 0:
        raise DataError("the training split is empty", cfg.source, "add images")
    return ds


def check_training_memory(spec: Spec, batch_size: int, device) -> None:
    """A rough lower bound on a training step's memory (every layer's activations kept for the
    backward pass, their gradients, the weights with Adam's two moments and a gradient) against
    what the device has free: an image size or batch far too large is an error before training,
    not an out-of-memory kill minutes into it."""
    import math

    from .data.images import available_memory

    activations = sum(math.prod(layer.output_shape) for layer in spec.layers) * batch_size
    need = 4 * (2 * activations + 4 * spec.total_params)
    free: int | None
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = available_memory()
    if free is not None and need > 0.9 * free:
        raise ConfigError(f"a training step of {spec.name} on {list(spec.input_shape)} images in batches of "
                          f"{batch_size} needs at least {need / 2**30:,.1f} GiB; {free / 2**30:,.1f} GiB of "
                          f"{device.type} memory is free", "--batch-size / --image-size",
                          "use a smaller --batch-size or --image-size")


def data_check(cfg: TrainConfig, ds: Dataset, progress_out: Progress) -> dict:
    """The quick pass of ``cnnlab check`` on the loaded splits: leakage across splits is a warning
    (an error with --strict, before the run directory exists); saved as check.json in the run."""
    from .data.check import check_dataset, findings

    t0 = time.perf_counter()
    report = check_dataset(ds)
    found = findings(report, cfg.strict)
    shows = ("cnnlab.data.check.check_dataset(dataset) lists them" if ds.source == "arrays"  # no command reads them
             else f"cnnlab check {ds.source} shows examples")
    for level, msg in found:
        if level == "error":
            raise DataError(msg, ds.source, f"remove the copies from one split ({shows}), or train without --strict")
        if level == "warning":
            warn(msg, ds.source, shows)
    n_warn = sum(level == "warning" for level, _ in found)
    progress_out.message(f"data check: {n_warn or 'no'} warning(s) in {time.perf_counter() - t0:.1f} s "
                         "(--no-check skips it)")
    return report


def class_weights(setting: str, y: np.ndarray, class_names: list[str]) -> list[float]:
    """'balanced': n / (K * count) per class, as scikit-learn's compute_class_weight (a class
    with no training image gets 0); else a file: one weight per line in class order, or JSON, a
    list or {"class name": weight} (classes left out weigh 1)."""
    k = len(class_names)
    if setting == "balanced":
        counts = np.bincount(y, minlength=k).astype(np.float64)
        return [float(len(y) / (k * c)) if c else 0.0 for c in counts]
    import json

    path = setting
    try:
        text = open(path, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read class weights: {e}", path, "give a text file") from None
    try:
        data = json.loads(text) if text.lstrip()[:1] in ("[", "{") else [float(v) for v in text.split()]
    except ValueError as e:
        raise ConfigError(f"cannot parse class weights: {e}", path,
                          "write one number per line, or JSON {\"class name\": weight}") from None
    if isinstance(data, dict):
        unknown = [n for n in data if n not in class_names]
        if unknown:
            raise ConfigError(f"class weights name unknown class '{unknown[0]}'", path,
                              f"use the class names: {', '.join(class_names)}")
        data = [data.get(n, 1.0) for n in class_names]
    if not isinstance(data, list) or len(data) != k or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v >= 0 for v in data):
        raise ConfigError(f"need {k} non-negative class weights, one per class", path,
                          "write one number per line, in class order")
    if not any(data):
        raise ConfigError("every class weight is 0", path, "give at least one class a positive weight")
    return [float(v) for v in data]


def class_counts(ds: Dataset) -> dict:
    return {name: np.bincount(s.y, minlength=ds.num_classes).tolist()
            for name, s in ds.splits.items() if s.y is not None}


def whitening_sample(prep: Preprocessing, x: np.ndarray, device, n: int = 5000,
                     max_values: int = 4_000_000) -> torch.Tensor:
    """Up to ``n`` evenly spaced training images (fewer for large images: at most about
    ``max_values`` pixel values), preprocessed as the model sees them."""
    n = max(1, min(n, max_values // max(1, int(np.prod(x.shape[1:])))))
    return prep.apply_tensor(to_tensor(x[:: max(1, len(x) // n)][:n], device))


def on_device(x, device):
    """Images in memory move to the training device as one uint8 tensor; images in the disk cache
    stay there and are read a batch at a time."""
    return x if hasattr(x, "subset") else to_tensor(x, device)


def set_threads(threads: int | None) -> int:
    """``threads`` intra-op threads, or PyTorch's own count for this machine (a thread governor of an
    earlier run in this process may have lowered it)."""
    from .engine.threads import default_threads

    torch.set_num_threads(threads or default_threads())
    return torch.get_num_threads()


def train(cfg: TrainConfig, spec_override: dict | None = None, dataset: Dataset | None = None,
          callbacks: list | tuple = ()) -> Run | None:
    """Train as configured and write the run directory; returns the loaded run.

    Everything that can be checked (config, spec, data) is checked before the run directory
    exists. Raises TrainingError (after saving the run and its best checkpoint) when the loss
    becomes NaN. A Ctrl-C or SIGTERM stops training cleanly: the run is saved and marked
    interrupted. status.json says 'running' from the directory's first second.
    """
    return TrainingSession.start(cfg, spec_override, dataset, callbacks).run()


def train_here(cfg: TrainConfig, spec_override: dict | None = None, dataset: Dataset | None = None,
               callbacks: list | tuple = ()) -> Run:
    """``train`` in this one process (tune's trials, compare's folds): the run, never None."""
    run = train(cfg, spec_override, dataset, callbacks)
    if run is None:
        raise ConfigError("this training runs in one process", "torchrun", "start it without torchrun")
    return run


def _data_and_spec(cfg: TrainConfig, spec_override: dict | None, dataset: Dataset | None, device) -> tuple:
    """The data (a given dataset gets only the splits it lacks) and the checked spec for it."""
    if spec_override is None and cfg.backbone is None:
        spec_from(cfg.model)  # an unknown preset or a bad spec file fails before data loads
    ds = load_data(cfg) if dataset is None else prepare_splits(dataset, cfg.val_split, cfg.test_split, cfg.seed)
    if spec_override is None and cfg.backbone is not None:
        from .models.backbones import backbone_spec
        from .models.pretrained import spec_flag

        spec_override = backbone_spec(cfg.backbone, ds.input_shape, ds.num_classes, pretrained=spec_flag(cfg.weights))
    spec = resolve_spec(spec_override if spec_override is not None else cfg.model,
                        ds.input_shape, ds.num_classes)
    check_training_memory(spec, cfg.batch_size, device)
    check_loss(cfg.loss, ds, spec)
    return ds, spec


def _say_plan(cfg: TrainConfig, ds: Dataset, dist: Dist, progress_out: Progress) -> None:
    """The data, what was held out and the recipe, said before training; warnings about them."""
    progress_out.message(ds.summary())
    held_out = carved_text(ds, cfg.seed)
    if held_out:
        progress_out.message(held_out)
    progress_out.message(recipe_line(cfg))
    if cfg.horizontal_flip and ds.source in ("mnist", "digits") and dist.is_main:
        warn(f"this run trains on mirrored images (horizontal_flip, recipe {cfg.recipe}), but a mirrored digit is "
             "another digit or none", ds.source, "add --no-horizontal-flip")
    if "validation" not in ds.splits and cfg.patience is not None and dist.is_main:
        warn(f"there is no validation split, so early stopping (patience {cfg.patience}) and the best checkpoint "
             "watch the training loss", "--val-split 0",
             "give a validation split (--val-split 0.2), or train a fixed number of epochs (--patience none)")


def _initial_model(cfg: TrainConfig, spec: Spec, ds: Dataset, prep: Preprocessing, device, dist: Dist,
                   progress_out: Progress) -> tuple:
    """(model, what was loaded into it, the layers waiting for the second phase): built from the
    seed, with its starting weights (an earlier run, a backbone's file, patch whitening) and frozen
    layers; a model with nothing left to train is refused here."""
    torch.manual_seed(cfg.seed)
    model = build_module(spec).to(device)
    if any(layer.args.get("kernel_initializer") == "patch_whitening" for layer in spec.layers):
        model.init_from_data(whitening_sample(prep, ds["train"].x, device))
    init_report = initial_weights(model, spec, cfg.init_from, progress_out, ds.class_names) if cfg.init_from else \
        pretrained_weights(model, spec, cfg.backbone or "", cfg.weights, ds.input_shape, progress_out.message,
                           cfg.quiet) \
        if cfg.weights else None
    freeze_until(model, spec, cfg.freeze_until, progress_out.message, cfg.unfreeze_from)
    phase_frozen = head_phase(model, spec, cfg, init_report, dist, progress_out)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("every layer is frozen: nothing would train", "--freeze-until",
                          "freeze fewer layers (cnnlab summary shows their names)")
    return model, init_report, phase_frozen


def check_loss(loss: str, ds: Dataset, spec: Spec) -> None:
    """Keras' loss names against the labels and the model's head, as Keras would refuse them (with
    what to use instead). The loss cnnlab computes is the same cross-entropy for all three."""
    form = ds.info.get("label_form")  # arrays and .npz files say how their labels were given
    where = "loss"
    if loss in ("sparse_categorical_crossentropy", "categorical_crossentropy") and spec.head == "binary":
        raise ConfigError(f"{loss} needs one output per class, but the model ends in one sigmoid unit", where,
                          "use binary_crossentropy (or auto), or end the model in Dense(units=2, softmax)")
    if loss == "sparse_categorical_crossentropy" and form == "one-hot":
        raise ConfigError("sparse_categorical_crossentropy takes class indices, but the labels are one-hot rows",
                          where, "use categorical_crossentropy (or auto), or give y.argmax(1)")
    if loss == "categorical_crossentropy" and form == "class indices":
        raise ConfigError("categorical_crossentropy takes one-hot rows, but the labels are class indices", where,
                          "use sparse_categorical_crossentropy (or auto), or one-hot the labels "
                          "(keras.utils.to_categorical(y))")
    if loss == "binary_crossentropy" and ds.num_classes != 2:
        raise ConfigError(f"binary_crossentropy is for 2 classes, but the data has {ds.num_classes}", where,
                          "use sparse_categorical_crossentropy (or auto)")


def recipe_line(cfg: TrainConfig) -> str:
    """The settings a run trains with, said before it starts: a preset's recipe may set them without
    a flag (deep-bn-cnn trains at batch 500 with patience 10)."""
    stop = f"early stopping on {cfg.monitor} (patience {cfg.patience})" if cfg.patience is not None else \
        "no early stopping"
    extra = f", {cfg.schedule} schedule" if cfg.schedule != "constant" else ""
    extra += f", label smoothing {cfg.label_smoothing:g}" if cfg.label_smoothing else ""
    extra += ", mirrored images" if cfg.horizontal_flip else ""
    extra += " and a mirrored pass at test time" if cfg.tta == "flip" else ""
    return (f"recipe {cfg.recipe}: up to {cfg.epochs} epochs, batch {cfg.batch_size}, {cfg.optimizer} "
            f"lr {'default' if cfg.lr is None else format(cfg.lr, 'g')}{extra}, {stop}")


def head_phase(model, spec: Spec, cfg: TrainConfig, init_report: dict | None, dist: Dist,
               progress_out: Progress) -> list[int]:
    """``--head-epochs``: the loaded layers wait (frozen) while the new ones train; their indices."""
    if not cfg.head_epochs or not init_report:
        return []
    if dist.active:
        raise ConfigError("two-phase fine-tuning (--head-epochs, --recipe finetune) runs in one process",
                          "--head-epochs", "leave out --nproc, or --head-epochs")
    names = [layer.name for layer in spec.layers]
    head = len(names) - 1  # the output layer always trains in the first phase
    waiting = [names.index(n) for n in init_report["loaded"] if names.index(n) not in model.frozen | {head}]
    for i in waiting:
        model.freeze(i)
    rest = f"the layers from {cfg.unfreeze_from} on" if cfg.unfreeze_from else "every layer"
    progress_out.message(f"fine-tuning: {cfg.head_epochs} epoch(s) of the new layers, then {rest} at lr x "
                         f"{cfg.finetune_factor:g}")
    return waiting


def initial_weights(model, spec: Spec, source: str, progress_out: Progress,
                    class_names: list[str] | None = None) -> dict:
    """``--init-from RUN|FILE``: an earlier run's (or a .safetensors file's) weights into every layer
    whose name (a file: position) and weight shapes match (models/init.py: load_matching)."""
    from pathlib import Path

    from .errors import RunError
    from .models.init import load_matching
    from .runs import load_weights

    p = Path(source)
    if p.is_dir():
        rd = RunDir(p)
        if not rd.is_run():
            raise RunError("not a run directory (no spec.json or weights)", source,
                           "give a run directory from cnnlab train, or a .safetensors file")
        src_spec = rd.read_spec()
        names = {layer.name: i for i, layer in enumerate(src_spec.layers)}
        theirs = load_weights(rd.weights_file())
        new_classes = class_names is not None and rd.read_class_names(src_spec) != list(class_names)
    elif p.is_file() and p.suffix.lower() == ".safetensors":
        names, theirs, new_classes = None, load_weights(p), False
    else:
        raise ConfigError(f"init_from {source!r} is not a run directory or a .safetensors file", "--init-from",
                          "give a run directory (runs/...) or a .safetensors file")
    return load_matching(model, spec, theirs, names, new_classes, source, progress_out.message)


def join_processes(cfg: TrainConfig) -> Dist:
    """This process's place among data-parallel processes started by torchrun (a single process:
    world 1). The global batch must split evenly over them."""
    from .engine.distributed import SINGLE, check_global_batch, init, launched

    if not launched():
        return SINGLE
    check_global_batch(cfg.batch_size, int(os.environ["WORLD_SIZE"]))
    return init(cfg.device)


def process_device(cfg: TrainConfig, dist: Dist) -> torch.device:
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed image sizes: let cuDNN pick its fastest kernels
        if dist.active:
            return torch.device("cuda", dist.local_rank)  # one GPU per process
    return device


def _guarded(rd: RunDir | None, dist: Dist, train_in) -> Run | None:
    """Run ``train_in()`` with SIGTERM as a clean stop; the run directory says how it ended,
    whatever happened. Data-parallel ranks turn Ctrl-C and SIGTERM into a request that every rank
    follows at the same step; only rank 0 has a run directory, and only it returns the run."""
    from .engine.distributed import finish
    from .engine.signals import stop_flag_on_signals

    with stop_flag_on_signals() if dist.active else stop_on_sigterm():
        failed = True
        try:
            run = train_in()
            failed = False
        except BaseException as e:
            status = "interrupted" if isinstance(e, KeyboardInterrupt) else \
                "stopped" if isinstance(e, TrainingError) else "failed"
            try:
                if rd is not None:
                    rd.mark_finished(status, str(e) or type(e).__name__)
            except OSError:
                pass  # e.g. the disk is full: the original error is the one to report
            raise
        finally:
            if dist.active:
                finish(wait=not failed)
    if rd is not None:
        rd.mark_finished(run.metrics["status"], run.metrics["stop_reason"])
    return run


# Settings of a session, not of the run: a resumed run may change these (and only these).
SESSION_KEYS = ("quiet", "threads", "device", "time_limit")


def resume(path, dataset: Dataset | None = None, callbacks: list | tuple = (), **session) -> Run | None:
    """Continue a stopped run (killed, crashed, interrupted, out of time) from the end of its last
    finished epoch, in its own directory: the same data, weights, optimizer state, random states
    and history, so it ends as the uninterrupted run would have. ``session``: any of SESSION_KEYS.
    A run trained on in-memory data (the API's arrays) needs the same ``dataset`` again."""
    return TrainingSession.resume(path, dataset, callbacks, **session).run()


def _resume_point(rd: RunDir, dist: Dist, session: dict) -> tuple[dict, TrainConfig, dict]:
    """(the resume point, the run's configuration with ``session``'s changes, data.json) of a run
    that can be resumed; one error line for one that cannot."""
    from .errors import RunError
    from .runs import check_resume_point

    where, why = rd.state() if dist.is_main else ("stopped", "")
    if where == "training":
        raise RunError(f"cannot resume: {why}", str(rd.path), "wait for it to end, or stop it first")
    changed = [k for k in session if k not in SESSION_KEYS]
    if changed:
        raise ConfigError(f"a resumed run keeps its settings; {changed[0]} cannot change", changed[0],
                          f"resume with only {', '.join(SESSION_KEYS)}, or train a new run")
    state = rd.read_resume()
    cfg = TrainConfig.from_stored(rd.read_config())
    data = rd.read_data()
    validated = "validation" in (data.get("splits") or {})
    check_resume_point(state, str(rd / RunDir.RESUME), cfg.epochs,
                       ("loss", "accuracy", *(("val_loss", "val_accuracy") if validated else ())))
    for k, v in session.items():
        if v is not None or k == "time_limit":
            setattr(cfg, k, v)
    cfg.validate()
    ranks = len(state.get("rng_ranks", [None]))
    if ranks != dist.world:
        raise ConfigError(f"the run trained on {ranks} process(es); this is {dist.world}", "--nproc",
                          f"resume with {'--nproc ' + str(ranks) if ranks > 1 else 'one process'}: each process "
                          "continues its own random numbers")
    return state, cfg, data


def _same_data(cfg: TrainConfig, rd: RunDir, data: dict, dataset: Dataset | None) -> Dataset:
    """The run's data again, checked against the fingerprints it started with."""
    from .errors import RunError

    if data.get("in_memory") and dataset is None:
        raise RunError("this run was trained on in-memory data", str(rd.path),
                       "resume it from Python with the same data: cnnlab.resume(run, data)")
    ds = load_data(cfg) if dataset is None else prepare_splits(dataset, cfg.val_split, cfg.test_split, cfg.seed)
    saved = data.get("fingerprints", {})
    changed = [k for k, v in ds.splits.items() if k in saved and saved[k] != v.fingerprint()]
    if changed or set(saved) - set(ds.splits):
        raise DataError(f"the {(changed or sorted(set(saved) - set(ds.splits)))[0]} split differs from the one the "
                        "run started with", cfg.source, "resume with the same data, or train a new run")
    return ds


def _best_so_far(rd: RunDir, state: dict) -> dict | None:
    """The best weights as of the resume point (best.safetensors may hold a later, partial epoch's)."""
    from .runs import load_weights

    best = state.get("best_model") or (state["model"] if state.get("best_epoch") and
                                       state["best_epoch"] == state["epoch"] else None)
    if best is None and state.get("best_epoch") and (rd / RunDir.BEST).is_file():  # a point from before 0.2
        best = load_weights(rd / RunDir.BEST)
    return best


def join_processes_for_resume() -> Dist:
    from .engine.distributed import SINGLE, init, launched

    return init("auto") if launched() else SINGLE


def feature_inputs(model, spec: Spec, prep: Preprocessing, ds: Dataset, device, progress_out: Progress,
                   dtype) -> tuple:
    """``--recipe features``: the backbone's layers frozen, the pooled features of the training and
    validation images (from the cache, else computed once, in the run's precision ``dtype``), and the
    model set to start from them; returns (train inputs, validation inputs or None, the features'
    scaling: none)."""
    from .engine.featurecache import as_inputs, cached_features
    from .models.backbones import feature_layer

    upto = feature_layer(spec)
    for i in range(upto + 1):
        model.freeze(i)
    feats = {k: as_inputs(v, device) for k, v in cached_features(
        model, spec, prep, {k: ds[k].x for k in ("train", "validation") if k in ds.splits}, progress_out.message,
        dtype).items()}
    head = [layer.name for layer in spec.layers[upto + 1:]]
    progress_out.message(f"features: {spec.layers[upto].name} ({feats['train'].shape[1]:,} values per image) into "
                         f"the head: {', '.join(head)}")
    model.start = upto + 1
    return feats["train"], feats.get("validation"), Preprocessing.fit("none", np.zeros((1, 1, 1, 1), np.uint8))


def data_record(ds: Dataset, in_memory: bool) -> dict:
    """What data.json says of a run's data: its source, shapes, splits and their fingerprints."""
    h, w, c = ds.input_shape
    return {
        "source": ds.source, "image_size": [h, w], "channels": c,
        "color_mode": "rgb" if c == 3 else "grayscale", "splits": {k: len(v) for k, v in ds.splits.items()},
        "class_counts": class_counts(ds), "drawing": foreground_stats(ds["train"].x),
        # a hash of each split's pixels and labels: evaluate checks it scores the same images
        "fingerprints": {k: v.fingerprint() for k, v in ds.splits.items()},
        "in_memory": in_memory,
        **{k: v for k, v in ds.info.items() if k not in ("image_size", "color_mode")}}


def stored_config(cfg: TrainConfig) -> dict:
    """config.yaml's keys, with every path absolute: a run evaluated, reported or resumed from another
    working directory still finds its data and files."""
    import os

    from .data.sources import absolute_source

    d = cfg.to_dict()
    for k in ("source", "val_source", "test_source"):
        d[k] = absolute_source(d[k])
    from .models.pretrained import is_remote

    for k in ("data_dir", "init_from", "weights", "exclude", "relabel"):
        if d.get(k) and not (k == "weights" and is_remote(d[k])):
            d[k] = os.path.abspath(d[k])
    if d.get("class_names") and os.path.isfile(d["class_names"]):
        d["class_names"] = os.path.abspath(d["class_names"])
    if d.get("class_weight") not in (None, "none", "balanced") and os.path.isfile(d["class_weight"]):
        d["class_weight"] = os.path.abspath(d["class_weight"])
    return d


@dataclass
class TrainingSession:
    """One training run, from its checked set-up to its finished run directory. It owns what the
    run needs: the configuration, data, spec, preprocessing, model, device, data-parallel context,
    run directory (rank 0 only) and progress. ``start`` (a new run) and ``resume`` (a stopped run,
    from its resume point) are its two constructors; ``run()`` trains and returns the loaded run
    (None on ranks other than 0). train, resume, tune's trials, compare's folds and the API all
    train through it."""

    cfg: TrainConfig
    ds: Dataset
    spec: Spec
    prep: Preprocessing
    model: SpecModel
    device: torch.device
    dist: Dist
    rd: RunDir | None
    progress: Progress
    threads: int
    t_wall: float  # when the command started: metrics' wall time counts from it
    in_memory: bool  # the data came as arrays, not a source a resume can load again
    callbacks: tuple = ()  # the user's
    check: dict | None = None  # the data check's findings (a new run)
    class_weights: list[float] | None = None
    init_report: dict | None = None  # what --init-from or --weights loaded
    phase_frozen: list[int] = field(default_factory=list)  # layers waiting for fine-tuning's second phase
    load_meter: LoadMeter | None = None  # other processes' load as the data loaded (engine/threads.py)
    resume_point: dict | None = None  # the saved state a resumed run continues from
    best_state: dict | None = None  # a resumed run's best weights so far

    @classmethod
    def start(cls, cfg: TrainConfig, spec_override: dict | None = None, dataset: Dataset | None = None,
              callbacks: list | tuple = ()) -> TrainingSession:
        """A new run, checked (config, spec, data, weights) before its directory is created."""
        t_wall = time.perf_counter()
        from .engine.threads import LoadMeter

        # other processes' load while the data loads: the governor's first thread count (engine/threads.py)
        load_meter = LoadMeter() if cfg.threads is None else None
        cfg.validate()
        dist = join_processes(cfg)
        if cfg.features and dist.active:
            raise ConfigError("--recipe features runs in one process (its features are computed once)", "--nproc",
                              "leave out --nproc")
        threads = set_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        device = process_device(cfg, dist)
        progress = Progress(cfg.epochs, 1, cfg.quiet or not dist.is_main)
        check_writable(cfg.runs_dir)
        ds, spec = _data_and_spec(cfg, spec_override, dataset, device)
        _say_plan(cfg, ds, dist, progress)
        with warnings.catch_warnings():
            if not dist.is_main:  # every rank checks the same data; one says what it found
                warnings.simplefilter("ignore")
            check = data_check(cfg, ds, progress) if cfg.check else None
        # a bad class-weight file fails here, before the run directory exists
        weights = class_weights(cfg.class_weight, ds["train"].y, ds.class_names) if cfg.class_weight != "none" \
            else None
        prep = Preprocessing.fit(cfg.scale, ds["train"].x)
        model, init_report, phase_frozen = _initial_model(cfg, spec, ds, prep, device, dist, progress)
        if dist.rank:
            torch.manual_seed(cfg.seed + 7919 * dist.rank)  # the same initial model, each rank its own dropout
        rd = RunDir.create(cfg.runs_dir, cfg.name or f"{spec.name}-{ds.source.split(':')[0]}") if dist.is_main \
            else None
        return cls(cfg, ds, spec, prep, model, device, dist, rd, progress, threads, t_wall, dataset is not None,
                   tuple(callbacks), check, weights, init_report, phase_frozen, load_meter)

    @classmethod
    def resume(cls, path, dataset: Dataset | None = None, callbacks: list | tuple = (),
               **session) -> TrainingSession:
        """A stopped run, from its resume point; ``session``: any of SESSION_KEYS."""
        from .errors import RunError

        t_wall = time.perf_counter()
        rd = RunDir(path)
        if not rd.path.is_dir():
            raise MissingRunError("run directory not found", str(rd.path), "give a run directory (runs/...)")
        if not (rd / RunDir.CONFIG).is_file():
            raise RunError("not a cnnlab run (no config.yaml)", str(rd.path),
                           "give a run directory that cnnlab train wrote")
        dist = join_processes_for_resume()
        state, cfg, data = _resume_point(rd, dist, session)
        threads = set_threads(cfg.threads)
        device = process_device(cfg, dist)
        progress = Progress(cfg.epochs, 1, cfg.quiet or not dist.is_main)
        ds = _same_data(cfg, rd, data, dataset)
        spec = rd.read_spec()
        prep = rd.read_preprocessing(spec)
        model = build_module(spec).to(device)
        freeze_until(model, spec, cfg.freeze_until, lambda line: None, cfg.unfreeze_from)
        phase_frozen = list(state.get("phase_frozen", []))
        if cfg.head_epochs and state["epoch"] < cfg.head_epochs:  # still in the first phase
            for i in phase_frozen:
                model.freeze(i)
        stored = rd.read_optional(RunDir.CLASS_WEIGHTS)
        weights = [float(stored[n]) for n in ds.class_names] if stored else None
        best = _best_so_far(rd, state)
        Progress(cfg.epochs, 1, quiet=not dist.is_main).message(
            f"resuming {rd.path} after epoch {state['epoch']} of {cfg.epochs}"
            + (f" (best epoch so far: {state['best_epoch']})" if state.get("best_epoch") else ""))
        if dist.rank:
            torch.manual_seed(cfg.seed + 7919 * dist.rank)
        if dist.is_main:
            rd.reopen()
            if best is not None:
                rd.checkpoint(best)
        return cls(cfg, ds, spec, prep, model, device, dist, rd if dist.is_main else None, progress, threads,
                   t_wall, dataset is not None, tuple(callbacks), None, weights, None, phase_frozen,
                   resume_point=state, best_state=best)

    @property
    def out(self) -> RunDir:
        """The run directory, which rank 0 alone writes (``rd`` is None on the other ranks)."""
        if self.rd is None:
            raise RuntimeError("only rank 0 writes the run directory")
        return self.rd

    def run(self) -> Run | None:
        """Train (SIGTERM a clean stop); the run directory says how it ended, whatever happened."""
        return _guarded(self.rd, self.dist, self._train)

    # ------------------------------------------------------------------ the steps of run()
    def _train(self) -> Run | None:
        cfg, main = self.cfg, self.dist.is_main  # only rank 0 writes the run directory
        if self.resume_point is None and main:
            self._write_start()
        data = self._fit_data()
        val = data.x_val is not None
        monitor = cfg.monitor if val else cfg.monitor.removeprefix("val_")  # no validation: training's
        callbacks, governor = self._loop_callbacks(monitor, -(-len(data.x_train) // cfg.batch_size))
        try:
            result = fit(self.model, data, plan_from(cfg, self.class_weights), callbacks + list(self.callbacks),
                         resume=self.resume_point, dist=self.dist, run_dir=str(self.rd.path) if self.rd else None)
        finally:
            self.model.start = 0  # images again: the test split, predictions and exports run the whole network
        if not main:
            return None
        result.train_time_s += (self.resume_point or {}).get("train_time_s", 0.0)
        self.out.write_history(result.history)
        if result.best_epoch is not None:
            self.out.save_model(self.model.state_dict())
        metrics = self._metrics(result, monitor, governor)
        if result.status in ("completed", "early_stopped", "nan_loss"):
            self.out.discard_resume()  # nothing left to continue; interrupted and timed-out runs keep theirs
        return self._evaluate_and_finish(result, metrics)

    def _write_start(self) -> None:
        """The run directory's files that exist before the first step."""
        rd, ds = self.out, self.ds
        rd.start(config=stored_config(self.cfg), spec=self.spec.to_dict(), preprocessing=self.prep.to_dict(),
                 classes={"class_names": ds.class_names, "labels": self.cfg.labels},
                 weights_init=weight_stats(self.model), check=self.check, data=data_record(ds, self.in_memory))
        self.progress.message(f"model {self.spec.name}: {self.spec.total_params:,} parameters; run directory "
                              f"{rd.path}")
        if self.class_weights is not None:
            rd.save_class_weights(dict(zip(ds.class_names, self.class_weights)))
            self.progress.message("class weights: " + ", ".join(
                f"{n} {v:.3g}" for n, v in zip(ds.class_names, self.class_weights)))

    def _fit_data(self) -> FitData:
        """The training and validation inputs on the device: images, or with --recipe features the
        backbone's cached pooled features."""
        ds, device = self.ds, self.device
        y_tr = torch.from_numpy(ds["train"].y).to(device)
        val = ds.splits.get("validation")
        y_va = torch.from_numpy(val.y).to(device) if val is not None else None
        if self.cfg.features:  # Chollet's fast feature extraction: the head trains on cached pooled features
            x_tr, x_va, fit_prep = feature_inputs(self.model, self.spec, self.prep, ds, device, self.progress,
                                                  autocast_dtype(self.cfg.precision, device))
        else:
            x_tr, fit_prep = on_device(ds["train"].x, device), self.prep
            x_va = on_device(val.x, device) if val is not None else None
        return FitData(x_tr, y_tr, x_va, y_va, fit_prep)

    def _loop_callbacks(self, monitor: str, steps: int) -> tuple[list, object]:
        """The loop's own callbacks (best checkpoint, progress, history, early stopping, time limit,
        resume points, the thread governor, fine-tuning's second phase) and the governor (or None)."""
        cfg, rd = self.cfg, self.rd  # rd: rank 0 only
        earlier = dict(self.resume_point or {})
        resumes = self._resumes()

        def bookkeeping(state) -> dict:  # saved with each resume point
            return {"resumes": resumes, "train_time_s": earlier.get("train_time_s", 0.0) + time.perf_counter()
                    - state.t_start, "phase_frozen": list(self.phase_frozen or [])}

        callbacks: list = [BestCheckpoint(monitor, cfg.min_delta, cfg.restore_best,
                                          (lambda epoch, state: rd.checkpoint(state)) if rd is not None else None,
                                          best_state=self.best_state)]
        if rd is not None:
            callbacks += [ProgressBar(Progress(cfg.epochs, steps, cfg.quiet)), HistoryWriter(rd.write_history)]
        callbacks.append(EarlyStopping(monitor, cfg.patience, cfg.min_delta))
        if cfg.time_limit is not None:
            callbacks.append(TimeLimit(cfg.time_limit))
        callbacks.append(ResumePoint(rd.save_resume if rd is not None else None, bookkeeping))
        governor = None
        if cfg.threads is None and self.device.type == "cpu":  # the free cores, measured (engine/threads.py)
            from .engine.threads import ThreadGovernor

            governor = ThreadGovernor(meter=self.load_meter)
            callbacks.append(governor)
        if self.phase_frozen and (self.resume_point is None or self.resume_point["epoch"] < cfg.head_epochs):
            from .engine.optim import DEFAULT_LR, make_optimizer

            lr = (cfg.lr or DEFAULT_LR[cfg.optimizer]) * cfg.finetune_factor
            callbacks.insert(0, Unfreeze(cfg.head_epochs or 0, self.phase_frozen, lambda: make_optimizer(
                cfg.optimizer, [p for p in self.model.parameters() if p.requires_grad], lr, cfg.momentum,
                cfg.weight_decay)))
        return callbacks, governor

    def _resumes(self) -> list[int]:
        """The epochs after which this run was resumed, this time included."""
        point = self.resume_point
        return [*point.get("resumes", []), point["epoch"]] if point else []

    def _metrics(self, result, monitor: str, governor) -> dict:
        metrics = {"status": result.status, "stop_reason": result.stop_reason,
                   "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                   "monitor": monitor,
                   "restored_best": bool(self.cfg.restore_best and result.best_epoch is not None),
                   "train_time_s": round(result.train_time_s, 3)}
        if self._resumes():
            metrics["resumed_after_epochs"] = self._resumes()
        if governor is not None and governor.changes:  # the load changed the thread count: when, and to what
            metrics["threads_changed"] = [{"epoch": e, "step": s, "threads": t} for e, s, t in governor.changes]
        if self.init_report:
            metrics["init_from"] = self.init_report
        if self.dist.active:
            metrics["distributed"] = {"world_size": self.dist.world, "backend": self.dist.backend,
                                      "global_batch_size": self.cfg.batch_size,
                                      "batch_size_per_process": self.cfg.batch_size // self.dist.world}
        return metrics

    def _held_out_logits(self, run: Run) -> tuple[str, np.ndarray] | None:
        """The raw logits of the validation split (the training split when there is none): one
        pass, for both the temperature and the out-of-distribution threshold."""
        name = "validation" if "validation" in self.ds.splits else "train"
        x = self.ds[name].x
        return (name, run.predict_logits(x)) if len(x) else None

    def _calibrate(self, run: Run, metrics: dict, held: tuple[str, np.ndarray] | None) -> float | None:
        """Temperature scaling fitted on the validation split (calibration.json, applied by every
        later load of the run); the temperature, or None (--calibration none, too few or no
        validation images: then no calibration.json, not even one a resumed run had before)."""
        from .engine.calibration import fit_temperature, measures, unfit_reason

        run.model.temperature = 1.0  # raw probabilities; a temperature is fitted afresh or not at all
        why = "--calibration none" if self.cfg.calibration == "none" else \
            "no validation split to fit it on (--val-split)" if held is None or held[0] != "validation" else \
            unfit_reason(len(held[1]))
        t = 1.0
        if why is None and held is not None:
            raw = run.model.probabilities(torch.from_numpy(held[1])).numpy()
            t = fit_temperature(raw, self.ds["validation"].labels)
            why = unfit_reason(len(raw), t)
        if why is not None:
            (self.out / RunDir.CALIBRATION).unlink(missing_ok=True)
            metrics["calibration"] = {"method": "none"} if self.cfg.calibration == "none" else \
                {"method": "none", "why": why}
            return None
        measured = measures(raw, self.ds["validation"].labels, t)
        self.out.save_calibration({"method": "temperature", "temperature": t, "fitted_on": "validation",
                                   "validation": measured})
        run.model.temperature = t
        metrics["calibration"] = {"method": "temperature", "temperature": round(t, 6), "fitted_on": "validation"}
        self.progress.message(f"calibration: temperature {t:.3f} (validation NLL {measured['nll_raw']:.4f} -> "
                              f"{measured['nll']:.4f}, ECE {measured['ece_raw']:.4f} -> {measured['ece']:.4f})")
        return t

    def _fit_ood(self, run: Run, held: tuple[str, np.ndarray] | None) -> dict | None:
        """ood.json: the energy score's percentiles on the held-out images, from which ``predict
        --reject`` reads its threshold."""
        from .engine.ood import fitted, scores

        if held is None:
            return None
        record = fitted(scores(held[1], run.spec.head == "binary")["energy"], held[0])
        self.out.save_json(RunDir.OOD_SCORE, record)
        return record

    def _evaluate_and_finish(self, result, metrics: dict) -> Run:
        """Test-set evaluation with the final weights, metrics.json, and the loaded run."""
        rd, ds, device = self.out, self.ds, self.device
        run_dir = rd.path
        if result.history and result.best_epoch:
            best = result.history[result.best_epoch - 1]
            metrics["best"] = {k: v for k, v in best.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy")}
        run = None
        usable = result.best_epoch is not None and result.status not in ("interrupted", "nan_loss")
        if usable and ("test" in ds.splits or "validation" in ds.splits):
            run = load_run(run_dir, device=str(device))
            held = self._held_out_logits(run)
            temperature = self._calibrate(run, metrics, held)
            run = replace(run, ood=self._fit_ood(run, held))
            if "test" in ds.splits:
                t = ds["test"]
                probs = run.predict_proba(t.x)
                ev = evaluate_probs(probs, t.labels, ds.class_names)
                rd.save_evaluation({"split": "test", **ev})
                metrics["test"] = {"loss": ev["loss"], "accuracy": ev["accuracy"], "n": ev["n"]}
                if temperature is not None:
                    from .engine.calibration import measures, raw_of

                    metrics["calibration"]["test"] = measures(raw_of(probs, temperature), t.labels, temperature)
        metrics["wall_time_s"] = round(time.perf_counter() - self.t_wall, 3)
        metrics["environment"] = environment(str(device), self.threads, self.cfg.seed)
        metrics["environment"]["precision"] = describe(autocast_dtype(self.cfg.precision, device))
        metrics["environment"]["pid"] = os.getpid()
        rd.finish(metrics)
        self.progress.message(f"stopped: {result.stop_reason}")
        if result.status == "nan_loss":
            kept = (f"the best checkpoint (epoch {result.best_epoch}) is kept in {run_dir}"
                    if result.best_epoch else f"no epoch finished, so there is no checkpoint; see {run_dir}")
            raise TrainingError(f"training stopped: the loss became NaN at {result.nan_at}", str(run_dir),
                                f"lower --lr or check the data's scaling; {kept}")
        if run is None and result.best_epoch is not None:
            run = load_run(run_dir, device=str(device))
        if run is None:
            resumable = (run_dir / RunDir.RESUME).is_file()
            in_memory = (rd.read_optional(RunDir.DATA) or {}).get("in_memory")
            raise TrainingError(f"training ended before an epoch finished ({result.stop_reason})", str(run_dir),
                                (f"continue it: cnnlab train --resume {run_dir}" + (" (from Python: cnnlab.resume("
                                 "RUN, data))" if in_memory else "")) if resumable else "train again")
        return run.with_results(metrics, ds)  # figures and the report reuse the data instead of reloading
