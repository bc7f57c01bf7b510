"""glibc allocator settings for the worker processes the product starts.

glibc reads ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` from the environment
when a process starts, so these are given to workers as environment variables (Dask:
``distributed.nanny.pre-spawn-environ``, set inside a ``with dask.config.set(...)`` block),
never applied to a running process. Dask's nanny starts workers with
``MALLOC_TRIM_THRESHOLD_=65536`` and glibc then serves every block above 128 KiB with a
fresh ``mmap``; keeping multi-megabyte blocks in the heap spares a page fault on each page
of them for every clip. Other C libraries (musl, macOS) ignore the variables.
"""

from __future__ import annotations

TRIM_THRESHOLD_BYTES = 256 << 20
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's maximum on 64-bit


def worker_malloc_environ() -> dict[str, str]:
    """Environment variables for a worker process; merge them over Dask's
    ``distributed.nanny.pre-spawn-environ`` (they replace its ``MALLOC_TRIM_THRESHOLD_``)."""
    return {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD_BYTES), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD_BYTES)}
