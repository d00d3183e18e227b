"""Looking inside a trained network: feature maps, Grad-CAM, weights and their statistics."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..models.stats import weight_stats, weighted_layers, weights  # noqa: F401 (figures use them)


def _input(run, images: np.ndarray) -> torch.Tensor:
    """Images (a batch, or one image without its batch axis) -> the normalised float batch the
    model sees."""
    from ..data.dataset import model_batch
    from ..data.sources import conform
    from ..engine.inference import to_tensor

    x = conform(model_batch(images, run.image_shape), run.image_size, run.color_mode)
    device = next(run.model.parameters()).device
    return run.preprocessing.apply_tensor(to_tensor(x, device)).contiguous()


def one_image(run, image) -> np.ndarray:
    """One image (H, W, C) uint8 as the model sees it, from (H, W), (H, W, C) or a batch of one."""
    from ..data.dataset import model_batch
    from ..data.sources import conform
    from ..errors import DataError

    x = conform(model_batch(image, run.image_shape, "image"), run.image_size, run.color_mode)
    if len(x) != 1:
        raise DataError(f"expected one image, got a batch of {len(x)}", "image", "pass one image, e.g. x[0]")
    return x[0]


def conv_indices(model) -> list[int]:
    return [i for i, info in enumerate(model.spec.layers) if info.type == "Conv2D"]


@torch.inference_mode()
def feature_maps(run, image: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(layer name, (C, H, W) activations) for every Conv2D layer, for one image (H, W, C)."""
    model = run.model.eval()
    outs = model.features(_input(run, one_image(run, image)[None]))
    return [(model.spec.layers[i].name, outs[i][0].float().cpu().numpy()) for i in conv_indices(model)]


def grad_cam(run, images: np.ndarray, class_index: int | list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM heat-maps (N, H, W) in [0, 1] at the input's size for the last Conv2D layer,
    for the predicted class (or ``class_index``); returns (cams, classes)."""
    model = run.model.eval()
    convs = conv_indices(model)
    if not convs:
        raise ValueError("Grad-CAM needs a model with a Conv2D layer")
    last = convs[-1]
    x = _input(run, images)
    with torch.enable_grad():
        h = x.detach().requires_grad_(True)  # gradients flow even if the first layers are frozen
        outs = model.features(h)
        acts, logits = outs[last], outs[-1]
        acts.retain_grad()
        if model.spec.head == "binary":
            logits = torch.cat([-logits, logits], 1)
        classes = logits.argmax(1) if class_index is None else torch.as_tensor(
            np.broadcast_to(class_index, (len(x),)).copy(), device=x.device)
        score = logits.gather(1, classes.view(-1, 1)).sum()
        model.zero_grad(set_to_none=True)
        score.backward()
    w = acts.grad.mean((2, 3), keepdim=True)
    cam = F.relu((w * acts).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    top = cam.flatten(1).max(1).values.clamp_min(1e-12).view(-1, 1, 1)
    model.zero_grad(set_to_none=True)
    return (cam / top).detach().cpu().numpy(), classes.cpu().numpy()
