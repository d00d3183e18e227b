"""A whole training run: data -> spec -> preprocessing -> fit -> run directory -> evaluation."""

from __future__ import annotations

import os
import time
import warnings

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
from .models import Spec, build_module, check_fits, spec_from
from .models.stats import weight_stats
from .runs import Run, RunDir, check_writable, environment, load_run


def resolve_spec(model: str | dict, input_shape: tuple, num_classes: int) -> Spec:
    """A preset name (adapted to the data), a spec file path or a spec mapping, validated
    against the data's image shape and number of classes."""
    spec = spec_from(model, input_shape, num_classes)
    check_fits(spec, input_shape, num_classes, model if isinstance(model, str) else "spec")
    return spec


def load_data(cfg: TrainConfig) -> Dataset:
    """The configured source with train / validation / test splits."""
    ds = prepare_splits(load_configured(cfg), cfg.val_split, cfg.test_split, cfg.seed)
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
          callbacks: list | tuple = ()) -> Run:
    """Train as configured and write the run directory; returns the loaded run.

    Everything that can be checked (config, spec, data) is checked before the run directory
    exists. Raises TrainingError (after saving the run and its best checkpoint) when the loss
    becomes NaN. A Ctrl-C or SIGTERM stops training cleanly: the run is saved and marked
    interrupted. status.json says 'running' from the directory's first second.
    """
    t_wall = time.perf_counter()
    from .engine.threads import LoadMeter

    # other processes' load while the data loads: the governor's first thread count (engine/threads.py)
    load_meter = LoadMeter() if cfg.threads is None else None
    cfg.validate()
    dist = join_processes(cfg)
    threads = set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    device = process_device(cfg, dist)
    progress_out = Progress(cfg.epochs, 1, cfg.quiet or not dist.is_main)
    check_writable(cfg.runs_dir)
    if spec_override is None and cfg.backbone is None:
        spec_from(cfg.model)  # an unknown preset or a bad spec file fails before data loads
    # A given dataset gets only the splits it lacks; prepare_splits keeps the ones it has.
    ds = load_data(cfg) if dataset is None else prepare_splits(dataset, cfg.val_split, cfg.test_split, cfg.seed)
    if spec_override is None and cfg.backbone is not None:
        from .models.backbones import backbone_spec
        from .models.pretrained import spec_flag

        spec_override = backbone_spec(cfg.backbone, ds.input_shape, ds.num_classes, pretrained=spec_flag(cfg.weights))
    spec = resolve_spec(spec_override if spec_override is not None else cfg.model,
                        ds.input_shape, ds.num_classes)
    check_training_memory(spec, cfg.batch_size, device)
    check_loss(cfg.loss, ds, spec)
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
    with warnings.catch_warnings():
        if not dist.is_main:  # every rank checks the same data; one says what it found
            warnings.simplefilter("ignore")
        check = data_check(cfg, ds, progress_out) if cfg.check else None
    # a bad class-weight file fails here, before the run directory exists
    weights = class_weights(cfg.class_weight, ds["train"].y, ds.class_names) if cfg.class_weight != "none" else None
    prep = Preprocessing.fit(cfg.scale, ds["train"].x)
    torch.manual_seed(cfg.seed)
    model = build_module(spec).to(device)
    if any(layer.args.get("kernel_initializer") == "patch_whitening" for layer in spec.layers):
        model.init_from_data(whitening_sample(prep, ds["train"].x, device))
    init_report = initial_weights(model, spec, cfg.init_from, progress_out, ds.class_names) if cfg.init_from else \
        pretrained_weights(model, spec, cfg.backbone, cfg.weights, ds.input_shape, progress_out, cfg.quiet) \
        if cfg.weights else None
    freeze_until(model, spec, cfg.freeze_until, progress_out, cfg.unfreeze_from)
    phase_frozen = head_phase(model, spec, cfg, init_report, dist, progress_out)
    if cfg.features and dist.active:
        raise ConfigError("--recipe features runs in one process (its features are computed once)", "--nproc",
                          "leave out --nproc")
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("every layer is frozen: nothing would train", "--freeze-until",
                          "freeze fewer layers (cnnlab summary shows their names)")
    if dist.rank:
        torch.manual_seed(cfg.seed + 7919 * dist.rank)  # the same initial model, each rank its own dropout

    rd = RunDir.create(cfg.runs_dir, cfg.name or f"{spec.name}-{ds.source.split(':')[0]}") if dist.is_main else None
    return _guarded(rd, dist, lambda: _train_in(rd, cfg, spec, ds, prep, model, device, threads, progress_out,
                                                t_wall, in_memory=dataset is not None, check=check, weights=weights,
                                                user_callbacks=callbacks, dist=dist, init_report=init_report,
                                                phase_frozen=phase_frozen, load_meter=load_meter))


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
    """Load an earlier run's (or a .safetensors file's) weights into every layer whose name (a
    file: position) and weight shapes match. The output layer is re-initialised when it differs or
    when the run's classes are others (new classes need a new head); any other layer that differs is
    an error naming it, before the run directory exists."""
    from collections import defaultdict
    from pathlib import Path

    from .errors import RunError, SpecError
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
    by_block: dict[int, dict] = defaultdict(dict)
    for k, v in theirs.items():
        parts = k.split(".", 2)
        if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit():
            by_block[int(parts[1])][parts[2]] = v
    state = model.state_dict()
    loaded, fresh, missing = [], [], []
    for i, layer in enumerate(spec.layers):
        mine = {k.split(".", 2)[2]: v for k, v in state.items() if k.startswith(f"blocks.{i}.")}
        if not mine:
            continue  # no weights (pooling, dropout, ...)
        j = names.get(layer.name) if names is not None else i
        if j is None or j not in by_block:
            missing.append(layer.name)
            continue
        src = by_block[j]
        if i == len(spec.layers) - 1 and new_classes:
            fresh.append(layer.name)  # the same number of classes, but other ones: a new head
            continue
        if set(src) != set(mine) or any(tuple(src[k].shape) != tuple(v.shape) for k, v in mine.items()):
            if i == len(spec.layers) - 1:
                fresh.append(layer.name)  # a new head: other classes
                continue
            got = {k: list(v.shape) for k, v in src.items() if k.endswith("weight")}
            want = {k: list(v.shape) for k, v in mine.items() if k.endswith("weight")}
            raise SpecError(f"layer '{layer.name}' has weights {got} in {source} but {want} here", "--init-from",
                            "start from a run with the same input shape and channel count (--image-size, "
                            "--color-mode) and the same layers")
        for k, v in src.items():
            state[f"blocks.{i}.{k}"] = v.to(state[f"blocks.{i}.{k}"].dtype)
        loaded.append(layer.name)
    if not loaded:
        raise SpecError(f"no layer of {source} matches this model", "--init-from",
                        "start from a run of the same model (cnnlab summary shows the layer names)")
    model.load_state_dict(state)
    progress_out.message(f"weights from {source}: loaded {', '.join(loaded)}"
                         + (f"; re-initialised {', '.join(fresh)} (new output)" if fresh else "")
                         + (f"; not in the source: {', '.join(missing)}" if missing else ""))
    return {"source": str(source), "loaded": loaded, "reinitialised": fresh, "not_in_source": missing}


def weights_file(backbone_text: str, weights: str, input_shape: tuple, quiet: bool = False,
                 include_top: bool = False) -> str:
    """``--weights``' local file for ``--backbone``: ``imagenet`` and URLs are fetched into the cache (once)."""
    from .models.backbones import parse_backbone
    from .models.pretrained import resolve_weights

    backbone, width = parse_backbone(backbone_text)
    size = input_shape[0] if input_shape[0] == input_shape[1] else None
    return str(resolve_weights(weights, backbone.name, width, size, include_top, quiet))


def pretrained_weights(model, spec: Spec, backbone_text: str, weights: str, input_shape: tuple,
                       progress_out: Progress, quiet: bool = False, include_top: bool = False) -> dict:
    """``--backbone NAME --weights imagenet|URL|FILE`` loaded into ``model`` (the file fetched once into
    the cache; BGR weights made to take RGB); ``include_top``: Keras' own top loads too."""
    from .models.backbones import parse_backbone

    path = weights_file(backbone_text, weights, input_shape, quiet, include_top)
    return backbone_weights(model, spec, path, progress_out, parse_backbone(backbone_text)[0].bgr,
                            new_head=not include_top)


def backbone_weights(model, spec: Spec, path: str, progress_out: Progress, bgr: bool = False,
                     new_head: bool = True) -> dict:
    """``--weights FILE.h5``: a backbone's pretrained weights, layer by layer by Keras' names; the
    new head starts fresh (``new_head=False``: the file's top loads too). Every other layer must be
    in the file, with weights that fit. ``bgr``: the weights expect BGR pixels (Keras' caffe mode);
    the first convolution's input channels are reversed, so that it takes cnnlab's RGB and computes
    the same numbers."""
    from .errors import SpecError
    from .models.kerasfiles import put_weights, read_weights

    head = [spec.layers[-1].name] if new_head else []
    order = [("input_layer", "InputLayer")] + [(layer.name, layer.type) for layer in spec.layers]  # Keras 3 files
    state, loaded, missing = put_weights(spec, model.state_dict(), read_weights(path, order), path, skip=tuple(head))
    if missing:
        raise SpecError(f"the weights file has no layer {missing[0]} ({len(missing)} of the backbone's layers are "
                        "not in it)", path, "give the weights file of the same backbone and width "
                        "(cnnlab backbones says which)")
    if bgr:
        from .models.kerasfiles import bgr_to_rgb

        bgr_to_rgb(spec, state)
    model.load_state_dict(state)
    progress_out.message(f"weights from {path}: loaded {len(loaded)} layers" +
                         (f"; new head {', '.join(head)}" if head else ""))
    return {"source": str(path), "loaded": loaded, "reinitialised": head, "not_in_source": []}


def freeze_until(model, spec: Spec, name: str | None, progress_out: Progress, unfreeze_from: str | None = None) -> None:
    """``--freeze-until NAME``: the layers up to and including NAME keep their weights.
    ``--unfreeze-from NAME``: every layer before NAME does (NAME may be a block: ``block5`` is the
    first layer whose name starts with ``block5_``), as Chollet unfreezes a network's last block."""
    if name is None and unfreeze_from is None:
        return
    import difflib

    from .errors import SpecError

    names = [layer.name for layer in spec.layers]
    asked, flag = (name, "--freeze-until") if name is not None else (unfreeze_from, "--unfreeze-from")
    found = asked if asked in names else next((n for n in names if n.startswith(f"{asked}_")), None)
    if found is None:
        close = difflib.get_close_matches(asked, names, 1)
        shown = ", ".join(names) if len(names) <= 30 else ", ".join(names[:30]) + f" ... ({len(names)} layers)"
        raise SpecError(f"no layer or block named '{asked}'" if unfreeze_from else f"no layer named '{asked}'", flag,
                        (f"did you mean {close[0]}? " if close else "") + f"the layers are {shown}")
    last = names.index(found) - (1 if name is None else 0)
    if last < 0:
        raise SpecError(f"'{asked}' is the first layer: nothing comes before it to freeze", flag,
                        "name a later layer, or leave the option out")
    for i in range(last + 1):
        model.freeze(i)
    frozen = names[:last + 1]
    listed = ", ".join(frozen) if len(frozen) <= 8 else f"{', '.join(frozen[:3])} ... {frozen[-1]}"
    progress_out.message(f"frozen: {len(frozen)} layer(s): {listed}")


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


def resume(path, dataset: Dataset | None = None, callbacks: list | tuple = (), **session) -> Run:
    """Continue a stopped run (killed, crashed, interrupted, out of time) from the end of its last
    finished epoch, in its own directory: the same data, weights, optimizer state, random states
    and history, so it ends as the uninterrupted run would have. ``session``: any of SESSION_KEYS.
    A run trained on in-memory data (the API's arrays) needs the same ``dataset`` again."""
    from .errors import RunError
    from .runs import check_resume_point, load_weights

    t_wall = time.perf_counter()
    rd = RunDir(path)
    if not rd.path.is_dir():
        raise MissingRunError("run directory not found", str(rd.path), "give a run directory (runs/...)")
    if not (rd / RunDir.CONFIG).is_file():
        raise RunError("not a cnnlab run (no config.yaml)", str(rd.path),
                       "give a run directory that cnnlab train wrote")
    dist = join_processes_for_resume()
    where, why = rd.state() if dist.is_main else ("stopped", "")
    if where == "training":
        raise RunError(f"cannot resume: {why}", str(rd.path), "wait for it to end, or stop it first")
    changed = [k for k in session if k not in SESSION_KEYS]
    if changed:
        raise ConfigError(f"a resumed run keeps its settings; {changed[0]} cannot change", changed[0],
                          f"resume with only {', '.join(SESSION_KEYS)}, or train a new run")
    state = rd.read_resume()
    stored = rd.read_config()
    cfg = TrainConfig.from_stored(stored)
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
    threads = set_threads(cfg.threads)
    device = process_device(cfg, dist)
    progress_out = Progress(cfg.epochs, 1, cfg.quiet or not dist.is_main)
    if data.get("in_memory") and dataset is None:
        raise RunError("this run was trained on in-memory data", str(rd.path),
                       "resume it from Python with the same data: cnnlab.resume(run, data)")
    ds = load_data(cfg) if dataset is None else prepare_splits(dataset, cfg.val_split, cfg.test_split, cfg.seed)
    saved = data.get("fingerprints", {})
    changed = [k for k, v in ds.splits.items() if k in saved and saved[k] != v.fingerprint()]
    if changed or set(saved) - set(ds.splits):
        raise DataError(f"the {(changed or sorted(set(saved) - set(ds.splits)))[0]} split differs from the one the "
                        "run started with", cfg.source, "resume with the same data, or train a new run")
    spec = rd.read_spec()
    prep = rd.read_preprocessing(spec)
    model = build_module(spec).to(device)
    freeze_until(model, spec, cfg.freeze_until, Progress(cfg.epochs, 1, quiet=True), cfg.unfreeze_from)
    phase_frozen = list(state.get("phase_frozen", []))
    if cfg.head_epochs and state["epoch"] < cfg.head_epochs:  # still in the first phase
        for i in phase_frozen:
            model.freeze(i)
    weights = rd.read_optional(RunDir.CLASS_WEIGHTS)
    weights = [float(weights[n]) for n in ds.class_names] if weights else None
    # the best weights as of the resume point (best.safetensors may hold a later, partial epoch's)
    best = state.get("best_model") or (state["model"] if state.get("best_epoch") and
                                       state["best_epoch"] == state["epoch"] else None)
    if best is None and state.get("best_epoch") and (rd / RunDir.BEST).is_file():  # a point from before 0.2
        best = load_weights(rd / RunDir.BEST)
    Progress(cfg.epochs, 1, quiet=not dist.is_main).message(
        f"resuming {rd.path} after epoch {state['epoch']} of {cfg.epochs}"
        + (f" (best epoch so far: {state['best_epoch']})" if state.get("best_epoch") else ""))
    if dist.rank:
        torch.manual_seed(cfg.seed + 7919 * dist.rank)
    if dist.is_main:
        rd.reopen()
        if best is not None:
            rd.checkpoint(best)
    return _guarded(rd if dist.is_main else None, dist,
                    lambda: _train_in(rd, cfg, spec, ds, prep, model, device, threads, progress_out, t_wall,
                                      in_memory=dataset is not None, check=None, weights=weights,
                                      user_callbacks=callbacks, resume=state, best_state=best, dist=dist,
                                      phase_frozen=phase_frozen))


def join_processes_for_resume() -> Dist:
    from .engine.distributed import SINGLE, init, launched

    return init("auto") if launched() else SINGLE


def _train_in(rd: RunDir, cfg: TrainConfig, spec: Spec, ds: Dataset, prep: Preprocessing, model, device,
              threads: int, progress_out: Progress, t_wall: float, in_memory: bool, check: dict | None,
              weights: list[float] | None, user_callbacks: list | tuple, resume: dict | None = None,
              best_state: dict | None = None, dist: Dist | None = None, init_report: dict | None = None,
              phase_frozen: list[int] | None = None, load_meter=None) -> Run | None:
    from .engine.distributed import SINGLE

    dist = dist or SINGLE
    main = dist.is_main  # only rank 0 writes the run directory
    if resume is None and main:
        _start(rd, cfg, spec, ds, prep, model, in_memory, check, weights, progress_out)
    y_tr = torch.from_numpy(ds["train"].y).to(device)
    val = ds.splits.get("validation")
    y_va = torch.from_numpy(val.y).to(device) if val is not None else None
    if cfg.features:  # Chollet's fast feature extraction: the head trains on cached pooled features
        x_tr, x_va, fit_prep = feature_inputs(model, spec, prep, ds, device, progress_out,
                                              autocast_dtype(cfg.precision, device))
    else:
        x_tr, fit_prep = on_device(ds["train"].x, device), prep
        x_va = on_device(val.x, device) if val is not None else None
    steps = -(-len(x_tr) // cfg.batch_size)
    monitor = cfg.monitor if val is not None else cfg.monitor.removeprefix("val_")  # no validation: training's
    earlier = dict(resume or {})
    resumes = [*earlier.get("resumes", []), earlier["epoch"]] if resume else []

    def bookkeeping(state) -> dict:  # saved with each resume point
        return {"resumes": resumes, "train_time_s": earlier.get("train_time_s", 0.0) + time.perf_counter()
                - state.t_start, "phase_frozen": list(phase_frozen or [])}

    callbacks = [BestCheckpoint(monitor, cfg.min_delta, cfg.restore_best,
                                (lambda epoch, state: rd.checkpoint(state)) if main else None, best_state=best_state)]
    if main:
        callbacks += [ProgressBar(Progress(cfg.epochs, steps, cfg.quiet)), HistoryWriter(rd.write_history)]
    callbacks.append(EarlyStopping(monitor, cfg.patience, cfg.min_delta))
    if cfg.time_limit is not None:
        callbacks.append(TimeLimit(cfg.time_limit))
    callbacks.append(ResumePoint(rd.save_resume if main else None, bookkeeping))
    governor = None
    if cfg.threads is None and device.type == "cpu":  # the free cores, measured (engine/threads.py)
        from .engine.threads import ThreadGovernor

        governor = ThreadGovernor(meter=load_meter)
        callbacks.append(governor)
    if phase_frozen and (resume is None or resume["epoch"] < cfg.head_epochs):
        from .engine.optim import DEFAULT_LR, make_optimizer

        lr = (cfg.lr or DEFAULT_LR[cfg.optimizer]) * cfg.finetune_factor
        callbacks.insert(0, Unfreeze(cfg.head_epochs, phase_frozen, lambda: make_optimizer(
            cfg.optimizer, [p for p in model.parameters() if p.requires_grad], lr, cfg.momentum, cfg.weight_decay)))
    try:
        result = fit(model, FitData(x_tr, y_tr, x_va, y_va, fit_prep), plan_from(cfg, weights),
                     callbacks + list(user_callbacks), resume=resume, dist=dist, run_dir=str(rd.path) if rd else None)
    finally:
        model.start = 0  # images again: the test split, predictions and exports run the whole network
    if not main:
        return None
    result.train_time_s += earlier.get("train_time_s", 0.0)
    rd.write_history(result.history)
    if result.best_epoch is not None:
        rd.save_model(model.state_dict())
    metrics = {"status": result.status, "stop_reason": result.stop_reason,
               "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
               "monitor": monitor,
               "restored_best": bool(cfg.restore_best and result.best_epoch is not None),
               "train_time_s": round(result.train_time_s, 3)}
    if resumes:
        metrics["resumed_after_epochs"] = resumes
    if governor is not None and governor.changes:  # the load changed the thread count: when, and to what
        metrics["threads_changed"] = [{"epoch": e, "step": s, "threads": t} for e, s, t in governor.changes]
    if init_report:
        metrics["init_from"] = init_report
    if dist.active:
        metrics["distributed"] = {"world_size": dist.world, "backend": dist.backend,
                                  "global_batch_size": cfg.batch_size,
                                  "batch_size_per_process": cfg.batch_size // dist.world}
    if result.status in ("completed", "early_stopped", "nan_loss"):
        rd.discard_resume()  # nothing left to continue; interrupted and timed-out runs keep theirs
    return _evaluate_and_finish(rd, cfg, ds, result, metrics, device, threads, progress_out, t_wall)


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
    feats = {k: as_inputs(cached_features(model, spec, prep, ds[k].x, k, progress_out.message, dtype), device)
             for k in ("train", "validation") if k in ds.splits}
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

    for k in ("data_dir", "init_from", "weights"):
        if d.get(k) and not (k == "weights" and is_remote(d[k])):
            d[k] = os.path.abspath(d[k])
    if d.get("class_names") and os.path.isfile(d["class_names"]):
        d["class_names"] = os.path.abspath(d["class_names"])
    if d.get("class_weight") not in (None, "none", "balanced") and os.path.isfile(d["class_weight"]):
        d["class_weight"] = os.path.abspath(d["class_weight"])
    return d


def _start(rd: RunDir, cfg: TrainConfig, spec: Spec, ds: Dataset, prep: Preprocessing, model, in_memory: bool,
           check: dict | None, weights: list[float] | None, progress_out: Progress) -> None:
    """The run directory's files that exist before the first step."""
    rd.start(config=stored_config(cfg), spec=spec.to_dict(), preprocessing=prep.to_dict(),
             classes={"class_names": ds.class_names, "labels": cfg.labels}, weights_init=weight_stats(model),
             check=check, data=data_record(ds, in_memory))
    progress_out.message(f"model {spec.name}: {spec.total_params:,} parameters; run directory {rd.path}")
    if weights is not None:
        rd.save_class_weights(dict(zip(ds.class_names, weights)))
        progress_out.message("class weights: " + ", ".join(f"{n} {v:.3g}" for n, v in zip(ds.class_names, weights)))


def _evaluate_and_finish(rd: RunDir, cfg: TrainConfig, ds: Dataset, result, metrics: dict, device, threads: int,
                         progress_out: Progress, t_wall: float) -> Run:
    """Test-set evaluation with the final weights, metrics.json, and the loaded run."""
    run_dir = rd.path
    if result.history and result.best_epoch:
        best = result.history[result.best_epoch - 1]
        metrics["best"] = {k: v for k, v in best.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy")}
    run = None
    if result.best_epoch is not None and result.status not in ("interrupted", "nan_loss") and "test" in ds.splits:
        run = load_run(run_dir, device=str(device))
        t = ds["test"]
        ev = evaluate_probs(run.predict_proba(t.x), t.y, ds.class_names)
        rd.save_evaluation({"split": "test", **ev})
        metrics["test"] = {"loss": ev["loss"], "accuracy": ev["accuracy"], "n": ev["n"]}
    metrics["wall_time_s"] = round(time.perf_counter() - t_wall, 3)
    metrics["environment"] = environment(str(device), threads, cfg.seed)
    metrics["environment"]["precision"] = describe(autocast_dtype(cfg.precision, device))
    metrics["environment"]["pid"] = os.getpid()
    rd.finish(metrics)
    progress_out.message(f"stopped: {result.stop_reason}")
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
                            (f"continue it: cnnlab train --resume {run_dir}" + (" (from Python: cnnlab.resume(RUN, "
                             "data))" if in_memory else "")) if resumable else "train again")
    run.metrics = metrics
    run.dataset = ds  # figures and the report reuse it instead of reloading
    return run
