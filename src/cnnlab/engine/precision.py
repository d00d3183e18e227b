"""Numeric precision of training steps and predictions: ``auto``, ``fp32``, ``bf16`` or ``fp16``.

Lower precision is autocast: weights stay float32 (so do BatchNorm's statistics and the
optimizer's state), convolutions and matrix products run in bfloat16 or float16, and the loss and
softmax are computed in float32. ``auto`` takes bfloat16 where the hardware does it natively (a
CUDA card with bf16; a CPU with AVX-512 BF16 or AMX), else float32. Torch is imported inside
the functions, so the configuration table can read PRECISIONS without it (a light command line).
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
    """The CPU's feature flags (/proc/cpuinfo on Linux; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively (not emulated)."""
    if device.type == "cuda":
        import torch

        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast type for ``precision`` on ``device`` (None: float32)."""
    import torch

    if precision == "auto":
        return torch.bfloat16 if native_bf16(device) else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(dtype: torch.dtype | None, device: torch.device):
    """A context that runs the forward pass in ``dtype`` (nothing for float32)."""
    if dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device.type, dtype=dtype)


def describe(dtype: torch.dtype | None) -> str:
    """How a run records its precision: float32, bfloat16 mixed or float16 mixed."""
    return "float32" if dtype is None else f"{str(dtype).removeprefix('torch.')} mixed"
