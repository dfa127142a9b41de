"""Let the C allocator keep freed memory for reuse, so that large tensors do not fault in fresh
pages at every step (glibc on Linux; elsewhere nothing changes).

glibc's malloc serves a block above its mmap threshold (dynamic, at most 32 MiB) with a fresh
``mmap`` and gives it back with ``munmap`` when freed, and returns freed memory at the top of its
heap beyond 128 KiB. A step on CPU allocates and frees the same large activations and gradients
every time (the demo's first Conv-4 block: 400 images × 32 × 28 × 28 floats, 40 MB a tensor),
so each step touches new pages, and the kernel zeroes every 4 KiB page on its first touch: about
29,000 page faults per training step of the demo and 184,000 per test batch of 50 episodes at
K_test = 10. With ``mmap`` off and trimming at 2 GiB the heap keeps what a step freed and the
next step reuses it (no page faults after the first steps): the numbers computed are the same,
the process keeps its peak memory. ``benchmarks/cpu_allocator.py`` measures both settings in one
process: 1.15–1.4× the demo's training steps, 2.5× its test batches (CPU time, one thread).
``FWP_KEEP_FREED_MEMORY=0`` leaves glibc's defaults (e.g. beside other programs short of memory).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)
TRIM_AT = 2**31 - 1  # bytes of free memory at the heap's top before glibc returns it


def keep_freed_memory() -> bool:
    """Whether glibc now keeps freed memory (False: not glibc, nothing changed)."""
    if not sys.platform.startswith("linux") or os.environ.get("FWP_KEEP_FREED_MEMORY") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_AT))
