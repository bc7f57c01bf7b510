"""Whole-shard writes through zarr: a partition's rows, written a shard at a time.

A partition owns whole shards (``Layout``), so no two writers ever touch one shard.
:class:`RegionWriter` keeps a partition's rows only until a shard is full and then writes
that shard with ``arr[a:b] = block``, zarr's public API: in the caller's thread (what
partitions do: with as many workers as cores, a second thread only contends), or on one
background thread while the caller computes the next rows. Memory per array is bounded by
two shards (the one being written and the one being filled).

Because every write covers a whole shard, every inner chunk of it is replaced: a retried
partition overwrites what an earlier attempt left (zarr 3.1 still reads the old shard
object first, one GET per shard on S3; zarr 3.4 skips that read for a whole-shard write).
A shard that holds only the fill value is not stored, and zarr deletes an existing object
at its key (``write_empty_chunks=False``, zarr's default); ``tests/test_shards.py`` checks
both.
"""

from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np


def write_unit(arr) -> int:
    """Rows along axis 0 that one write covers without touching a neighbour's object:
    the shard length of a sharded array, else the chunk length."""
    return int((arr.shards or arr.chunks)[0])


class RegionWriter:
    """Writes the rows of one region of axis 0 of ``arr`` as they are computed.

    Rows arrive in order with :meth:`append`. As soon as a shard's rows are all there, the
    shard is written with ``arr[a:b] = block`` (zarr encodes and stores it); with
    ``background=True`` on a thread of this writer's own, so that writing overlaps the
    caller's computing. At most one write is in flight: the next full shard waits for it,
    which bounds memory to two shards. :meth:`close` writes the last shard (the rows after
    the data are the fill value), clears the rest of the region up to ``end``, waits for the
    thread and raises what a write raised; :meth:`abort` stops without writing and never
    raises.

    Parameters
    ----------
    arr : the opened ``zarr.Array``.
    start : first row of the region. A partition's region starts on a shard boundary; a
        region that does not has a partial first shard, which zarr merges with the rows
        already stored there (read, modify, write).
    end : end of the region (exclusive). :meth:`close` writes fill values into every shard
        from the last one with data up to ``end``, so an earlier attempt's objects there are
        removed. None: the region ends with the shard the data ends in.
    background : write on a thread of this writer's own.
    """

    def __init__(self, arr, start: int, *, end: int | None = None, background: bool = True):
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"{arr.path}: region [{start}, {end}) is not a region of axis 0")
        self._arr = arr
        self._unit = write_unit(arr)
        self._trailing = tuple(arr.shape[1:])
        self._fill = arr.fill_value
        self._end = end
        self._at = start  # first row of the shard being filled
        self._buf: np.ndarray | None = None  # that shard's rows, allocated when its first rows arrive
        self._filled = 0
        self._pending: Future | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"audioprep-writer-{arr.path}") if background else None
        self._local_root = _local_root(arr)

    # -- caller's side ---------------------------------------------------------------------
    def append(self, rows: np.ndarray) -> None:
        """Add ``rows`` [shape=(n, *arr.shape[1:])], any real dtype (cast to ``arr.dtype``).

        The rows are copied into the shard's buffer: the caller may reuse them.
        """
        if tuple(rows.shape[1:]) != self._trailing:
            raise ValueError(f"rows of shape {rows.shape[1:]} for an array of rows {self._trailing}")
        self._raise_early()
        at, n = 0, rows.shape[0]
        while at < n:
            if self._buf is None:
                size = self._shard_end(self._at) - self._at
                if size <= 0:
                    raise ValueError(f"{self._arr.path}: rows past the end of the region ({self._end})")
                self._buf = _filled_buffer((size, *self._trailing), self._arr.dtype, self._fill)
            take = min(self._buf.shape[0] - self._filled, n - at)
            self._buf[self._filled : self._filled + take] = rows[at : at + take]
            self._filled += take
            at += take
            if self._filled == self._buf.shape[0]:
                self._submit_shard()

    def close(self) -> None:
        """Write the last shard and clear the rest of the region; wait; raise a write's error."""
        try:
            if self._buf is not None:  # the rows after the data hold the fill value already
                self._submit_shard()
            while self._end is not None and self._at < self._end:  # shards after the data
                a, b = self._at, self._shard_end(self._at)
                self._submit(a, b, None)
                self._at = b
            self._wait()
        finally:
            self._shutdown()

    def abort(self) -> None:
        """Stop without writing what is left (the partition failed); never raises.

        Shards already written stay: the partition has no manifest, so a retry rewrites them.
        """
        self._buf = None
        try:
            self._wait()
        except BaseException:  # noqa: BLE001 - the partition's own error is the one reported
            pass
        self._shutdown()

    # -- writing ---------------------------------------------------------------------------
    def _shard_end(self, row: int) -> int:
        b = (row // self._unit + 1) * self._unit
        return b if self._end is None else min(b, self._end)

    def _submit_shard(self) -> None:
        buf, self._buf, self._filled = self._buf, None, 0
        a = self._at
        self._at = a + buf.shape[0]
        self._submit(a, self._at, buf)

    def _submit(self, a: int, b: int, block: np.ndarray | None) -> None:
        self._wait()  # one write in flight: memory stays at two shards
        if self._pool is None:
            self._write(a, b, block)
        else:
            self._pending = self._pool.submit(self._write, a, b, block)

    def _write(self, a: int, b: int, block: np.ndarray | None) -> None:
        # None: only the fill value, which zarr does not store (and deletes at that key)
        self._arr[a:b] = self._fill if block is None else block
        if self._local_root is not None:
            _sync_shards(self._local_root, self._arr, a, b, self._unit)

    def _wait(self) -> None:
        f, self._pending = self._pending, None
        if f is not None:
            f.result()

    def _raise_early(self) -> None:
        f = self._pending
        if f is not None and f.done():
            self._wait()  # a failed write surfaces now, not after the whole partition

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _filled_buffer(shape: tuple[int, ...], dtype, fill) -> np.ndarray:
    """A shard's buffer holding the fill value. A zero fill comes from ``np.zeros``, whose
    large blocks are fresh zero pages: the rows a short last shard never fills cost nothing
    until zarr reads them."""
    if fill == 0:
        return np.zeros(shape, dtype=dtype)
    return np.full(shape, fill, dtype=dtype)


def write_shards(arr, start: int, parts: Sequence[np.ndarray], *, end: int | None = None) -> None:
    """``arr[start : start + n] = concatenate(parts)`` one shard at a time, in this thread,
    without concatenating the parts; see :class:`RegionWriter` for ``end``."""
    w = RegionWriter(arr, start, end=end, background=False)
    try:
        for p in parts:
            w.append(p)
        w.close()
    except BaseException:
        w.abort()
        raise


def _local_root(arr) -> str | None:
    """The folder of a local store (``zarr.storage.LocalStore``), whose files this module
    syncs; None for any other store."""
    import zarr.storage

    store = arr.store
    return str(store.root) if isinstance(store, zarr.storage.LocalStore) else None


def _sync_shards(root: str, arr, a: int, b: int, unit: int) -> None:
    """Make the shards of rows [a, b) of a local array durable: the partition's manifest,
    its commit marker, is written after them."""
    per = arr.shards or arr.chunks
    trailing = [range(-(-n // c)) for n, c in zip(arr.shape[1:], per[1:])]  # shards across the other axes
    for coords in itertools.product(range(a // unit, (b - 1) // unit + 1), *trailing):
        path = os.path.join(root, arr.path, arr.metadata.encode_chunk_key(coords))
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # only fill values: nothing stored
            continue
        try:
            _sync_and_drop(fd)
        finally:
            os.close(fd)


def _sync_and_drop(fd: int) -> None:
    try:
        getattr(os, "fdatasync", os.fsync)(fd)  # macOS has no fdatasync
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # filesystems that cannot sync
            raise
        return
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # written pages are not read again here
        except OSError:  # only advice
            pass
