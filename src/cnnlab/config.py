"""The training configuration: defaults < config file < command-line flags.

One flat set of keys, the same in YAML files, on the command line (``--batch-size`` for
``batch_size``) and in the Python API. Unknown keys and bad values are rejected with the key's
name and what would work.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .data.augment_options import AugmentOptions
from .data.preprocess import SCALE_MODES
from .data.sources import DataOptions, source_help
from .engine.precision import PRECISIONS
from .engine.schedules import SCHEDULES
from .errors import CnnlabError, ConfigError
from .options import (
    Choice,
    Interval,
    Places,
    Rule,
    canonical_values,
    check_names,
    check_values,
    key,
    keys_of,
    resolve_aliases,
)
from .recipes import RECIPES

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
LOSSES = ("auto", "sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy")
LOSS_ALIASES = {"SparseCategoricalCrossentropy": "sparse_categorical_crossentropy",
                "CategoricalCrossentropy": "categorical_crossentropy", "BinaryCrossentropy": "binary_crossentropy"}
MONITORS = ("val_loss", "val_accuracy")
DEVICES = ("auto", "cpu", "cuda")
# --help's groups, in this order (the augmentation group is data.augment_options.AUGMENTATION)
GROUPS = ("data", "model and training", "early stopping", "augmentation (training batches only)", "output")


def _class_weight_ok(v: str):
    return v in ("none", "balanced") or Path(v).is_file()


def _is_file(v: str) -> bool:
    return Path(v).is_file()


def _weights_source_ok(v: str) -> bool:
    return Path(v).is_dir() or (Path(v).suffix.lower() == ".safetensors" and Path(v).is_file())


def _weights_ok(v) -> bool:
    from .models.pretrained import is_remote

    return isinstance(v, str) and (is_remote(v) or Path(v).is_file())


def _backbone_ok(v: str):
    """A backbone name and width; a wrong one says parse_backbone's own words (did you mean, the
    widths it has)."""
    from .models.backbones import parse_backbone

    try:
        parse_backbone(v)
    except CnnlabError as e:
        return e.what, e.fix
    return True


def _data(default, help, check=None, **kw):
    return key(default, help, check, group="data", **kw)


def _stop(default, help, check=None, **kw):
    return key(default, help, check, group="early stopping", **kw)


def _out(default, help, check=None, **kw):
    return key(default, help, check, group="output", **kw)


@dataclass
class TrainConfig(DataOptions, AugmentOptions):
    """Every key of a training run, each declared once (cnnlab.options.key). The data keys come from
    DataOptions, the augmentation keys (Keras ImageDataGenerator names) from AugmentOptions."""

    source: str = _data("fashion-mnist", source_help, positional=True)  # the help lists the registered sources
    val_source: str | None = _data(None, "explicit validation set", metavar="SOURCE")
    test_source: str | None = _data(None, "explicit test set", metavar="SOURCE")
    val_split: float = _data(0.2, "stratified validation fraction of the training data, 0 for none (Keras' name "
                             "--validation-split works too)", Interval(0, 1, open_hi=True), metavar="F",
                             aliases=("validation_split",))
    test_split: float = _data(0.2, "test fraction held out when the source has no test set",
                              Interval(0, 1, open_hi=True), metavar="F")
    scale: str = _data("255", "pixel scaling, fitted on the training split only", Choice(SCALE_MODES))
    exclude: str | None = _data(None, "leave out the images a CSV names (the label-issues.csv cnnlab check "
                                "--label-issues wrote, or any CSV with an index or path column)",
                                Rule(_is_file, "an existing CSV file"), metavar="FILE.csv",
                                example="label-issues.csv")
    relabel: str | None = _data(None, "give the images a CSV names the label in its suggested column (a "
                                "label-issues.csv, or any CSV with index or path, and suggested)",
                                Rule(_is_file, "an existing CSV file"), metavar="FILE.csv",
                                example="label-issues.csv")
    # model
    model: str = key("fashion-cnn", "a preset (cnnlab models) or a spec file", short="-m", metavar="PRESET|SPEC")
    init_from: str | None = key(None, "start from an earlier run's weights (a run directory or a .safetensors file): "
                                "every layer whose name and shape match is loaded, a new output layer is not",
                                Rule(_weights_source_ok, "a run directory or a .safetensors file"),
                                metavar="RUN|FILE", example="runs/20261123-101500-fashion-cnn-fashion-mnist")
    backbone: str | None = key(None, "build this architecture (cnnlab backbones) for the data's images, then a new "
                               "head: GlobalAveragePooling2D, Dropout 0.2, Dense; NAME:WIDTH picks a width (alpha)",
                               Rule(_backbone_ok, "a backbone name, optionally :WIDTH"), metavar="NAME[:WIDTH]",
                               example="mobilenet_v2:0.35")
    weights: str | None = key(None, "with --backbone: its pretrained weights: imagenet (Keras Applications' file, "
                              "downloaded once into the cache and checked against Keras' published hash), a URL "
                              "(https://, http://, file://; #sha256=HEX checks it), or a Keras .h5 file",
                              Rule(_weights_ok, "imagenet, a URL, or an existing .h5 or .keras file"),
                              metavar="imagenet|URL|FILE.h5", example="imagenet")
    freeze_until: str | None = key(None, "freeze the layers up to and including this one (by name, as cnnlab "
                                   "summary shows them); frozen BatchNorm runs in inference mode", metavar="LAYER",
                                   example="max_pooling2d_1")
    unfreeze_from: str | None = key(None, "freeze every layer before this one, or before this block (block5: the "
                                    "first layer named block5_...); with --recipe finetune, where the second phase "
                                    "starts, as Chollet unfreezes a network's last block", metavar="LAYER",
                                    example="block5")
    head_epochs: int | None = key(None, "with --init-from: train only the layers it did not load (a new head) for "
                                  "this many epochs, then every layer with a fresh optimizer at lr x finetune-factor "
                                  "(--recipe finetune sets 3)", Interval(1), example="3")
    finetune_factor: float = key(0.1, "the learning rate of the second fine-tuning phase, as a fraction of lr",
                                 Interval(0, 1, open_lo=True))
    features: bool = key(False, "Chollet's fast feature extraction (--recipe features sets it): with --backbone, the "
                         "frozen backbone runs once per image, without augmentation; its pooled features are cached "
                         "on disk (keyed by its weights, the image size and the images) and the head trains on them, "
                         "so a second run with another head or lr reuses them")
    # optimisation
    epochs: int = key(20, "maximum number of epochs", Interval(1))
    batch_size: int = key(32, "batch size", Interval(1))
    optimizer: str = key("adam", "optimizer (Keras' class names Adam, AdamW, RMSprop, SGD work too)",
                         Choice(OPTIMIZERS))
    loss: str = key("auto", "the loss, in Keras' names, checked against the labels: sparse_categorical_crossentropy "
                    "(class indices), categorical_crossentropy (one-hot rows), binary_crossentropy (2 classes); "
                    "auto: what the labels and the model's head call for", Choice(LOSSES, aliases=LOSS_ALIASES))
    lr: float | None = key(None, "learning rate (none: Keras' default, 0.001; sgd 0.01)", Interval(0, open_lo=True),
                           example="0.001")
    momentum: float = key(0.0, "momentum for sgd and rmsprop", Interval(0, 1, open_hi=True),
                          example="0.9, or 0 for none")
    weight_decay: float = key(0.0, "weight decay (adamw: 0.004 when 0)", Interval(0),
                              example="0.0005, or 0 for none")
    label_smoothing: float = key(0.0, "label smoothing", Interval(0, 1, open_hi=True), example="0.1")
    schedule: str = key("constant", "learning-rate schedule over the whole run (per step)", Choice(SCHEDULES))
    warmup: float = key(0.25, "fraction of training spent warming up (onecycle, triangular, cosine)",
                        Interval(0, 1), metavar="F")
    tta: str = key("none", "test-time augmentation for evaluation and prediction: average with the mirror image",
                   Choice(("none", "flip")))
    calibration: str = key("temperature", "after training, fit one temperature on the validation split so the "
                           "probabilities are honest (the same arg-max, so the same accuracy); none: raw softmax",
                           Choice(("temperature", "none")))
    recipe: str | None = key(None, "a set of training settings (cnnlab models lists them); flags you give still "
                             "win", Choice(tuple(RECIPES)), default_text="the preset's own recipe, else keras")
    seed: int = key(42, "random seed: splits, initial weights, batches, augmentation", Interval(0))
    device: str = key("auto", "where to train; auto picks cuda when present", Choice(DEVICES))
    precision: str = key("auto", "training precision: auto (bfloat16 autocast where the hardware does bf16 natively: a "
                         "CPU with AVX-512 BF16 or AMX, a CUDA card with bf16; else float32), fp32, bf16, fp16; "
                         "weights, BatchNorm statistics and the loss stay float32", Choice(PRECISIONS))
    threads: int | None = key(None, "CPU threads; none: the cores other processes leave free, measured while "
                              "training (all of them on an idle machine)", Interval(1), example="2")
    time_limit: float | None = key(None, "stop training after S seconds (the best epoch so far is kept; none: "
                                   "no limit)", Interval(0, open_lo=True), metavar="S", example="300")
    class_weight: str = key("none", "weight the loss per class: balanced (n / (K * count)), or a file with one "
                            "weight per class (one per line, or JSON {\"class name\": weight})",
                            Rule(_class_weight_ok, "none, balanced or an existing file"),
                            metavar="balanced|none|FILE", example="balanced")
    sampler: str = key("none", "balanced: draw every class equally often in each epoch",
                       Choice(("none", "balanced")))
    # data check before training (cnnlab check); strict: leakage across splits is an error
    check: bool = _data(True, "skip the data check before training (duplicates, leakage, class balance)",
                        default_text="check")
    strict: bool = _data(False, "stop when the data check finds images shared across splits",
                         default_text="warn")
    # early stopping and checkpoints
    monitor: str = _stop("val_loss", "metric to monitor", Choice(MONITORS))
    patience: int | None = _stop(2, "epochs without improvement before stopping; none disables early stopping",
                                 Interval(0))
    min_delta: float = _stop(0.0, "smallest change that counts as improvement", Interval(0),
                             example="0.001, or 0")
    restore_best: bool = _stop(True, "keep the last epoch's weights instead of the best epoch's",
                               default_text="restore best")
    # run directory
    name: str | None = _out(None, "run name (none: <model>-<source>)")
    runs_dir: str = _out("runs", "where run directories are written", metavar="DIR")

    def __post_init__(self):
        if isinstance(self.scale, (int, float)) and not isinstance(self.scale, bool):
            self.scale = str(self.scale)  # YAML reads `scale: 255` as a number

    @classmethod
    def from_stored(cls, d: dict) -> TrainConfig:
        """A run's config.yaml back as a TrainConfig (keys a newer or older version wrote are left out)."""
        return cls(**{k: v for k, v in d.items() if k in keys_of(cls)})

    # ------------------------------------------------------------------ views
    def data_options(self) -> DataOptions:
        opts = DataOptions(**{f.name: getattr(self, f.name) for f in fields(DataOptions)})
        opts.image_size = tuple(self.image_size) if self.image_size else None
        return opts

    def augment_options(self) -> AugmentOptions:
        return AugmentOptions(**{f.name: getattr(self, f.name) for f in fields(AugmentOptions)})

    def to_dict(self) -> dict:
        """All keys, the run's own first, then data, then augmentation (for config.yaml)."""
        d = asdict(self)
        return {k: d[k] for k in KEYS}

    # ------------------------------------------------------------------ checks
    def validate(self, places: Places | None = None) -> TrainConfig:
        """Every key against its declaration (type and constraint), then the rules that join keys.
        ``places`` says where each value came from: the flag on the command line, else the key."""
        places = places or Places()
        canonical_values(self)  # Keras' spellings: Adam, RMSprop, SparseCategoricalCrossentropy, ...
        check_values(self, places)
        table = keys_of(TrainConfig)
        if self.tta == "flip" and not self.horizontal_flip:
            raise ConfigError("--tta flip needs a model trained on mirrored images", places.where(table["tta"]),
                              "add --horizontal-flip (without it, Fashion-MNIST test accuracy fell from "
                              "0.91 to 0.79: its shoes all face left)")
        if self.head_epochs is not None and (self.init_from is None and self.weights is None
                                             or self.head_epochs >= self.epochs):
            raise ConfigError(f"head_epochs {self.head_epochs} needs --init-from (or --weights) and fewer than epochs "
                              f"({self.epochs})", places.where(table["head_epochs"]),
                              "give --init-from RUN, and more --epochs than --head-epochs (or leave it out)")
        if self.features:
            clash = [k for k, on in (("--init-from", self.init_from is not None),
                                     ("--head-epochs", self.head_epochs is not None),
                                     ("--freeze-until", self.freeze_until is not None),
                                     ("--unfreeze-from", self.unfreeze_from is not None),
                                     ("augmentation", self.augment_options().active)) if on]
            if self.backbone is None or clash:
                raise ConfigError("features trains a new head on a frozen backbone's cached features" +
                                  (f", which rules out {clash[0]}" if clash else ", so it needs --backbone"),
                                  places.where(table["features"]),
                                  "give --backbone NAME (and --weights imagenet) without augmentation; to train "
                                  "further layers use --recipe finetune")
        if self.freeze_until is not None and self.unfreeze_from is not None:
            raise ConfigError("--freeze-until and --unfreeze-from both say where the frozen layers end",
                              f"{places.where(table['freeze_until'])} and {places.where(table['unfreeze_from'])}",
                              "give one")
        if self.weights is not None and (self.backbone is None or self.init_from is not None):
            raise ConfigError("weights loads a backbone's pretrained weights", places.where(table["weights"]),
                              "give --backbone NAME with it (and not --init-from)")
        if self.image_size is not None:
            from .data.images import MAX_PIXELS  # the most any image file may have

            h, w = self.image_size
            self.image_size = [int(h), int(w)]
            if h * w > MAX_PIXELS:
                raise ConfigError(f"image_size {h} x {w} is {h * w:,} pixels per image",
                                  places.where(table["image_size"]),
                                  "use a size a model can take, e.g. " + places.use(table["image_size"], "224 224"))
        return self


_GROUPED = {f.name for cls in (DataOptions, AugmentOptions) for f in fields(cls)}
KEYS = ([f.name for f in fields(TrainConfig) if f.name not in _GROUPED]
        + [f.name for f in fields(DataOptions)] + [f.name for f in fields(AugmentOptions)])


def check_keys(d: dict, where: str) -> dict:
    """``d`` with Keras' key names (validation_split) under cnnlab's; an unknown key is an error."""
    d = resolve_aliases(d, TrainConfig, where)
    check_names(d, TrainConfig, where)
    return d


def read_yaml_keys(path: str | Path, what: str, fix: str) -> dict:
    """A YAML file of keys (``-`` read as ``_``); unreadable, unparsable or not a mapping is one
    line naming ``what`` (e.g. "config") and ``fix``. An empty file is an empty mapping."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read {what}: {e.strerror}", str(path), "check the path") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse YAML: {str(e).splitlines()[0]}", str(path),
                          "fix the YAML syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} is not a mapping", str(path), fix)
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def load_config_file(path: str | Path) -> dict:
    return check_keys(read_yaml_keys(path, "config", "write key: value lines"), str(path))


def applied_recipe(values: dict) -> str | None:
    """The recipe a config follows: the one named, else the model preset's own, else keras (the
    defaults). None for a name that is not a recipe (validation says so)."""
    name = values.get("recipe")
    if name is None:
        from .models.presets import PRESETS

        preset = PRESETS.get(str(values.get("model", TrainConfig.model)))
        return (preset.recipe if preset else None) or "keras"
    return name if isinstance(name, str) and name in RECIPES else None


def recipe_defaults(values: dict) -> dict:
    """The recipe's settings for a config: the named recipe, else the model preset's own."""
    name = values.get("recipe")
    if name is None:
        return {**_backbone_settings(values), **RECIPES[applied_recipe(values) or "keras"].settings}
    if not isinstance(name, str) or name not in RECIPES:
        return {}  # validation names the bad recipe, with the flag or key it came from
    return {**_backbone_settings(values), **RECIPES[name].settings}


def _backbone_settings(values: dict) -> dict:
    """What a backbone implies (MobileNetV2's ImageNet weights take pixels scaled to [-1, 1])."""
    from .models.backbones import BACKBONES

    b = BACKBONES.get(str(values.get("backbone") or "").partition(":")[0])
    return dict(b.settings) if b else {}


def make_config(file: str | Path | None = None, *, flags: tuple | list = (), origins: dict | None = None,
                **overrides) -> TrainConfig:
    """Defaults < recipe < the YAML file's keys < ``overrides`` (None values are ignored,
    except ``patience=None`` given explicitly through ``explicit_none``). ``flags``: the keys given
    as command-line flags, so that an error names the flag (else it names the key); ``origins``:
    other keys' places, e.g. ``{"lr": "space.yaml"}`` (an error then says ``space.yaml: lr``)."""
    explicit_none = set(overrides.pop("explicit_none", ()))
    values: dict = {}
    files: dict = {}
    if file:
        values.update(load_config_file(file))
        files = dict.fromkeys(values, str(file))
    given = check_keys({k: v for k, v in overrides.items() if v is not None or k in explicit_none}, "arguments")
    values.update(given)
    for k in given:
        files.pop(k, None)
    files.update(origins or {})
    if values.get("backbone") and values.get("model") is not None:
        places = Places(flags, files)
        table = keys_of(TrainConfig)
        raise ConfigError(f"both a model ({values['model']}) and a backbone ({values['backbone']}) are given",
                          f"{places.where(table['model'])} and {places.where(table['backbone'])}",
                          "give one: --backbone builds its own model for the data")
    recipe = applied_recipe(values) or values.get("recipe")  # recorded by name in config.yaml
    defaults = recipe_defaults(values)
    if values.get("horizontal_flip") is False and "tta" not in values:
        defaults.pop("tta", None)  # a recipe's mirrored test pass goes with its mirrored training images
    return TrainConfig(**{**defaults, **values, "recipe": recipe}).validate(Places(flags, files))
