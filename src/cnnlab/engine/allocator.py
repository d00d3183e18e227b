"""Keep freed tensor memory in the process (glibc's malloc), so a step does not page-fault.

PyTorch's CPU tensors come from malloc. With glibc's defaults, a block above the mmap threshold
(128 KiB, raised dynamically only after a free) is mapped fresh on every allocation, and memory
freed at the top of the heap is handed back to the system once it exceeds the trim threshold.
A training step allocates and frees the same activations and gradients every time (a few MB at
batch 256), so each step touches fresh pages: the kernel zero-fills them, and the first write to
them (a fill, a max pooling's output) pays for it. Raising both thresholds once keeps those
blocks in the heap, the way jemalloc or tcmalloc would. On a Zen 4 (bf16, 2 threads) a
fashion-cnn step at batch 256 took 0.7x the time, and 0.9x at batch 32 (docs/performance.md).

Nothing is changed where it would not be ours to change: not off glibc, not when the user set
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` or preloads another allocator, and not
with ``CNNLAB_MALLOC=default``.
"""

from __future__ import annotations

import functools
import os
import platform

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 256 * 1024 * 1024
TOP_PAD = 64 * 1024 * 1024


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> str:
    """Raise glibc's mmap and trim thresholds once per process; returns what was done, for the
    run's environment record: ``"glibc, freed memory kept"``, or why not."""
    if os.environ.get("CNNLAB_MALLOC", "").lower() == "default":
        return "left as is (CNNLAB_MALLOC=default)"
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return "left as is (MALLOC_* set by the user)"
    if "malloc" in os.environ.get("LD_PRELOAD", ""):
        return "left as is (another allocator preloaded)"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "left as is (not glibc)"
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        ok = all(libc.mallopt(param, value) == 1 for param, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD)))
    except (OSError, AttributeError):
        return "left as is (mallopt not found)"
    return "glibc, freed memory kept" if ok else "left as is (mallopt refused)"
