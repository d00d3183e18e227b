"""One entry point for every data source: ``load_source("fashion-mnist", options)``.

Sources are registered (data/registry.py) where their loaders are: ``fashion-mnist``, ``mnist``,
``digits`` (data/builtin.py), ``folder:PATH``, ``csv:PATH``, ``npz:PATH`` (data/files.py; a bare
path to a folder, .csv or .npz file works too).
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..options import Choice, Rule, check_values, key
from . import builtin, files  # noqa: F401  (they register their sources)
from .dataset import Dataset, Split
from .registry import SOURCES


def _data(default, help, check=None, **kw):
    return key(default, help, check, group="data", **kw)


@dataclass
class DataOptions:
    """How a source is read: the data keys of the configuration (``cnnlab train --help``, group data)."""

    data_dir: str | None = _data(None, "where to look for fashion-mnist/mnist IDX files first (also $CNNLAB_DATA)",
                                 metavar="DIR")
    image_size: tuple[int, int] | list | None = _data(
        None, "resize images to H x W", Rule(lambda s: len(s) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in s), "two positive integers"),
        nargs=2, item=int, metavar=("H", "W"), example="150 150",
        default_text="for folders/CSV: their most common size")
    color_mode: str = _data("auto", "colour mode of the images", Choice(("auto", "grayscale", "rgb")))
    labels: str = _data("en", "language of built-in class names", Choice(("en", "ko")))
    class_names: str | None = _data(None, "class names: a file with one per line, or fashion-mnist / mnist",
                                    metavar="FILE")
    label_column: str | None = _data(None, "CSV label column", metavar="NAME",
                                     default_text="label, class, target or y")
    image_column: str | None = _data(
        None, "CSV image column: a path or an id; 'index' when the images are named by row number",
        metavar="NAME", default_text="image, path, file, filename or id")
    image_pattern: str | None = _data(None, "CSV image file template relative to the CSV, e.g. "
                                      "'images/train/{}.png'", metavar="TEMPLATE")
    download: bool = _data(True, "never download built-in datasets", default_text="download when not found")
    on_bad_image: str = _data("error", "an unreadable, truncated or oversized image file: stop with an error, "
                              "or leave it out (counted in the run)", Choice(("error", "skip")))
    cache: str = _data("auto", "where decoded folder and CSV images live: memory, or disk (decoded once into "
                       "$CNNLAB_CACHE, ~/.cache/cnnlab by default, and read a batch at a time; for data larger than "
                       "memory); auto: disk when they would need over half the free memory",
                       Choice(("auto", "memory", "disk")))
    quiet: bool = key(False, "no progress bar or epoch lines", group="output", short="-q")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_size"] = list(self.image_size) if self.image_size else None
        return d


def _names_hint() -> str:
    return ", ".join(k.usage for k in SOURCES.values())


def source_help() -> str:
    """The sources, for --help: every registered kind."""
    return _names_hint()


def parse_source(source: str) -> tuple[str, str | None]:
    """('fashion-mnist', None) or ('folder', PATH) etc.: the registered kind and its path."""
    kind = SOURCES.get(source)
    if kind is not None and not kind.takes_path:
        return source, None
    for kind in SOURCES.values():
        if kind.takes_path and source.startswith(kind.name + ":"):
            return kind.name, source[len(kind.name) + 1:]
    p = Path(source)
    for kind in SOURCES.values():
        if kind.claims is not None and kind.claims(p):
            return kind.name, source
    close = difflib.get_close_matches(source, [k.name for k in SOURCES.values() if not k.takes_path], 1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise DataError(f"unknown data source '{source}'", "SOURCE",
                    f"{hint}use {_names_hint()} (cnnlab datasets lists them)")


def absolute_source(source: str | None) -> str | None:
    """A source with its path made absolute (``folder:photos/`` -> ``folder:/home/me/photos``), so a
    run stored with it still finds its data from another working directory."""
    if not source or source in SOURCES:
        return source
    try:
        kind, path = parse_source(source)
    except DataError:
        return source
    if path is None:
        return source
    return f"{kind}:{os.path.abspath(os.path.expanduser(path))}"


def resolve_class_names(opts: DataOptions) -> list[str] | None:
    if not opts.class_names:
        return None
    if opts.class_names in builtin.IDX_SETS:
        return list(builtin.IDX_SETS[opts.class_names].class_names[opts.labels])
    return files.read_class_names(opts.class_names)


def conform(x: np.ndarray, size, color_mode: str, chunk_bytes: int = 1 << 28) -> np.ndarray:
    """Resize (bilinear) and convert the colour mode of in-memory uint8 NHWC images; resizing
    works in chunks of at most ``chunk_bytes`` of float pixels, so only the uint8 result must fit
    in memory."""
    if color_mode == "rgb" and x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    elif color_mode == "grayscale" and x.shape[-1] == 3:
        x = np.rint(x @ np.array([0.299, 0.587, 0.114])).clip(0, 255).astype(np.uint8)[..., None]
    if size is not None and tuple(x.shape[1:3]) != tuple(size):
        import torch
        import torch.nn.functional as F

        from .images import check_fits_in_memory

        check_fits_in_memory(len(x), size, x.shape[-1], "--image-size")
        out = np.empty((len(x), size[0], size[1], x.shape[-1]), np.uint8)
        per_image = 4 * x.shape[-1] * max(size[0] * size[1], x.shape[1] * x.shape[2])
        chunk = max(1, chunk_bytes // per_image)
        for i in range(0, len(x), chunk):
            t = torch.from_numpy(np.ascontiguousarray(x[i:i + chunk])).permute(0, 3, 1, 2).float()
            t = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
            out[i:i + chunk] = t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        x = out
    return x


def class_key(name: str) -> str:
    """Class names compared loosely: 'T-shirt/top', 't-shirt_top' and 'T Shirt Top' are one."""
    return re.sub(r"[\W_]+", "", name.lower())


def apply_label_language(ds: Dataset, labels: str, where: str) -> None:
    """``--labels ko`` on class names that are not the built-in ones: translate names that are a
    built-in set's English names (in any order, written as folder names allow); refuse anything it
    cannot translate (never ignore it)."""
    if labels == "en":
        return
    for spec in builtin.IDX_SETS.values():
        en, tr = list(spec.class_names["en"]), list(spec.class_names[labels])
        if en == tr:
            continue  # e.g. MNIST's digits: nothing to translate
        if set(ds.class_names) <= set(tr):
            return  # already in that language (e.g. classes.txt written with --labels ko)
        table = {class_key(e): t for e, t in zip(en, tr)}
        if all(class_key(n) in table for n in ds.class_names):
            ds.class_names = [table[class_key(n)] for n in ds.class_names]
            return
    numeric = ds.class_names == [str(i) for i in range(len(ds.class_names))]
    api = not where.startswith("--")  # the Python API's argument, not the command line's flag
    if numeric and len(ds.class_names) == 10:
        fix = ("if these are Fashion-MNIST's classes, pass class_names='fashion-mnist', labels='ko'" if api else
               "if these are Fashion-MNIST's classes, pass --class-names fashion-mnist --labels ko")
    else:
        fix = ("give the names with class_names=[...] (or a file, one per line), or leave out labels" if api else
               "give the names with --class-names FILE (one per line), or leave out --labels")
    shown = ", ".join(ds.class_names[:10]) + (", ..." if len(ds.class_names) > 10 else "")
    flag = f"labels={labels!r}" if api else f"--labels {labels}"
    raise DataError(f"{flag} translates the built-in Fashion-MNIST class names, but this data's "
                    f"classes are {shown}", where, fix)


def load_source(source: str, opts: DataOptions | None = None,
                require_labels: bool = True, on_missing: str = "error") -> Dataset:
    """The source's images, labels and class names. ``on_missing='skip'`` leaves out CSV rows
    whose image file does not exist (cnnlab check lists them) instead of refusing the table."""
    opts = opts or DataOptions()
    check_values(opts)  # the API passes options unchecked
    name, path = parse_source(source)
    kind = SOURCES[name]
    names = resolve_class_names(opts)
    ds = kind.load(path, opts, names, require_labels, on_missing)
    if names is not None and not kind.reads_class_names:
        if len(names) != ds.num_classes:
            raise DataError(f"{len(names)} class names for {ds.num_classes} classes", opts.class_names,
                            "give one name per class, in the order of the class indices (folders: sorted)")
        ds.class_names = names
    if not kind.translates and ds.class_names:
        apply_label_language(ds, opts.labels, "--labels")
    if kind.in_memory:
        for split, s in ds.splits.items():
            ds.splits[split] = Split(conform(s.x, opts.image_size, opts.color_mode), s.y, s.ids)
    return ds


def load_configured(cfg, opts: DataOptions | None = None, on_missing: str = "error") -> Dataset:
    """The source of a config (``cfg.source``) with its explicit validation and test sources
    (``cfg.val_source``, ``cfg.test_source``) added as splits; not split further."""
    opts = opts or cfg.data_options()
    ds = load_source(cfg.source, opts, on_missing=on_missing)
    # Later sources must match the first one's image size and colour mode.
    h, w, c = ds.input_shape
    opts.image_size = (h, w)
    opts.color_mode = "rgb" if c == 3 else "grayscale"
    for split, src in (("validation", cfg.val_source), ("test", cfg.test_source)):
        if src:
            extra = load_source(src, opts, on_missing=on_missing)
            part = extra.splits.get("train") or next(iter(extra.splits.values()))
            if extra.class_names != ds.class_names:
                raise DataError(f"classes {extra.class_names} differ from the training classes "
                                f"{ds.class_names}", src, "use the same class names in both")
            ds.splits[split] = part
    return ds
