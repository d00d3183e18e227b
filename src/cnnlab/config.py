"""The training configuration: defaults < config file < command-line flags.

One flat set of keys, the same in YAML files, on the command line (``--batch-size`` for
``batch_size``) and in the Python API. Unknown keys and bad values are rejected with the key's
name and what would work.
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .data.augment_options import AugmentOptions
from .data.preprocess import SCALE_MODES
from .data.sources import DataOptions
from .engine.schedules import SCHEDULES
from .errors import ConfigError
from .models.presets import FAST_RECIPE

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
MONITORS = ("val_loss", "val_accuracy")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig(DataOptions, AugmentOptions):
    """Every key of a training run. The data keys come from DataOptions, the augmentation keys
    (Keras ImageDataGenerator names) from AugmentOptions; these are the rest."""

    source: str = "fashion-mnist"
    val_source: str | None = None
    test_source: str | None = None
    val_split: float = 0.2
    test_split: float = 0.2
    scale: str = "255"
    # model
    model: str = "fashion-cnn"
    # optimisation
    epochs: int = 20
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float | None = None
    momentum: float = 0.0
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    schedule: str = "constant"
    warmup: float = 0.25
    tta: str = "none"
    recipe: str | None = None
    seed: int = 42
    device: str = "auto"
    threads: int | None = None
    time_limit: float | None = None  # seconds of training; stops after the batch that passes it
    class_weight: str = "none"  # none | balanced | a file of one weight per class (weighted loss)
    sampler: str = "none"  # none | balanced (each class drawn equally often)
    # data check before training (cnnlab check); strict: leakage across splits is an error
    check: bool = True
    strict: bool = False
    # early stopping and checkpoints
    monitor: str = "val_loss"
    patience: int | None = 2
    min_delta: float = 0.0
    restore_best: bool = True
    # run directory
    name: str | None = None
    runs_dir: str = "runs"

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
    def check_types(self) -> None:
        """Every value has its key's type: real booleans (a YAML 'false' in quotes is a string,
        not false), finite numbers, strings. Integers are accepted where a float is expected."""
        hints = typing.get_type_hints(TrainConfig)
        for f in fields(self):
            v = getattr(self, f.name)
            t = hints[f.name]
            allowed = typing.get_args(t) if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union \
                else (t,)
            allowed = tuple(typing.get_origin(a) or a for a in allowed)
            if v is None and type(None) in allowed:
                continue
            if isinstance(v, bool):
                ok = bool in allowed
            elif isinstance(v, int):
                ok = int in allowed or float in allowed
            elif isinstance(v, float):
                ok = float in allowed and math.isfinite(v)
            else:
                ok = any(isinstance(v, a) for a in allowed if a is not type(None))
            if not ok:
                names = {bool: "true or false", int: "a whole number", float: "a finite number", str: "a string",
                         list: "a list", tuple: "a list"}
                want = " or ".join(dict.fromkeys(names.get(a, a.__name__) for a in allowed if a is not type(None)))
                flag = "--" + f.name.replace("_", "-")
                raise ConfigError(f"{f.name} must be {want}, got {v!r}", flag,
                                  f"write {f.name}: " + ("true or false without quotes" if bool in allowed
                                                        else f"{want}" + (" (or leave it out)"
                                                                          if type(None) in allowed else "")))

    def validate(self) -> TrainConfig:
        self.check_types()
        def choice(key, options):
            v = getattr(self, key)
            if v not in options:
                raise ConfigError(f"invalid {key} {v!r}", "--" + key.replace("_", "-"),
                                  f"use one of {', '.join(map(str, options))}")

        choice("optimizer", OPTIMIZERS)
        choice("schedule", SCHEDULES)
        choice("tta", ("none", "flip"))
        if self.recipe is not None:
            choice("recipe", tuple(RECIPES))
        if self.tta == "flip" and not self.horizontal_flip:
            raise ConfigError("--tta flip needs a model trained on mirrored images", "--tta",
                              "add --horizontal-flip (without it, Fashion-MNIST test accuracy fell from "
                              "0.91 to 0.79: its shoes all face left)")
        if not 0 <= self.warmup <= 1:
            raise ConfigError(f"warmup must be a fraction of training in [0, 1], got {self.warmup}",
                              "--warmup", "use e.g. 0.25")
        choice("monitor", MONITORS)
        choice("sampler", ("none", "balanced"))
        choice("on_bad_image", ("error", "skip"))
        if self.class_weight not in ("none", "balanced") and not Path(self.class_weight).is_file():
            raise ConfigError(f"class_weight {self.class_weight!r} is not none, balanced or a file", "--class-weight",
                              "use balanced, or a file with one weight per class (one per line, or JSON "
                              "{\"class name\": weight})")
        choice("device", DEVICES)
        choice("color_mode", ("auto", "grayscale", "rgb"))
        choice("labels", ("en", "ko"))
        self.scale = str(self.scale)
        choice("scale", SCALE_MODES)
        positive = {"epochs": self.epochs, "batch_size": self.batch_size}
        for k, v in positive.items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{k} must be a positive integer, got {v!r}",
                                  "--" + k.replace("_", "-"), f"use e.g. {k.replace('_', '-')} 32")
        for k in ("val_split", "test_split"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise ConfigError(f"{k} must be in [0, 1), got {v!r}", "--" + k.replace("_", "-"),
                                  "use e.g. 0.2, or 0 for none")
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ConfigError(f"lr must be > 0, got {self.lr!r}", "--lr", "use e.g. 0.001")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 0):
            raise ConfigError(f"patience must be a whole number >= 0, got {self.patience!r}",
                              "--patience", "use e.g. 2, or 'none' to train every epoch")
        for k in ("momentum", "weight_decay", "min_delta", "cval"):
            v = getattr(self, k)
            if v < 0 or (k == "momentum" and v >= 1) or (k == "cval" and v > 255):
                rng = {"momentum": "in [0, 1)", "cval": "in [0, 255]"}.get(k, ">= 0")
                raise ConfigError(f"{k} must be {rng}, got {v!r}", "--" + k.replace("_", "-"),
                                  {"momentum": "use e.g. 0.9, or 0 for none", "cval": "use a pixel value, e.g. 0",
                                   "weight_decay": "use e.g. 0.0005, or 0 for none",
                                   "min_delta": "use e.g. 0.001, or 0"}[k])
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}",
                              "--label-smoothing", "use e.g. 0.1")
        if self.image_size is not None:
            s = self.image_size
            if not (isinstance(s, (list, tuple)) and len(s) == 2 and all(isinstance(v, int) and v > 0 for v in s)):
                raise ConfigError(f"image_size must be two positive integers, got {s!r}",
                                  "--image-size", "use e.g. --image-size 150 150")
            self.image_size = [int(s[0]), int(s[1])]
            from .data.images import MAX_PIXELS  # the most any image file may have

            if s[0] * s[1] > MAX_PIXELS:
                raise ConfigError(f"image_size {s[0]} x {s[1]} is {s[0] * s[1]:,} pixels per image", "--image-size",
                                  "use a size a model can take, e.g. --image-size 224 224")
        if self.time_limit is not None and not (isinstance(self.time_limit, (int, float)) and self.time_limit > 0):
            raise ConfigError(f"time_limit must be > 0 seconds, got {self.time_limit!r}", "--time-limit",
                              "use e.g. 300, or leave it out for no limit")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"threads must be >= 1, got {self.threads!r}", "--threads", "use e.g. 2")
        AugmentOptions.validate(self)
        return self


_GROUPED = {f.name for cls in (DataOptions, AugmentOptions) for f in fields(cls)}
KEYS = ([f.name for f in fields(TrainConfig) if f.name not in _GROUPED]
        + [f.name for f in fields(DataOptions)] + [f.name for f in fields(AugmentOptions)])


def check_keys(d: dict, where: str) -> None:
    for k in d:
        if k not in KEYS:
            close = difflib.get_close_matches(k, KEYS, 1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"unknown key '{k}'", where, f"{hint}valid keys: {', '.join(KEYS)}")


def load_config_file(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read config: {e.strerror}", str(path), "check the path") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse YAML: {str(e).splitlines()[0]}", str(path),
                          "fix the YAML syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("config is not a mapping", str(path), "write key: value lines")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    check_keys(data, str(path))
    return data


# Training recipes: settings that go together. A recipe fills in only the keys the user did not
# set; a preset may name its own (presets.Preset.recipe). "keras" is the notebooks' recipe (the
# defaults); "fast" trades the fixed learning rate and early stopping for a one-cycle schedule
# over a fixed number of epochs (3), batch 64, and label smoothing (models.presets.FAST_RECIPE);
# measurements in docs/performance.md.
RECIPES: dict[str, dict] = {"keras": {}, "fast": FAST_RECIPE}


def recipe_defaults(values: dict) -> dict:
    """The recipe's settings for a config: the named recipe, else the model preset's own."""
    name = values.get("recipe")
    if name is None:
        from .models.presets import PRESETS

        preset = PRESETS.get(str(values.get("model", TrainConfig.model)))
        return dict(preset.recipe or {}) if preset else {}
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe '{name}'", "--recipe", f"use one of {', '.join(RECIPES)}")
    return dict(RECIPES[name])


def make_config(file: str | Path | None = None, **overrides) -> TrainConfig:
    """Defaults < recipe < the YAML file's keys < ``overrides`` (None values are ignored,
    except ``patience=None`` given explicitly through ``explicit_none``)."""
    explicit_none = set(overrides.pop("explicit_none", ()))
    values: dict = {}
    if file:
        values.update(load_config_file(file))
    given = {k: v for k, v in overrides.items() if v is not None or k in explicit_none}
    check_keys(given, "arguments")
    values.update(given)
    return TrainConfig(**{**recipe_defaults(values), **values}).validate()
