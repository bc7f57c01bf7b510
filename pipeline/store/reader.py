"""Reading a store for training: a map-style dataset plus chunk-ordered batch iteration.

``AudioDataset`` works as a PyTorch ``Dataset`` without importing torch (``len`` and
``[i]``). It pickles to (URL, options, selection) and reopens lazily, so DataLoader
workers started with spawn or forkserver each open their own Zarr handles.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from pipeline.errors import StoreError
from pipeline.store.location import StoreLocation
from pipeline.store.state import ACTIVE, ATTR_KEY, read_meta, table_path
from pipeline.store.tables import read_table
from pipeline.store.verify import read_rows

META_COLUMNS = (
    "id", "file_id", "parent", "copy", "source", "path", "group", "split",
    "duration_seconds", "start_seconds", "sample_rate_original", "channels", "flags",
)


@dataclass(frozen=True)
class _Selection:
    url: str
    storage_options: dict[str, Any]
    version: int
    split: str | None
    features: tuple[str, ...]
    normalize: bool
    include_copies: bool


class AudioDataset:
    """Examples of one split (or all) of one store version.

    ``ds[i]`` returns ``{"features": {name: ndarray (frames, *bins)}, "label": str,
    "label_index": int, "id": str, "metadata": {...}}``.
    """

    def __init__(self, sel: _Selection):
        self._sel = sel
        self._group: zarr.Group | None = None
        self._arrays: dict[str, zarr.Array] = {}
        self._seen: dict[str, set[int]] = {}
        loc = StoreLocation(sel.url, sel.storage_options)
        meta = read_meta(loc)
        if meta is None or not meta.get("current_version"):
            raise StoreError(f"no committed version in {sel.url}; run `audioprep run CATALOG` first")
        self.meta = meta
        versions = [v["version"] for v in meta.get("versions", [])]
        if sel.version not in versions:
            raise StoreError(f"{sel.url} has no version {sel.version}; its versions: {', '.join(map(str, versions))}")
        group = self._open()
        cols = read_table(group, table_path(sel.version, "examples"))
        keep = np.isin(cols["status"], ACTIVE)
        if sel.split is not None:
            keep &= cols["split"] == sel.split
        if not sel.include_copies:
            keep &= cols["copy"] == 0
        self._index = np.flatnonzero(keep)
        self.table = {k: v[self._index] for k, v in cols.items()}
        self.labels: list[str] = list(group[table_path(sel.version, "examples")].attrs.get("labels", []))
        self._label_to_index = {lab: i for i, lab in enumerate(self.labels)}
        self.layout = meta["layout"]
        self.feature_names = sel.features or tuple(meta.get("feature_names") or meta["layout"]["feature_shapes"].keys())
        unknown = [f for f in self.feature_names if f not in meta["layout"]["feature_shapes"]]
        if unknown:
            raise StoreError(f"features {unknown} are not in {sel.url}; it has {list(meta['layout']['feature_shapes'])}")
        self.normalization = meta.get("normalization", "none") if sel.normalize else "none"
        self._norm = _norm_params(meta, self.feature_names) if self.normalization == "global" else {}

    # --- pickling: reopen in the worker -----------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_group"] = None
        state["_arrays"] = {}
        state["_seen"] = {}
        return state

    def _open(self) -> zarr.Group:
        if self._group is None:
            loc = StoreLocation(self._sel.url, self._sel.storage_options)
            self._group = zarr.open_group(loc.zarr_store(read_only=True), mode="r")
        return self._group

    def _array(self, name: str) -> zarr.Array:
        if name not in self._arrays:
            self._arrays[name] = self._open()[f"features/{name}"]
        return self._arrays[name]

    def _read(self, name: str, lo: int, hi: int) -> np.ndarray:
        """Rows ``[lo, hi)`` of a feature array; a damaged or missing shard is a StoreError
        naming the store, the array, the shard and the examples."""
        loc = StoreLocation(self._sel.url, self._sel.storage_options)
        return read_rows(loc, self._array(name), lo, hi, self._ids_in, checked=self._seen.setdefault(name, set()))

    def _ids_in(self, a: int, b: int) -> list[str]:
        """Ids of this dataset's examples whose rows meet ``[a, b)``."""
        off = self.table["offset"].astype(np.int64)
        n = np.ones_like(off) if self.layout["mode"] == "dense" else self.table["length"].astype(np.int64)
        hit = (off < b) & (off + n > a)
        return [str(x) for x in self.table["id"][hit]]

    # --- map-style access -------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._index.shape[0])

    def label_index(self, label: str) -> int:
        return self._label_to_index.get(label, -1)

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} examples")
        i = i % n
        off, length = int(self.table["offset"][i]), int(self.table["length"][i])
        feats = {}
        for name in self.feature_names:
            x = self._read(name, off, off + 1)[0] if self.layout["mode"] == "dense" else self._read(name, off, off + length)
            feats[name] = self._normalize(name, np.asarray(x, dtype=np.float32))
        label = str(self.table["label"][i])
        return {
            "features": feats,
            "label": label,
            "label_index": self.label_index(label),
            "id": str(self.table["id"][i]),
            "metadata": {k: _py(self.table[k][i]) for k in META_COLUMNS if k in self.table},
        }

    def _normalize(self, name: str, x: np.ndarray) -> np.ndarray:
        if self.normalization == "per_example":
            from pipeline.features.normalize import per_example

            return per_example(x.reshape(x.shape[0], -1)).reshape(x.shape).astype(np.float32)
        if self.normalization == "global" and name in self._norm:
            mean, std = self._norm[name]
            return ((x.reshape(x.shape[0], -1) - mean) / std).reshape(x.shape).astype(np.float32)
        return x

    # --- throughput path ----------------------------------------------------------------
    def iter_batches(
        self, batch_size: int, *, shuffle: bool = True, seed: int = 0, drop_last: bool = False, blocks_in_buffer: int = 4
    ) -> Iterator[dict[str, Any]]:
        """Yield batches, reading whole chunks of the store at a time.

        Examples are grouped into blocks that are contiguous on disk (about one chunk
        each); each block is read with one slice per feature. With ``shuffle``, block order
        is permuted and examples are shuffled within a buffer of ``blocks_in_buffer``
        blocks: random enough for SGD, sequential enough for throughput.

        Yields
        ------
        dict with ``features`` {name: ndarray (batch, max_frames, *bins)} (zero-padded),
        ``lengths`` (batch,), ``label_index`` (batch,), ``labels`` and ``ids`` (lists).
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        rng = np.random.default_rng(seed)
        blocks = self._blocks()
        order = rng.permutation(len(blocks)) if shuffle else np.arange(len(blocks))
        pending: list[tuple[int, dict[str, np.ndarray]]] = []
        for b0 in range(0, len(order), blocks_in_buffer):
            buf: list[tuple[int, dict[str, np.ndarray]]] = []
            for b in order[b0 : b0 + blocks_in_buffer]:
                buf.extend(self._read_block(blocks[b]))
            if shuffle:
                perm = rng.permutation(len(buf))
                buf = [buf[j] for j in perm]
            pending.extend(buf)
            while len(pending) >= batch_size:
                yield self._collate(pending[:batch_size])
                pending = pending[batch_size:]
        if pending and not drop_last:
            yield self._collate(pending)

    def _blocks(self) -> list[np.ndarray]:
        """Positions (into this dataset) grouped into disk-contiguous blocks of about one chunk."""
        offsets = self.table["offset"].astype(np.int64)
        lengths = self.table["length"].astype(np.int64) if self.layout["mode"] == "ragged" else np.ones_like(offsets)
        pos = np.argsort(offsets, kind="stable")
        chunk = int(self.layout["chunk"])
        blocks, cur, start = [], [], None
        for p in pos:
            o, n = int(offsets[p]), int(lengths[p])
            if cur and (o + n - start > chunk or o - (int(offsets[cur[-1]]) + int(lengths[cur[-1]])) > chunk):
                blocks.append(np.asarray(cur))
                cur, start = [], None
            if start is None:
                start = o
            cur.append(p)
        if cur:
            blocks.append(np.asarray(cur))
        return blocks

    def _read_block(self, positions: np.ndarray) -> list[tuple[int, dict[str, np.ndarray]]]:
        offsets = self.table["offset"][positions].astype(np.int64)
        dense = self.layout["mode"] == "dense"
        lengths = np.ones_like(offsets) if dense else self.table["length"][positions].astype(np.int64)
        lo, hi = int(offsets.min()), int((offsets + lengths).max())
        data = {name: np.asarray(self._read(name, lo, hi), dtype=np.float32) for name in self.feature_names}
        out = []
        for p, o, n in zip(positions, offsets, lengths):
            feats = {}
            for name, block in data.items():
                x = block[o - lo] if dense else block[o - lo : o - lo + n]
                feats[name] = self._normalize(name, x)
            out.append((int(p), feats))
        return out

    def _collate(self, items: Sequence[tuple[int, dict[str, np.ndarray]]]) -> dict[str, Any]:
        pos = [p for p, _ in items]
        out_feats = {}
        lengths = np.array([next(iter(f.values())).shape[0] if f else 0 for _, f in items], dtype=np.int64)
        t_max = int(lengths.max()) if len(lengths) else 0
        for name in self.feature_names:
            first = items[0][1][name]
            batch = np.zeros((len(items), t_max, *first.shape[1:]), dtype=np.float32)
            for j, (_, f) in enumerate(items):
                x = f[name]
                batch[j, : x.shape[0]] = x
            out_feats[name] = batch
        labels = [str(self.table["label"][p]) for p in pos]
        return {
            "features": out_feats,
            "lengths": lengths,
            "labels": labels,
            "label_index": np.array([self.label_index(lab) for lab in labels], dtype=np.int64),
            "ids": [str(self.table["id"][p]) for p in pos],
        }


def _norm_params(meta: dict[str, Any], names: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from pipeline.features.normalize import RunningStats

    out = {}
    for name in names:
        d = meta.get("norm_stats", {}).get(name)
        if d:
            mean, std = RunningStats.from_dict(d).mean_std()
            out[name] = (np.asarray(mean, np.float32), np.maximum(np.asarray(std, np.float32), 1e-8))
    return out


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def open_dataset(
    url: str,
    split: str | None = None,
    *,
    version: int | None = None,
    features: Sequence[str] | None = None,
    normalize: bool = True,
    include_copies: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> AudioDataset:
    """Open a store written by ``audioprep run`` as a map-style dataset.

    Parameters
    ----------
    url : local path or fsspec URL of the store.
    split : ``train``, ``val``, ``test`` or None for every split.
    version : a committed version number; default the newest.
    features : which features to load; default all.
    normalize : apply the normalization recorded in the store (never baked into the data).
    include_copies : include augmented copies (only train rows have them by default).
    storage_options : fsspec options (credentials come from the environment).
    """
    loc = StoreLocation(url, dict(storage_options or {}))
    meta = read_meta(loc)
    if meta is None:
        raise StoreError(f"no audioprep store at {url}; run `audioprep run CATALOG` first")
    v = int(version or meta.get("current_version") or 0)
    return AudioDataset(_Selection(url, dict(storage_options or {}), v, split, tuple(features or ()), normalize, include_copies))


def augment_params(ds: AudioDataset, i: int) -> list[dict[str, Any]]:
    """The transforms and drawn parameters of row ``i`` (empty for originals)."""
    return json.loads(str(ds.table["augment"][i]) or "[]")


class PooledStatisticsWarning(UserWarning):
    """Statistics pooled over frames were asked of per-example-normalized features."""


def warn_if_pooling_normalized(ds: AudioDataset, *, stacklevel: int = 2) -> bool:
    """Warn and return True when ``ds`` applies per_example normalization: each clip's mean over
    frames is then 0 and its std 1 in every band, so statistics pooled over frames carry nothing."""
    if ds.normalization != "per_example":
        return False
    warnings.warn(
        f"{ds._sel.url}: features are read with per_example normalization, so each clip's mean over frames is 0 and "
        "its std 1 in every band; statistics pooled over frames carry no information. Open it with normalize=False "
        "and scale the pooled vectors with the train split's statistics (docs/training.md).",
        PooledStatisticsWarning,
        stacklevel=stacklevel,
    )
    return True


__all__ = ["AudioDataset", "open_dataset", "augment_params", "ATTR_KEY", "PooledStatisticsWarning", "warn_if_pooling_normalized"]
