"""Stratified, seeded train / validation / test splits."""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .dataset import Dataset, Split


def stratified_indices(y: np.ndarray, fraction: float, seed: int,
                       where: str, ordered: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with ``fraction`` of every class held out.

    Uses scikit-learn's ``train_test_split(stratify=y, random_state=seed)``, so the split is
    the one a notebook with the same seed gets; ``ordered=False`` keeps the notebook's (shuffled)
    order too, which its later StratifiedKFold and bootstrap samples depend on.
    """
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    try:
        keep, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=y)
    except ValueError as e:
        raise DataError(f"cannot make a stratified {fraction:g} split: {e}", where,
                        "add images to the smallest classes, change the split fraction, "
                        "or give an explicit validation set") from None
    return (np.sort(keep), np.sort(held)) if ordered else (keep, held)


def prepare_splits(ds: Dataset, val_split: float, test_split: float, seed: int) -> Dataset:
    """Return a dataset with train, validation and test splits.

    A test split is carved from train (``test_split``) only when the source has none; the
    validation split (``val_split``) likewise only when the source has no validation set.
    """
    splits: dict[str, Split] = dict(ds.splits)
    train = splits["train"]
    if train.y is None:
        raise DataError("the training data has no labels", ds.source, "give a labeled source")
    carved = {}  # split -> (images held out, images they came from, fraction): training says so
    if "test" not in splits and test_split > 0:
        keep, held = stratified_indices(train.y, test_split, seed, ds.source)
        splits["test"] = train.take(held)
        carved["test"] = (len(held), len(train), test_split)
        train = train.take(keep)
    if "validation" not in splits and val_split > 0:
        assert train.y is not None  # take() keeps the labels
        keep, held = stratified_indices(train.y, val_split, seed, ds.source)
        splits["validation"] = train.take(held)
        carved["validation"] = (len(held), len(train), val_split)
        train = train.take(keep)
    splits["train"] = train
    ordered: dict[str, Split] = {k: splits[k] for k in ("train", "validation", "test") if k in splits}
    info = dict(ds.info)
    if carved:
        info["carved"] = {**info.get("carved", {}), **carved}
    return Dataset(ds.source, ds.class_names, ordered, info)


def carved_text(ds: Dataset, seed: int) -> str | None:
    """What was held out of the given training images, e.g. "validation: 1,200 of the 6,000
    training images held out (val_split 0.2, stratified, seed 42); trained on 4,800"."""
    carved = ds.info.get("carved") or {}
    if not carved:
        return None
    parts = [f"{split}: {n:,} of the {of:,} training images held out ({'val' if split == 'validation' else 'test'}"
             f"_split {frac:g}, stratified, seed {seed})" for split, (n, of, frac) in carved.items()]
    return "; ".join(parts) + f"; trained on {len(ds['train']):,}"
