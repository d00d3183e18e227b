"""Chollet's fast feature extraction (``--recipe features``): the frozen backbone runs once per image,
without augmentation, and its pooled features are cached on disk, so that the head trains on them
and a second run with another head, learning rate or number of epochs reuses them.

The cache is ``$CNNLAB_HOME/features`` (else ``~/.cache/cnnlab/features``): one ``.npy`` file per
split, named by a hash of everything the features depend on: the layers up to the pooled features
(their kinds, arguments and shapes, hence the image size), their weights as loaded, the pixel
scaling, the precision of the pass (the run's: bfloat16 where the CPU has it) and the images'
pixels. Labels are not in it: relabelled images reuse their features.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from .. import atomic
from ..models.backbones import feature_layer
from .inference import to_tensor
from .precision import autocast


def features_home() -> Path:
    home = os.environ.get("CNNLAB_HOME")
    if home:
        return Path(home) / "features"
    from ..data.builtin import cache_dir

    return cache_dir() / "features"


def pooled_features(model, upto: int, prep, x, batch_size: int = 64, dtype: torch.dtype | None = None) -> np.ndarray:
    """float32 (N, D) outputs of layer ``upto`` for uint8 (N, H, W, C) images (an array, or images
    on disk), in eval mode, a batch at a time (``dtype``: autocast to bfloat16 or float16, as the
    run trains); the layers after it do not run."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    parts = []
    with torch.inference_mode():
        for s in range(0, len(x), batch_size):
            batch = prep.apply_tensor(to_tensor(np.asarray(x[s:s + batch_size]), device))
            with autocast(dtype, device):
                parts.append(model.run_to(batch, upto).flatten(1).float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def backbone_digest(model, spec, upto: int, prep, dtype: torch.dtype | None = None) -> hashlib._Hash:
    """A hash of what features depend on besides the images: the layers up to ``upto`` (kinds,
    arguments, shapes), their weights as loaded, the scaling and the precision of the pass."""
    h = hashlib.sha256()
    layers = [[info.type, info.name, info.args, list(info.input_shape)] for info in spec.layers[:upto + 1]]
    h.update(json.dumps([layers, prep.to_dict(), str(dtype)], sort_keys=True, default=str).encode())
    state = model.state_dict()
    for k in sorted(state):
        parts = k.split(".")
        if parts[0] == "blocks" and int(parts[1]) <= upto:
            h.update(k.encode())
            h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h


def cache_key(backbone: hashlib._Hash, x) -> str:
    """The cache file's name for images ``x`` through the backbone ``backbone`` hashes."""
    from ..data.dataset import in_chunks

    h = backbone.copy()
    h.update(str(tuple(x.shape)).encode())
    for part in in_chunks(x):
        h.update(part.data)
    return h.hexdigest()[:32]


def cached_features(model, spec, prep, splits: dict, message=print, dtype: torch.dtype | None = None) -> dict:
    """The pooled features of each split's images (``splits``: name -> images), from the cache,
    else computed once (``dtype``: the run's autocast type) and written there (atomically; a cache
    that cannot be written only costs the next run the pass again)."""
    upto = feature_layer(spec)
    backbone = backbone_digest(model, spec, upto, prep, dtype)

    def one(what: str, x) -> np.ndarray:
        path = features_home() / f"{cache_key(backbone, x)}.npy"
        if path.is_file():
            try:
                feats = np.load(path, allow_pickle=False)
                if feats.shape[0] == len(x):
                    message(f"features: {what} {len(x):,} images from the cache ({path})")
                    return feats
            except (OSError, ValueError):
                pass  # damaged: computed again below
        t0 = time.perf_counter()
        feats = pooled_features(model, upto, prep, x, dtype=dtype)
        took = time.perf_counter() - t0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_npy(path, feats)
            where = f"cached in {path}"
        except OSError as e:
            where = f"not cached ({type(e).__name__}: {e})"
        message(f"features: {what} {len(x):,} images through {spec.layers[upto].name} in {took:.1f} s "
                f"({len(x) / max(took, 1e-9):,.0f} images/s), {where}")
        return feats

    return {what: one(what, x) for what, x in splits.items()}


def as_inputs(feats: np.ndarray, device) -> torch.Tensor:
    """Features as the (N, D, 1, 1) float tensor the training loop batches like images."""
    return torch.from_numpy(np.ascontiguousarray(feats, np.float32)).to(device)[:, :, None, None]
