"""Inference: uint8 images in, logits or class probabilities out. The one arrays-to-probabilities
path: training's validation, ``Run.predict_proba``, the CLI, the server and the figures use it."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..data.preprocess import Preprocessing
from .allocator import keep_freed_memory
from .precision import autocast, autocast_dtype


def to_tensor(x: np.ndarray, device) -> torch.Tensor:
    """uint8 (N, H, W, C) numpy -> uint8 (N, C, H, W) tensor on ``device``, kept in
    channels_last memory order (the NHWC bytes as they are, no copy on the CPU)."""
    x = np.ascontiguousarray(x)
    if not x.flags.writeable:  # e.g. np.asarray of a PIL image; torch wants writable memory
        x = x.copy()
    return torch.from_numpy(x).permute(0, 3, 1, 2).to(device)


EVAL_BUDGET = 256 << 20  # bytes of activations one evaluation batch may hold


def bounded_batch(model, batch_size: int) -> int:
    """An evaluation batch whose largest layer output (and the one after it) stays within
    EVAL_BUDGET: 256 images of 28 x 28, fewer of 150 x 150 (a 150 x 150 RGB small-convnet batch
    of 256 held 0.7 GB in its first layer alone)."""
    spec = getattr(model, "spec", None)
    if spec is None:
        return batch_size
    per_image = 8 * max(math.prod(layer.output_shape) for layer in spec.layers)
    return max(1, min(batch_size, EVAL_BUDGET // per_image))


@torch.inference_mode()
def predict_logits(model, x: torch.Tensor, prep: Preprocessing, batch_size: int = 256,
                   tta: str = "none", dtype: torch.dtype | None = None) -> torch.Tensor:
    """Float32 logits for uint8 (N, C, H, W) images, in eval mode; ``tta="flip"`` averages the
    logits of each image and its mirror image; ``dtype``: autocast to bfloat16 or float16."""
    keep_freed_memory()
    was_training = model.training
    model.eval()
    off, inv = prep.tensors(x.device)
    batch_size = bounded_batch(model, batch_size)
    outs = []
    for i in range(0, len(x), batch_size):
        xb = ((x[i:i + batch_size].float() - off) * inv).contiguous(memory_format=torch.channels_last)
        with autocast(dtype, x.device):
            logits = model(xb).float()
            if tta == "flip":
                logits = (logits + model(xb.flip(3)).float()) / 2
        outs.append(logits)
    model.train(was_training)
    if not outs:
        return torch.zeros(0, 1)
    return torch.cat(outs)


def predict_proba(model, prep: Preprocessing, x: np.ndarray, image_size, color_mode: str, tta: str = "none",
                  batch_size: int = 256, precision: str = "fp32") -> np.ndarray:
    """Probabilities (N, K) for uint8 images (N, H, W[, C]); other sizes and colour modes are
    converted to the model's ``image_size`` and ``color_mode`` first. ``precision``: fp32, or
    auto / bf16 / fp16 (engine.precision)."""
    from ..data.dataset import as_uint8_images
    from ..data.sources import conform

    if hasattr(x, "subset"):  # images on disk (data.diskcache.DiskImages): a chunk at a time
        parts = [predict_proba(model, prep, x[i:i + 1024], image_size, color_mode, tta, batch_size, precision)
                 for i in range(0, len(x), 1024)]
        return np.concatenate(parts) if parts else np.zeros((0, model.spec.num_classes), np.float32)
    x = conform(as_uint8_images(x, "images"), image_size, color_mode)
    device = next(model.parameters()).device
    with torch.inference_mode():
        dtype = autocast_dtype(precision, device)
        logits = predict_logits(model, to_tensor(x, device), prep, batch_size, tta=tta, dtype=dtype)
        return model.probabilities(logits).cpu().numpy()
