"""Bulk reads of feature rows straight from the shard objects.

zarr's ``arr[lo:hi]`` costs about a millisecond of event-loop machinery per inner chunk
(measured: 0.9 GB/s on a warm local store), while Blosc lz4 decodes at several GB/s. The
reader's rows come in long spans, so :class:`RowReader` reads them itself: one byte range
per shard (a single ``cat_file``: one GET on S3), the inner chunks' CRC-32C checked, each
chunk Blosc-decoded straight into the output array.

It reads exactly the format zarr writes for the arrays of ``pipeline.store.layout``: the
Zarr v3 ``sharding_indexed`` codec (index at the end: ``(offset, nbytes)`` uint64 per inner
chunk, then its CRC-32C), inner codecs ``bytes`` (little endian), ``blosc``, optional
``crc32c``, chunks and shards whole along every axis but the first. An array with any
other codec chain, and any failure (a missing object, a bad checksum, a truncated shard),
goes through :func:`pipeline.store.verify.read_rows`, which reads with zarr and names the
damage: the fast path never returns other numbers than zarr would.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

import google_crc32c
import numpy as np
import zarr
from numcodecs import Blosc
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec

from pipeline.store.location import StoreLocation
from pipeline.store.verify import read_rows, shard_object

_EMPTY = np.uint64(2**64 - 1)  # index entry of an inner chunk that is not stored (fill value)

Fetched = list  # per shard: (shard, first row, end row, first chunk, index entries or None, bytes, their offset)


def bulk_format(arr: zarr.Array) -> tuple[int, int, bool] | None:
    """(rows per chunk, chunks per shard, inner crc32c) when ``arr`` has the layout's format, else None."""
    codecs = arr.metadata.codecs
    if len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec) or arr.shards is None:
        return None
    sh = codecs[0]
    inner = list(sh.codecs)
    checked = bool(inner) and isinstance(inner[-1], Crc32cCodec)
    if checked:
        inner = inner[:-1]
    if len(inner) != 2 or not isinstance(inner[0], BytesCodec) or not isinstance(inner[1], BloscCodec):
        return None
    if getattr(inner[0].endian, "value", inner[0].endian) not in ("little", None) or np.dtype(arr.dtype).byteorder == ">":
        return None
    idx = list(sh.index_codecs)
    if len(idx) != 2 or not isinstance(idx[0], BytesCodec) or not isinstance(idx[1], Crc32cCodec):
        return None
    if getattr(sh.index_location, "value", sh.index_location) != "end":
        return None
    if tuple(arr.chunks[1:]) != tuple(arr.shape[1:]) or tuple(arr.shards[1:]) != tuple(arr.shape[1:]):
        return None
    rows, shard = int(arr.chunks[0]), int(arr.shards[0])
    if shard % rows:
        return None
    return rows, shard // rows, checked


class _Damaged(Exception):
    """The fast path saw something it does not decode; zarr reads (and names) it instead."""


class RowReader:
    """``arr[lo:hi]`` of one feature array, decoded in bulk; thread-safe.

    Parameters
    ----------
    loc : the store.
    arr : the opened feature array.
    ids_in : ``ids_in(a, b)`` names the examples whose rows meet ``[a, b)`` (for errors,
        and to tell a missing shard with data from one that never had any).
    """

    def __init__(self, loc: StoreLocation, arr: zarr.Array, ids_in: Callable[[int, int], Sequence[str]]):
        self.loc = loc
        self.arr = arr
        self.ids_in = ids_in
        self.format = bulk_format(arr)
        self.dtype = np.dtype(arr.dtype).newbyteorder("<")
        self.trailing = tuple(int(n) for n in arr.shape[1:])
        self._fs, self._root = loc.fs_root()
        self._index: dict[int, np.ndarray | None] = {}
        self._lock = threading.Lock()
        self._checked: set[int] = set()
        self._blosc = Blosc()
        self._local = not loc.remote
        self._buffers = threading.local()  # per thread: a reusable read buffer (no fresh pages per read)

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``[lo, hi)`` in the storage dtype, shape ``(hi - lo, *trailing)``."""
        return self.decode(lo, hi, self.fetch(lo, hi, keep=False))

    def fetch(self, lo: int, hi: int, *, keep: bool = True) -> Fetched | None:
        """The compressed bytes of rows ``[lo, hi)``: one range read per shard (the I/O, for a
        thread of its own); None when the fast path cannot read them (:meth:`decode` then
        reads with zarr). ``keep=False``: the bytes may sit in this thread's reusable buffer,
        valid until its next fetch."""
        lo, hi = max(0, int(lo)), min(int(hi), int(self.arr.shape[0]))
        if self.format is None or hi <= lo:
            return None
        try:
            return self._fetch(lo, hi, keep)
        except (_Damaged, OSError, ValueError, RuntimeError):
            return None

    def decode(self, lo: int, hi: int, fetched: Fetched | None, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``[lo, hi)`` from what :meth:`fetch` returned for a span holding them (the CPU work).

        ``out``: a C-contiguous array of the storage dtype, shape ``(hi - lo, *trailing)``, to
        decode into (whole chunks go straight there, without a copy)."""
        lo, hi = max(0, int(lo)), min(int(hi), int(self.arr.shape[0]))
        if fetched is not None and hi > lo:
            try:
                return self._decode(lo, hi, fetched, out)
            except (_Damaged, OSError, ValueError, RuntimeError):
                pass
        x = self._zarr(lo, hi)  # names the damage (or returns what zarr returns)
        if out is None:
            return x
        out[...] = x
        return out

    def _zarr(self, lo: int, hi: int) -> np.ndarray:
        with self._lock:
            checked = set(self._checked)
        out = read_rows(self.loc, self.arr, lo, hi, self.ids_in, checked=checked)
        with self._lock:
            self._checked |= checked
        return np.asarray(out)

    # --- the fast path -------------------------------------------------------------------
    def _fetch(self, lo: int, hi: int, keep: bool) -> Fetched:
        rows, per_shard, _ = self.format
        shard_rows = rows * per_shard
        parts = []
        for s in range(lo // shard_rows, (hi - 1) // shard_rows + 1):
            a, b = max(lo, s * shard_rows), min(hi, (s + 1) * shard_rows)
            c0, c1 = (a - s * shard_rows) // rows, (b - 1 - s * shard_rows) // rows
            index = self._shard_index(s)
            if index is None:  # no object: fill value, unless those rows hold data
                if self.ids_in(a, b):
                    raise _Damaged(f"shard {s} is missing")
                parts.append((s, a, b, c0, None, memoryview(b""), 0))
                continue
            entries = index[c0 : c1 + 1]
            stored = entries[:, 0] != _EMPTY
            data, base = memoryview(b""), 0
            if stored.any():
                base = int(entries[stored, 0].min())
                end = int((entries[stored, 0] + entries[stored, 1]).max())
                data = self._range(s, base, end, keep)
            parts.append((s, a, b, c0, entries, data, base))
        return parts

    def _decode(self, lo: int, hi: int, parts: Fetched, out: np.ndarray | None) -> np.ndarray:
        rows, per_shard, checked = self.format
        shard_rows = rows * per_shard
        if out is None:
            out = np.empty((hi - lo, *self.trailing), dtype=self.dtype)
        for s, a, b, c0, entries, data, base in parts:
            a, b = max(a, lo), min(b, hi)
            if b <= a:
                continue
            if entries is None:
                out[a - lo : b - lo] = 0
                continue
            for k in range((a - s * shard_rows) // rows - c0, (b - 1 - s * shard_rows) // rows - c0 + 1):
                c = c0 + k
                r0 = s * shard_rows + c * rows  # first row of this chunk
                ra, rb = max(a, r0), min(b, r0 + rows)
                if rb <= ra:
                    continue
                if entries[k, 0] == _EMPTY:
                    out[ra - lo : rb - lo] = 0
                    continue
                o, n = int(entries[k, 0]) - base, int(entries[k, 1])
                blob = data[o : o + n]
                if checked:
                    if google_crc32c.value(bytes(blob[:-4])) != int.from_bytes(blob[-4:], "little"):
                        raise _Damaged(f"checksum of chunk {c} of shard {s}")
                    blob = blob[:-4]
                if ra == r0 and rb == r0 + rows:
                    self._blosc.decode(blob, out=out[ra - lo : rb - lo])
                else:
                    chunk = np.empty((rows, *self.trailing), dtype=self.dtype)
                    self._blosc.decode(blob, out=chunk)
                    out[ra - lo : rb - lo] = chunk[ra - r0 : rb - r0]
        return out

    def _range(self, s: int, start: int, end: int, keep: bool) -> memoryview:
        """Bytes ``[start, end)`` of shard ``s``: one ``cat_file`` (one GET), or for a local
        store one ``pread`` (into this thread's reusable buffer unless ``keep``)."""
        if not self._local:
            data = self._fs.cat_file(self._path(s), start=start, end=end)
            if len(data) != end - start:
                raise _Damaged(f"shard {s} is truncated")
            return memoryview(data)
        fd = os.open(self._path(s), os.O_RDONLY)
        try:
            if keep:
                view = memoryview(os.pread(fd, end - start, start))
                got = len(view)
            else:
                buf = getattr(self._buffers, "buf", None)
                if buf is None or len(buf) < end - start:
                    buf = self._buffers.buf = bytearray(max(end - start, 1 << 20))
                view = memoryview(buf)[: end - start]
                got = os.preadv(fd, [view], start)
        finally:
            os.close(fd)
        if got != end - start:
            raise _Damaged(f"shard {s} is truncated")
        return view

    def _path(self, s: int) -> str:
        return f"{self._root}/{shard_object(self.arr, s)}"

    def _shard_index(self, s: int) -> np.ndarray | None:
        with self._lock:
            if s in self._index:
                return self._index[s]
        _, per_shard, _ = self.format
        size = 16 * per_shard + 4
        try:
            raw = self._fs.cat_file(self._path(s), start=-size)
        except FileNotFoundError:
            index = None
        else:
            if len(raw) != size or google_crc32c.value(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
                raise _Damaged(f"index of shard {s}")
            index = np.frombuffer(raw[:-4], dtype="<u8").reshape(per_shard, 2)
        with self._lock:
            self._index[s] = index
        return index
