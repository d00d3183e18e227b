"""Floating-point operations per image, counted on the built network (torch's FlopCounterMode).

The count is what airbench reports: multiply-adds of convolutions, matrix products and their
gradients, counted as 2 FLOPs each; elementwise work (activations, BatchNorm, pooling) is left out,
as it is by every such counter. ``forward`` is one image's prediction; ``train`` is one training
image's forward and backward pass, so frozen layers (which need no weight gradients) cost less there.
"""

from __future__ import annotations

from dataclasses import dataclass

from .spec import Spec


@dataclass(frozen=True)
class Flops:
    forward: int  # per image, predicting
    train: int  # per image, one training step (forward + backward)

    def per_run(self, train_images: int, epochs: int, eval_images: int = 0, eval_passes: int = 1) -> int:
        """A whole run's FLOPs: ``epochs`` passes over ``train_images``, then ``eval_images`` predicted
        ``eval_passes`` times each (2 with a mirrored test-time pass)."""
        return self.train * train_images * epochs + self.forward * eval_images * eval_passes


def count_flops(spec: Spec, batch: int = 4) -> Flops:
    """Counted on a batch of ``batch`` zero images and divided by it (the counts are exact: no
    operation here depends on the values)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .build import build_module

    model = build_module(spec)
    h, w, c = spec.input_shape if len(spec.input_shape) == 3 else (*spec.input_shape, 1)
    x = torch.zeros(batch, c, h, w).contiguous(memory_format=torch.channels_last)
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fwd:
        model(x)
    model.train()
    with FlopCounterMode(display=False) as step:
        model(x).float().sum().backward()
    return Flops(forward=fwd.get_total_flops() // batch, train=step.get_total_flops() // batch)
