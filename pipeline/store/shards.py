"""Whole-shard writes: a partition's shards, encoded and written while it computes.

A partition owns whole shards (``Layout``), so it never needs zarr's read-modify-write path.
``arr[a:b] = block`` needed the partition's features concatenated into one block (a
copy of ~60 MB per 1800 s of log-mel) and then spent about 0.15 s per partition in zarr's
per-chunk async pipeline. :class:`RegionWriter` assembles each inner chunk from the
per-clip arrays in one small reused buffer as they arrive, encodes it at once (on a
thread of its own, beside the partition's compute) and produces the same bytes zarr would
(same codec configuration, index layout and empty-chunk rule; ``tests/test_shards.py``
compares them): a local shard is written chunk by chunk, a remote one put whole.

Arrays with any other codec chain than the one :mod:`pipeline.store.layout` creates
(``bytes`` little-endian + one ``blosc`` inside ``sharding_indexed``, index ``bytes`` +
``crc32c`` at the end, empty chunks not written) fall back to ``arr[...] = block``
(:func:`write_shards`).
"""

from __future__ import annotations

import errno
import os
import queue
import sys
import threading
from collections.abc import Sequence
from typing import Any

import google_crc32c
import numpy as np

MISSING = np.uint64(2**64 - 1)
"""Index entry (offset and length) of an inner chunk that holds only the fill value."""

_FINISH, _ABORT = object(), object()  # RegionWriter's queue: what ends its thread


def _plan(arr) -> dict[str, Any] | None:
    """The sharding parameters of ``arr`` when this module can encode its shards exactly."""
    from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec
    from zarr.codecs.sharding import ShardingCodecIndexLocation

    meta = arr.metadata
    if getattr(meta, "zarr_format", None) != 3 or len(meta.codecs) != 1 or not isinstance(meta.codecs[0], ShardingCodec):
        return None
    sharding = meta.codecs[0]
    inner = sharding.codecs
    if not (
        len(inner) == 2
        and isinstance(inner[0], BytesCodec)
        and isinstance(inner[1], BloscCodec)
        and [type(c) for c in sharding.index_codecs] == [BytesCodec, Crc32cCodec]
        and sharding.index_location == ShardingCodecIndexLocation.end
        and sys.byteorder == "little"
        and (inner[0].endian is None or inner[0].endian.value == "little")
        and sharding.index_codecs[0].endian.value == "little"
        and arr.dtype.byteorder in ("=", "<", "|")
        and arr.order == "C"
    ):
        return None
    shard_shape = tuple(meta.chunk_grid.chunk_shape)
    chunk_shape = tuple(sharding.chunk_shape)
    # only axis 0 is split: every trailing axis is one whole chunk (pipeline.store.layout);
    # all-fill chunks are skipped, as zarr does by default
    if shard_shape[1:] != tuple(arr.shape[1:]) or chunk_shape[1:] != shard_shape[1:] or shard_shape[0] % chunk_shape[0]:
        return None
    if arr.config.write_empty_chunks:
        return None
    return {
        "shard": shard_shape[0],
        "chunk": chunk_shape[0],
        "encoder": _encoder(inner[1]),
        "fill": np.asarray(meta.fill_value, dtype=arr.dtype),
        "key": meta.chunk_key_encoding.encode_chunk_key,
        "ndim": arr.ndim,
    }


class RegionWriter:
    """Writes the rows of a shard-aligned region of one array as they are computed.

    Rows arrive in order with :meth:`append`; every inner chunk is Blosc-encoded as soon as
    it is full and written to its shard, and a shard is finished (index, CRC32C, synced) as
    soon as its last chunk is. With ``background=True`` that work runs on a thread of its
    own, while the caller computes the next rows: Blosc and file writes release the GIL,
    so a partition's writing overlaps its decoding and features instead of following
    them, and only the clips not yet written are held in memory. :meth:`close` waits for
    the thread and raises what it raised.

    The bytes are those zarr writes (same codec configuration, index layout and
    empty-chunk rule; ``tests/test_shards.py``): a chunk of only the fill value is not
    stored, a shard of only such chunks is not written (a stale one from an earlier
    attempt is removed), and the rows after the data are the fill value.

    Parameters
    ----------
    loc : StoreLocation of the store ``arr`` belongs to.
    arr : the opened ``zarr.Array`` (:meth:`open` answers whether this writer can encode it).
    start : first row of the region, a multiple of the shard length.
    background : encode and write on a thread of this writer's own.
    """

    #: Local shard files are synced every this many bytes, so the kernel writes them back
    #: while the partition computes and the final sync before the manifest is short.
    SYNC_EVERY_BYTES = 8 << 20

    def __init__(self, loc, arr, start: int, *, background: bool = True, plan: dict[str, Any] | None = None):
        plan = plan or _plan(arr)
        if plan is None or start % plan["shard"]:
            raise ValueError(f"{arr.path}: not a region this writer can encode (use write_shards)")
        self._plan = plan
        self._trailing = tuple(arr.shape[1:])
        self._fs, root = loc.fs_root()
        self._base = f"{root}/{arr.path}"
        self._remote = loc.remote
        self._shard_no = start // plan["shard"]
        self._n_chunks = plan["shard"] // plan["chunk"]
        self._buf = np.empty((plan["chunk"], *self._trailing), dtype=arr.dtype)
        self._filled = 0
        self._new_shard()
        self._error: BaseException | None = None
        self._queue: queue.SimpleQueue | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._queue = queue.SimpleQueue()
            self._thread = threading.Thread(target=self._drain, name=f"audioprep-writer-{arr.path}", daemon=True)
            self._thread.start()

    @classmethod
    def open(cls, loc, arr, start: int, *, background: bool = True) -> RegionWriter | None:
        """A writer for the region of ``arr`` from row ``start``, or None when it cannot
        encode it (another codec chain, or ``start`` not on a shard boundary)."""
        plan = _plan(arr)
        if plan is None or start % plan["shard"]:
            return None
        return cls(loc, arr, start, background=background, plan=plan)

    # -- caller's side ---------------------------------------------------------------------
    def append(self, rows: np.ndarray) -> None:
        """Add ``rows`` [shape=(n, *arr.shape[1:])], any real dtype (cast as zarr would).

        The writer keeps a reference until the rows are encoded: do not modify them.
        """
        if tuple(rows.shape[1:]) != self._trailing:
            raise ValueError(f"rows of shape {rows.shape[1:]} for an array of rows {self._trailing}")
        if self._queue is None:
            self._consume(rows)
            return
        if self._error is not None:
            self.close()  # raises the writer's error now rather than after the whole partition
        self._queue.put(rows)

    def close(self) -> None:
        """Write what is left (the last chunk and shard); wait for the thread; raise its error."""
        if self._thread is not None:
            if self._thread.is_alive():
                self._queue.put(_FINISH)
                self._thread.join()
            if self._error is not None:
                raise self._error
            return
        self._finish()

    def abort(self) -> None:
        """Stop without writing what is left (the partition failed); never raises.

        Shards already written stay: the partition has no manifest, so a retry rewrites
        them."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_ABORT)
            self._thread.join()
        self._close_file()

    # -- writer's side ---------------------------------------------------------------------
    def _drain(self) -> None:
        item = None
        try:
            while True:
                item = self._queue.get()
                if item is _FINISH:
                    self._finish()
                    return
                if item is _ABORT:
                    self._close_file()
                    return
                self._consume(item)
                item = None  # the clip is encoded: do not hold it while waiting
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by close()
            self._error = exc
            self._close_file()
            while item is not _FINISH and item is not _ABORT:  # release the clips still queued
                item = self._queue.get()

    def _consume(self, rows: np.ndarray) -> None:
        chunk, buf = self._plan["chunk"], self._buf
        at, n = 0, rows.shape[0]
        while at < n:
            take = min(chunk - self._filled, n - at)
            buf[self._filled : self._filled + take] = rows[at : at + take]
            self._filled += take
            at += take
            if self._filled == chunk:
                self._chunk_done()

    def _finish(self) -> None:
        if self._filled:
            self._buf[self._filled :] = self._plan["fill"]
            self._chunk_done()
        if self._k:  # the shard the data ended in; its remaining chunks hold only the fill value
            self._shard_done()

    def _new_shard(self) -> None:
        self._k = 0  # inner chunks of this shard handled so far
        self._index = np.full((self._n_chunks, 2), MISSING, dtype="<u8")
        self._pieces: list[bytes] = []  # remote: the shard's bytes, put whole at its end
        self._file = None
        self._offset = 0
        self._unsynced = 0

    def _path(self) -> str:
        coords = (self._shard_no,) + (0,) * (self._plan["ndim"] - 1)
        return f"{self._base}/{self._plan['key'](coords)}"

    def _chunk_done(self) -> None:
        buf, self._filled = self._buf, 0
        if not _all_fill(buf, self._plan["fill"]):
            data = self._plan["encoder"].encode(buf.reshape(-1).view(np.uint8))
            self._emit(data)
            self._index[self._k] = (self._offset, len(data))
            self._offset += len(data)
        self._k += 1
        if self._k == self._n_chunks:
            self._shard_done()

    def _emit(self, data: bytes) -> None:
        if self._remote:
            self._pieces.append(data)
            return
        if self._file is None:
            path = self._path()
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._file = open(path, "wb")
        self._file.write(data)
        self._unsynced += len(data)
        if self._unsynced >= self.SYNC_EVERY_BYTES:
            self._file.flush()
            _sync_and_drop(self._file.fileno())
            self._unsynced = 0

    def _shard_done(self) -> None:
        if self._offset:
            index_bytes = self._index.tobytes()
            tail = [index_bytes, google_crc32c.value(index_bytes).to_bytes(4, "little")]
            if self._remote:
                self._fs.pipe_file(self._path(), b"".join([*self._pieces, *tail]))  # one PUT: objects are written whole
            else:
                f, self._file = self._file, None
                with f:
                    f.writelines(tail)
                    f.flush()
                    # durable before the partition's manifest (its commit marker) is written
                    _sync_and_drop(f.fileno())
        else:  # only fill values: zarr writes no object, and one from an earlier attempt goes
            _remove(self._fs, self._path(), self._remote)
        self._shard_no += 1
        self._new_shard()

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


def _encoder(codec):
    """The numcodecs Blosc that zarr's ``BloscCodec`` encodes with (same configuration)."""
    import numcodecs

    return numcodecs.Blosc(
        cname=codec.cname.value, clevel=codec.clevel, shuffle=_SHUFFLE[codec.shuffle.value], blocksize=codec.blocksize, typesize=codec.typesize
    )


def _all_fill(x: np.ndarray, fill: np.ndarray) -> bool:
    first = x.reshape(-1)[0]
    if np.isnan(fill):
        return bool(np.isnan(first)) and bool(np.isnan(x).all())
    return bool(first == fill) and bool((x == fill).all())  # the first value settles nearly every chunk


def write_shards(loc, arr, start: int, parts: Sequence[np.ndarray]) -> None:
    """``arr[start : start + n] = concatenate(parts)``, in this thread.

    A shard-aligned region of an array :class:`RegionWriter` can encode is written by it
    (the parts are never concatenated); any other region goes through zarr.

    Parameters
    ----------
    loc : StoreLocation of the store ``arr`` belongs to.
    arr : the opened ``zarr.Array`` (its metadata decides the encoding, its path the keys).
    start : first row.
    parts : arrays [shape=(n_i, *arr.shape[1:])] whose rows, in order, fill the region; any
        real dtype (cast to ``arr.dtype`` as zarr would).
    """
    trailing = tuple(arr.shape[1:])
    w = RegionWriter.open(loc, arr, start, background=False)
    if w is None or any(tuple(p.shape[1:]) != trailing for p in parts):
        block = np.concatenate(parts, axis=0).astype(arr.dtype, copy=False) if parts else np.zeros((0, *trailing), arr.dtype)
        arr[start : start + block.shape[0]] = block
        return
    import numcodecs.blosc

    # Blosc would use its own threads when called from the main thread; one core per task,
    # as zarr's own path (RegionWriter's background thread is never the main thread)
    threads, numcodecs.blosc.use_threads = numcodecs.blosc.use_threads, False
    try:
        for p in parts:
            w.append(p)
        w.close()
    finally:
        numcodecs.blosc.use_threads = threads


def _sync_and_drop(fd: int) -> None:
    try:
        getattr(os, "fdatasync", os.fsync)(fd)  # macOS has no fdatasync
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # filesystems that cannot sync
            raise
        return
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:  # only advice
            pass


def _remove(fs, path: str, remote: bool) -> None:
    try:
        fs.rm_file(path) if remote else os.remove(path)
    except FileNotFoundError:
        pass
