"""Per-thread reusable buffers for per-clip intermediates (padded signal, spectrograms).

On the machines this was measured on, a fresh multi-megabyte array per clip costs about
2 us per 4 KiB page in page faults (glibc hands freed heap back to the system between
clips), as much as the FFT itself. Intermediates that never leave ``FeatureSet.compute``
are therefore taken from a per-thread pool that grows to the largest clip seen.
``FeatureSet.compute`` copies any output that still points into the pool.
"""

from __future__ import annotations

import math
import threading

import numpy as np

_LOCAL = threading.local()


def _pool() -> dict[tuple[str, str], np.ndarray]:
    pool = getattr(_LOCAL, "pool", None)
    if pool is None:
        pool = _LOCAL.pool = {}
    return pool


def scratch(key: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """A C-contiguous buffer of ``shape`` owned by this thread under ``key`` (contents undefined).

    Each key is one intermediate of one clip: asking again for the same key reuses (and
    overwrites) the same memory.
    """
    dtype = np.dtype(dtype)
    size = math.prod(shape)
    pool = _pool()
    buf = pool.get((key, dtype.str))
    if buf is None or buf.size < size:
        buf = pool[key, dtype.str] = np.empty(max(size, 1), dtype=dtype)
    return buf[:size].reshape(shape)


def owns(x: np.ndarray) -> bool:
    """Whether ``x`` may share memory with this thread's pool."""
    return any(np.may_share_memory(x, buf) for buf in _pool().values())


def release() -> None:
    """Free this thread's buffers (e.g. after an unusually long clip)."""
    _pool().clear()
