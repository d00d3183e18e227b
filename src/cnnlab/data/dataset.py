"""In-memory datasets: uint8 images (N, H, W, C), int64 labels and class names."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError

SPLITS = ("train", "validation", "test")


def in_chunks(x, size: int = 2048):
    """Images as NumPy arrays of at most ``size``, in order: whole-split hashes and statistics
    never hold more than a chunk, wherever the images live (memory or the disk cache)."""
    for i in range(0, len(x), size):
        yield np.ascontiguousarray(x[i:i + size])


@dataclass
class Split:
    """One split: ``x`` uint8 (N, H, W, C); ``y`` int64 (N,) or None when unlabeled."""

    x: np.ndarray
    y: np.ndarray | None = None
    ids: list[str] | None = None  # file names or ids, for reports and prediction CSVs

    def __len__(self) -> int:
        return len(self.x)

    @property
    def labels(self) -> np.ndarray:
        """``y`` where labels are needed; an unlabeled split there is an error."""
        if self.y is None:
            raise DataError("the images have no labels", "data", "give a labeled source")
        return self.y

    def fingerprint(self) -> str:
        """A short hash of the pixels and labels: the same split gives the same text."""
        import hashlib

        h = hashlib.sha256(str(tuple(self.x.shape)).encode())
        for part in in_chunks(self.x):
            h.update(part.data)
        if self.y is not None:
            h.update(np.ascontiguousarray(self.y, np.int64).data)
        return h.hexdigest()[:16]

    def take(self, idx: np.ndarray) -> Split:
        ids = [self.ids[i] for i in idx] if self.ids is not None else None
        x = self.x.subset(idx) if hasattr(self.x, "subset") else self.x[idx]  # on disk: a view, not a copy
        return Split(x, None if self.y is None else self.y[idx], ids)


@dataclass
class Dataset:
    """A named source with its splits. ``splits`` holds 'train' and optionally
    'validation' and 'test'."""

    source: str
    class_names: list[str]
    splits: dict[str, Split]
    info: dict = field(default_factory=dict)  # where the data came from, how it was read

    @property
    def input_shape(self) -> tuple[int, int, int]:
        first = next(iter(self.splits.values()))
        return tuple(int(v) for v in first.x.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __getitem__(self, name: str) -> Split:
        return self.splits[name]

    def summary(self) -> str:
        h, w, c = self.input_shape
        parts = [f"{name} {len(s):,}" for name, s in self.splits.items()]
        return (f"{self.source}: {', '.join(parts)} images of {h}x{w}x{c}, "
                f"{self.num_classes} classes")


def check_labels(y: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    """Labels must be integers in [0, num_classes)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == num_classes:  # one-hot
        y = y.argmax(1)
    if y.ndim != 1:
        raise DataError(f"labels have shape {y.shape}; expected one label per image", where,
                        "store labels as a 1-D array of class indices")
    if y.dtype.kind == "f":
        if not np.all(np.mod(y, 1) == 0):
            raise DataError("labels are not whole numbers", where, "use class indices 0..K-1")
    elif y.dtype.kind not in "iu":
        raise DataError(f"labels have dtype {y.dtype}", where, "use integer class indices 0..K-1")
    y = y.astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        bad = int(y[(y < 0) | (y >= num_classes)][0])
        raise DataError(f"label {bad} is outside the class range 0..{num_classes - 1}", where,
                        f"give {bad + 1 if bad >= 0 else 'valid'} class names (--class-names FILE) "
                        "or fix the labels")
    return y


def as_uint8_images(x: np.ndarray, where: str) -> np.ndarray:
    """Images as uint8 (N, H, W, C): accept (N, H, W) and floats in [0, 1] or [0, 255]."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise DataError(f"images have shape {tuple(x.shape)}", where,
                        "store images as (N, H, W) or (N, H, W, C) with C = 1 or 3")
    if x.shape[-1] == 4:
        x = x[..., :3]
    if x.dtype != np.uint8:
        if x.dtype.kind not in "fiu":
            raise DataError(f"images have dtype {x.dtype}", where, "use uint8 or float pixels")
        x = x.astype(np.float64)
        if not np.isfinite(x).all():
            raise DataError("images contain NaN or infinite values", where, "fix the image array")
        if x.size and x.max() <= 1.0 and x.min() >= 0.0:
            x = x * 255.0
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"pixel values span {x.min():g}..{x.max():g}", where,
                            "store pixels as uint8 0..255 or floats in [0, 1]")
        x = np.rint(x).astype(np.uint8)
    return np.ascontiguousarray(x)


def describe_value(x) -> str:
    """A value as a message names it: its type and shape, never its contents (an array printed
    whole in an error line can run to megabytes)."""
    shape = getattr(x, "shape", None)
    if shape is not None:
        dtype = getattr(x, "dtype", None)
        return f"a {type(x).__module__.split('.')[0]}.{type(x).__name__} of shape {tuple(shape)}" + \
            (f" and dtype {dtype}" if dtype is not None else "")
    if isinstance(x, (list, tuple)):
        return f"a {type(x).__name__} of {len(x)} item(s)"
    text = repr(x)
    return f"a {type(x).__name__} ({text[:40] + '...' if len(text) > 40 else text})"


def from_torch(x):
    """A torch tensor (on any device) as a NumPy array; anything else as it is."""
    return x.detach().cpu().numpy() if hasattr(x, "detach") and hasattr(x, "cpu") else x


def as_labels(y) -> np.ndarray:
    """Labels as an array: a torch tensor, a list, or one label (for one image) too."""
    y = np.asarray(from_torch(y))
    return y.reshape(1) if y.ndim == 0 else y


def as_array(x, where: str) -> np.ndarray:
    """Images given as a NumPy array, a torch tensor or nested lists, as an array."""
    from ..errors import ArgumentTypeError

    x = from_torch(x)
    if isinstance(x, (list, tuple)):
        try:
            x = np.asarray(x)
        except ValueError:
            raise DataError(f"the arrays in the list have different shapes ({describe_value(x)})", where,
                            "stack images of one size into one array") from None
    if not isinstance(x, np.ndarray):
        raise ArgumentTypeError(f"expected an image array, got {describe_value(x)}", where,
                                "pass a NumPy array (N, H, W[, C]) or one image (H, W[, C])")
    if x.dtype == object:
        raise DataError(f"the array holds Python objects ({describe_value(x)})", where,
                        "pass a numeric array of pixels")
    return x


def model_batch(x, input_shape, where: str = "images") -> np.ndarray:
    """Images for a model of ``input_shape`` (H, W, C) as a uint8 batch (N, H', W', C').

    A batch is (N, H, W, C), or (N, H, W) for grayscale. One image without its batch axis is
    answered as a batch of one when it can only be an image: (H, W), or (H, W, C) with C the
    model's channel count (RGBA for an RGB model). A 3-D array that could be either one image or a
    batch of grayscale images is never guessed: it is refused with the shapes the model takes."""
    x = as_array(x, where)
    h, w, c = (int(v) for v in input_shape)
    expect = (f"a batch (N, {h}, {w}, {c})" + (f" or (N, {h}, {w})" if c == 1 else "") +
              f", or one image ({h}, {w}" + (")" if c == 1 else f", {c})"))
    if x.ndim == 2:  # one grayscale image (converted to the model's colour mode)
        return as_uint8_images(x[None], where)
    if x.ndim == 3:
        last, as_batch = x.shape[-1], tuple(x.shape[1:]) == (h, w)
        if last in (1, 3, 4) and not as_batch:
            if last == c or (c == 3 and last == 4):
                return as_uint8_images(x[None], where)
            raise DataError(f"an array of shape {tuple(x.shape)} could be one {last}-channel image or "
                            f"{x.shape[0]} images of {x.shape[1]}x{last}; the model takes {h}x{w}x{c} images",
                            where, f"pass {expect}; add the batch axis with x[None]")
        if as_batch and c == 3 and x.shape[0] == 3:
            raise DataError(f"an array of shape {tuple(x.shape)} could be one image with its channels first or "
                            f"3 grayscale images", where, f"pass {expect}: for one image, x.transpose(1, 2, 0)[None]")
        if not as_batch and x.shape[2] <= 4:
            raise DataError(f"an array of shape {tuple(x.shape)} is neither images of {h}x{w} nor one image",
                            where, f"pass {expect}")
        return as_uint8_images(x, where)
    if x.ndim == 4:
        if x.shape[-1] not in (1, 3, 4) and x.shape[1] in (1, 3):
            raise DataError(f"images have shape {tuple(x.shape)}, channels first", where,
                            f"pass channels last, {expect}: x.transpose(0, 2, 3, 1)")
        return as_uint8_images(x, where)
    raise DataError(f"an array of {x.ndim} dimension(s), shape {tuple(x.shape)}, is not images", where,
                    f"pass {expect}")


def label_form(raw: dict[str, tuple]) -> str:
    """How labels were given in arrays ``{split: (x, y)}``: "one-hot" rows or "class indices"."""
    return "one-hot" if any(np.ndim(y) == 2 for _, y in raw.values()) else "class indices"


def labeled_splits(raw: dict[str, tuple], class_names: list[str] | None,
                   where) -> tuple[list[str], dict[str, Split]]:
    """Splits from arrays ``{split: (x, y)}`` as users hold them (an .npz file, or the arrays
    ``keras.datasets`` gives): images (N, H, W[, C]) uint8 or floats in [0, 1], labels class
    indices or one-hot rows. Without ``class_names`` the classes are named '0', '1', ... up to the
    largest label. ``where(split, 'x' | 'y')`` names an array in messages."""
    checked = {}
    for split, (x, y) in raw.items():
        y = np.asarray(y)
        if y.dtype.kind not in "iuf" or y.ndim not in (1, 2):
            raise DataError(f"labels have shape {y.shape} and dtype {y.dtype}", where(split, "y"),
                            "store labels as a 1-D array of class indices (or one-hot rows)")
        if not len(y):
            raise DataError("no labels (an empty array)", where(split, "y"), "store at least one image and label")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise DataError("labels contain NaN or infinite values", where(split, "y"), "use class indices 0..K-1")
        checked[split] = (x, y)
    if class_names is None:
        top = max(int(np.max(y if y.ndim == 1 else y.argmax(1))) for _, y in checked.values())
        width = max((y.shape[1] for _, y in checked.values() if y.ndim == 2), default=0)
        class_names = [str(i) for i in range(max(top + 1, width, 2))]
    splits = {}
    for split, (x, y) in checked.items():
        x = as_uint8_images(np.asarray(x), where(split, "x"))
        y = check_labels(y, len(class_names), where(split, "y"))
        if len(x) != len(y):
            raise DataError(f"{len(x)} images but {len(y)} labels", where(split, "x"), "make them match")
        splits[split] = Split(x, y)
    shapes = {s.x.shape[1:] for s in splits.values()}
    if len(shapes) > 1:
        raise DataError(f"splits have different image shapes {sorted(shapes)}", where("train", "x"),
                        "give every split the same image size")
    return list(class_names), splits
