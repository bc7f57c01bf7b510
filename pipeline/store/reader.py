"""Reading a store for training: a map-style dataset plus chunk-ordered batch iteration.

``AudioDataset`` works as a PyTorch ``Dataset`` without importing torch (``len`` and
``[i]``). It pickles to (URL, options, selection) and reopens lazily, so DataLoader
workers started with spawn or forkserver each open their own Zarr handles.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from pipeline.errors import StoreError
from pipeline.read.chunks import RowReader
from pipeline.read.plan import BatchSettings, EpochPlan, bucket_edges_for, make_blocks, plan_epoch
from pipeline.read.stream import BatchStream, Progress
from pipeline.store.location import StoreLocation
from pipeline.store.state import ACTIVE, ATTR_KEY, read_meta, table_path
from pipeline.store.tables import read_table

# decoded bytes per block, the unit of reading of iter_batches (whole chunks of the store). The
# shuffling window (8 blocks, 16 MiB) stays in a CPU's last-level cache while batches are copied
# out of it: 8 MiB blocks (a 64 MiB window) read 1 s clips at half the speed (docs/performance.md)
BLOCK_BYTES = 2 << 20

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
        self._readers: dict[str, RowReader] = {}
        self._cache: dict[Any, Any] = {}
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
        self.text_vocab: list[str] = list(meta.get("text_vocab") or [])
        """Characters of the train split's transcripts: ``text_vocab[k]`` has id ``k + 1``; 0 is
        the CTC blank (and the padding of ``text_ids``), ``len(text_vocab) + 1`` a character
        the train split never had."""
        self._char_id = {ch: k + 1 for k, ch in enumerate(self.text_vocab)}
        self.tag_vocab: list[str] = list(meta.get("tag_vocab") or [])
        """Every tag of the store: column ``k`` of the ``tags`` multi-hot vectors."""
        self._tag_index = {t: k for k, t in enumerate(self.tag_vocab)}
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
        state["_readers"] = {}
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

    def _reader(self, name: str) -> RowReader:
        if name not in self._readers:
            self._readers[name] = RowReader(StoreLocation(self._sel.url, self._sel.storage_options), self._array(name), self._ids_in)
        return self._readers[name]

    def _read(self, name: str, lo: int, hi: int) -> np.ndarray:
        """Rows ``[lo, hi)`` of a feature array; a damaged or missing shard is a StoreError
        naming the store, the array, the shard and the examples."""
        return self._reader(name).read(lo, hi)

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

    def text_ids(self, text: str) -> np.ndarray:
        """Token ids of a transcript (int64, one per character; see :attr:`text_vocab`)."""
        unknown = len(self.text_vocab) + 1
        return np.fromiter((self._char_id.get(ch, unknown) for ch in text), dtype=np.int64, count=len(text))

    def tags_multi_hot(self, tags_json: str) -> np.ndarray:
        """A float32 vector over :attr:`tag_vocab` with 1 at each of the example's tags."""
        out = np.zeros(len(self.tag_vocab), np.float32)
        for t in json.loads(tags_json) if tags_json else []:
            k = self._tag_index.get(t)
            if k is not None:
                out[k] = 1.0
        return out

    def _targets(self, positions: np.ndarray) -> dict[str, Any]:
        """Transcript and tag targets of a batch of examples (only what the store holds)."""
        out: dict[str, Any] = {}
        if "text" in self.table and self.text_vocab:
            texts = [str(x) for x in self.table["text"][positions].tolist()]
            ids = [self.text_ids(t) for t in texts]
            lengths = np.array([len(x) for x in ids], np.int64)
            padded = np.zeros((len(ids), int(lengths.max()) if len(ids) else 0), np.int64)
            for j, x in enumerate(ids):
                padded[j, : x.size] = x
            out.update({"texts": texts, "text_ids": padded, "text_lengths": lengths})
        if "tags" in self.table and self.tag_vocab:
            hot = np.zeros((len(positions), len(self.tag_vocab)), np.float32)
            for j, x in enumerate(self.table["tags"][positions].tolist()):
                hot[j] = self.tags_multi_hot(str(x))
            out["tags"] = hot
        return out

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
        targets = self._targets(np.array([i]))
        extra: dict[str, Any] = {}
        if "texts" in targets:
            extra.update({"text": targets["texts"][0], "text_ids": targets["text_ids"][0], "text_length": int(targets["text_lengths"][0])})
        if "tags" in targets:
            extra["tags"] = targets["tags"][0]
        return {
            "features": feats,
            "label": label,
            "label_index": self.label_index(label),
            "id": str(self.table["id"][i]),
            "metadata": {k: _py(self.table[k][i]) for k in META_COLUMNS if k in self.table},
            **extra,
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
        self,
        batch_size: int | None = None,
        *,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        worker: int = 0,
        num_workers: int = 1,
        max_frames: int | None = None,
        buckets: int | Sequence[int] = 16,
        blocks_in_buffer: int = 8,
        block_bytes: int = BLOCK_BYTES,
        prefetch: int | None = None,
        state: dict[str, Any] | None = None,
    ) -> BatchStream:
        """Batches of one epoch, read a block of neighbouring chunks at a time.

        The epoch's global batch list depends only on ``(seed, epoch)`` and the batch
        settings (``pipeline.read.plan``): blocks of about ``block_bytes`` of neighbouring
        examples, with ``shuffle`` permuted and mixed in windows of ``blocks_in_buffer``
        blocks. Rank ``rank`` of ``world_size`` takes a contiguous equal share of it, and
        worker ``worker`` of that rank's ``num_workers`` DataLoader workers a contiguous part
        of that share: every batch goes to exactly one worker of one rank.

        Parameters
        ----------
        batch_size : examples per batch (with ``max_frames``: an optional cap).
        shuffle, seed, epoch : the order; the same (seed, epoch) gives the same batches.
        drop_last : drop the short last batch, and the last ``L mod world_size`` of the ``L``
            batches left, so that every rank gets as many. Otherwise the last batch may be
            short, and with ``world_size > 1`` ranks with one batch less get one of the
            epoch's first batches again (``batch["repeat"]``): DDP needs as many batches on
            every rank.
        max_frames : duration buckets: a batch holds examples of one length bucket, as many
            as keep ``examples x longest <= max_frames`` frames.
        buckets : number of length buckets (equal-count quantiles of the examples' frames)
            or the frame counts that separate them.
        prefetch : blocks fetched ahead on that many threads (range reads, GETs; decoding
            stays in the calling thread). Default 8 for a remote store, 0 for a local one,
            where the page cache answers at memory speed and threads only contend for the core.
        state : resume from ``stream.state_dict()`` of an earlier run (any world size).

        Returns
        -------
        BatchStream, an iterator of dicts: ``features`` {name: (batch, longest, *bins) float32,
        zero-padded}, ``lengths`` (batch,), ``label_index`` (batch,), ``labels``, ``ids``,
        ``index`` (the batch's place in the epoch) and ``repeat``.
        """
        if not 0 <= worker < num_workers:
            raise ValueError(f"worker must be in [0, {num_workers}), not {worker}")
        settings = self.batch_settings(batch_size, shuffle=shuffle, drop_last=drop_last, world_size=world_size,
                                       max_frames=max_frames, buckets=buckets, blocks_in_buffer=blocks_in_buffer)
        plan = self.plan_epoch(settings, seed=seed, epoch=epoch, block_bytes=block_bytes)
        split = "drop" if drop_last else ("pad" if world_size > 1 else "keep")
        progress = Progress(settings, int(seed), int(epoch), len(plan), self._fingerprint(block_bytes),
                            np.arange(len(plan), dtype=np.int64), int(world_size), int(num_workers), split)
        if state is not None:
            progress.resume(state)
        if prefetch is None:
            prefetch = 8 if StoreLocation(self._sel.url).remote else 0
        stream = BatchStream(plan, progress, int(rank), int(worker), lambda b: self._fetch_block(b, block_bytes),
                             lambda b, raw: self._decode_block(b, raw, block_bytes), self._collate, prefetch)
        return stream

    def batch_settings(self, batch_size: int | None, *, shuffle: bool = True, drop_last: bool = False, world_size: int = 1,
                       max_frames: int | None = None, buckets: int | Sequence[int] = 16, blocks_in_buffer: int = 8) -> BatchSettings:
        """The :class:`BatchSettings` ``iter_batches`` uses for these arguments."""
        if world_size < 1:
            raise ValueError("world_size must be >= 1")
        tail = "drop" if drop_last else "keep"  # the batch list never depends on the world size
        edges = bucket_edges_for(self.frames, buckets) if max_frames is not None else ()
        return BatchSettings(batch_size, max_frames, edges, bool(shuffle), int(blocks_in_buffer), tail)

    def plan_epoch(self, settings: BatchSettings, *, seed: int = 0, epoch: int = 0, block_bytes: int = BLOCK_BYTES) -> EpochPlan:
        """The epoch's global batch list (no data is read): ``plan.padding()`` reports the
        padding efficiency of a bucketing setting before training."""
        return plan_epoch(self.frames, self._block_list(block_bytes), settings, seed, epoch)

    @property
    def frames(self) -> np.ndarray:
        """(n,) frames of each example."""
        if "frames" not in self._cache:
            if self.layout["mode"] == "dense":
                self._cache["frames"] = np.full(len(self), int(self.layout["frames_per_row"]), np.int64)
            else:
                self._cache["frames"] = self.table["length"].astype(np.int64)
        return self._cache["frames"]

    def _rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Each example's first row and rows along axis 0 of the feature arrays."""
        if "rows" not in self._cache:
            off = self.table["offset"].astype(np.int64)
            self._cache["rows"] = (off, np.ones_like(off) if self.layout["mode"] == "dense" else self.table["length"].astype(np.int64))
        return self._cache["rows"]

    def _block_rows(self, block_bytes: int) -> int:
        """Rows per block: whole chunks, about ``block_bytes`` of decoded float32."""
        shapes = self.layout["feature_shapes"]
        per_row = sum(int(np.prod(shapes[f])) for f in self.feature_names) * 4 * max(1, int(self.layout["frames_per_row"]))
        chunk = int(self.layout["chunk"])
        if block_bytes < per_row * chunk:  # smaller than a chunk: allowed (tests), though reading is per chunk
            return max(1, int(block_bytes) // per_row)
        return chunk * (int(block_bytes) // (per_row * chunk))

    def _block_list(self, block_bytes: int) -> list[np.ndarray]:
        key = ("blocks", int(block_bytes))
        if key not in self._cache:
            off, _ = self._rows()
            self._cache[key] = make_blocks(off, self._block_rows(block_bytes))
        return self._cache[key]

    def _fingerprint(self, block_bytes: int) -> dict[str, Any]:
        return {"url_version": f"{self._sel.version}", "examples": len(self), "split": self._sel.split,
                "include_copies": self._sel.include_copies, "block_rows": self._block_rows(block_bytes)}

    def _block_span(self, b: int, block_bytes: int) -> tuple[int, int]:
        pos = self._block_list(block_bytes)[b]
        off, rows = self._rows()
        return int(off[pos].min()), int((off[pos] + rows[pos]).max())

    def _fetch_block(self, b: int, block_bytes: int) -> dict[str, Any]:
        """The compressed bytes of block ``b`` of every feature (I/O only; runs on a prefetch thread)."""
        lo, hi = self._block_span(b, block_bytes)
        return {name: self._reader(name).fetch(lo, hi) for name in self.feature_names}

    def _decode_block(self, b: int, fetched: dict[str, Any], block_bytes: int) -> dict[str, Any]:
        """Rows of block ``b`` of every feature, float32, globally normalized; ``_lo`` is its first row."""
        lo, hi = self._block_span(b, block_bytes)
        data: dict[str, Any] = {"_lo": lo}
        if self._direct():  # decoded per example, straight into the batch (in _collate)
            data["_fetched"] = {name: self._reader(name).fetch(lo, hi) for name in self.feature_names} if fetched is None else fetched
            return data
        for name in self.feature_names:
            r = self._reader(name)
            # fetched None: not prefetched, read now (through this thread's reusable buffer)
            x = np.asarray(r.read(lo, hi) if fetched is None else r.decode(lo, hi, fetched[name]), dtype=np.float32)
            if self.normalization == "global" and name in self._norm:
                mean, std = self._norm[name]
                x = ((x.reshape(-1, mean.size) - mean.reshape(-1)) / std.reshape(-1)).reshape(x.shape).astype(np.float32, copy=False)
            data[name] = x
        return data

    def _collate(self, positions: np.ndarray, block_of: np.ndarray, blocks: dict[int, dict[str, Any]]) -> dict[str, Any]:
        """One batch from decoded blocks: ``block_of[j]`` holds example ``positions[j]``."""
        off, _ = self._rows()
        frames = self.frames[positions]
        t_max = int(frames.max()) if len(frames) else 0
        out_feats = {}
        for name in self.feature_names:
            tail = tuple(self.layout["feature_shapes"][name])
            if self.layout["mode"] == "dense" and self.normalization != "per_example":
                # fixed-length rows: one gather per block, no padding
                batch = np.empty((len(positions), t_max, *tail), dtype=np.float32)
                for b in np.unique(block_of).tolist():
                    js = np.flatnonzero(block_of == b)
                    d = blocks[b]
                    batch[js] = d[name][off[positions[js]] - d["_lo"]]
                out_feats[name] = batch
                continue
            # empty, not zeros: only the padding is zeroed, the rest is written once
            batch = np.empty((len(positions), t_max, *tail), dtype=np.float32)
            if self._direct():
                reader = self._reader(name)
                for j, (p, b, n) in enumerate(zip(positions.tolist(), block_of.tolist(), frames.tolist())):
                    o = int(off[p])
                    reader.decode(o, o + n, blocks[b]["_fetched"][name], out=batch[j, :n])
                    if self.normalization != "none":
                        batch[j, :n] = self._normalize(name, batch[j, :n])
                    batch[j, n:] = 0
                out_feats[name] = batch
                continue
            for j, (p, b, n) in enumerate(zip(positions.tolist(), block_of.tolist(), frames.tolist())):
                d = blocks[b]
                o = int(off[p]) - d["_lo"]
                x = d[name][o] if self.layout["mode"] == "dense" else d[name][o : o + n]
                if self.normalization == "per_example":
                    x = self._normalize(name, x)
                batch[j, :n] = x
                batch[j, n:] = 0
            out_feats[name] = batch
        return {
            "features": out_feats,
            "lengths": frames.astype(np.int64),
            "labels": [str(x) for x in self.table["label"][positions].tolist()],
            "label_index": self._label_indices()[positions],
            "ids": [str(x) for x in self.table["id"][positions].tolist()],
            **self._targets(positions),
        }

    def _direct(self) -> bool:
        """Decode each example straight into its batch row: ragged float32 clips at least a
        chunk long, whose chunks are mostly whole inside one clip (measured: 30 s clips read
        at twice the speed; shorter clips share chunks, which a block decodes once)."""
        if "direct" not in self._cache:
            self._cache["direct"] = (self.layout["mode"] == "ragged" and self.layout.get("dtype", "float32") == "float32"
                                     and len(self) > 0 and float(self.frames.mean()) >= int(self.layout["chunk"]))
        return self._cache["direct"]

    def _label_indices(self) -> np.ndarray:
        if "label_index" not in self._cache:
            self._cache["label_index"] = np.array([self.label_index(str(x)) for x in self.table["label"]], dtype=np.int64)
        return self._cache["label_index"]


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
