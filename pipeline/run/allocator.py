"""glibc allocator settings for worker processes.

Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, and glibc serves every
array above 128 KiB with a fresh ``mmap``. Featurizing allocates several multi-megabyte
arrays per clip, so each clip then pays for page faults on memory just returned to the
OS: measured here, decode + log-mel ran at half speed (1200x vs 2500x realtime). Keeping
large blocks in the heap restores it; peak memory is unchanged (bounded by one partition).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD_BYTES = 256 << 20
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's maximum on 64-bit

_done = False


def tune_allocator() -> bool:
    """Apply once per process; returns whether glibc accepted the settings."""
    global _done
    if _done:
        return True
    _done = True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
        return libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and ok
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
