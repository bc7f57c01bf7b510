"""The store's array layout: which arrays exist, their chunking and sharding.

Axis 0 of every feature array is the *write axis*: frames in ``ragged`` mode (clips of any
length concatenated along time), rows in ``dense`` mode (fixed-length clips,
``(row, frame, bin)``). Each partition owns a shard-aligned region of axis 0, so no two
tasks ever write the same shard. Documented in docs/store-format.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

FORMAT_VERSION = 1
CHUNK_TARGET_BYTES = 1 << 20
#: a shard's decoded size at most: zarr's and the writer's whole-shard buffers then stay under
#: glibc's largest mmap threshold (32 MiB), so a worker reuses them instead of taking a fresh
#: mapping, and a page fault per page, for every shard (docs/performance.md, round 9)
SHARD_TARGET_BYTES = 24 << 20
# Blosc lz4 shuffle per dtype, measured on log-mel 80 (MB per audio hour, encode speed):
# float32 byte-shuffle 86.3 (bit-shuffle 83.9, 1.7x slower to encode); float16 bit-shuffle
# 38.9 (byte-shuffle 43.5)
SHUFFLE = {"float32": "shuffle", "float16": "bitshuffle"}


@dataclass(frozen=True, slots=True)
class Layout:
    mode: str
    """``ragged`` (full-length clips) or ``dense`` (fixed-length clips)."""
    feature_shapes: dict[str, tuple[int, ...]]
    """Per-frame trailing shape of each frame-level feature, e.g. ``{"log_mel": (80,)}``."""
    frames_per_row: int
    """Frames of every row in dense mode; 0 in ragged mode."""
    chunk: int
    """Chunk length along axis 0 (frames or rows): the unit of reading."""
    shard: int
    """Shard length along axis 0: the unit of writing, a multiple of ``chunk``."""
    dtype: str = "float32"
    """Storage dtype of the feature arrays (``output.dtype``): ``float32`` or ``float16``."""
    channels: int = 0
    """Channels kept per example (``audio.mono: false``): the first trailing axis of every
    feature shape; 0 when mixed to mono (no channel axis)."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["feature_shapes"] = {k: list(v) for k, v in self.feature_shapes.items()}
        # defaults are left out so stores written before output.dtype / channels keep their fingerprint
        if self.dtype == "float32":
            del d["dtype"]
        if not self.channels:
            del d["channels"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Layout:
        return cls(
            mode=d["mode"],
            feature_shapes={k: tuple(v) for k, v in d["feature_shapes"].items()},
            frames_per_row=int(d["frames_per_row"]),
            chunk=int(d["chunk"]),
            shard=int(d["shard"]),
            dtype=str(d.get("dtype", "float32")),
            channels=int(d.get("channels", 0)),
        )

    def align(self, n: int) -> int:
        """Round ``n`` up to whole shards."""
        return int(math.ceil(n / self.shard) * self.shard) if n > 0 else 0


def make_layout(
    feature_shapes: dict[str, tuple[int, ...]], *, dense_frames: int, nominal_partition_len: int, dtype: str = "float32", channels: int = 0
) -> Layout:
    """Choose chunk and shard sizes.

    Parameters
    ----------
    feature_shapes : per-frame shapes.
    dense_frames : frames per fixed-length clip, or 0 for ragged mode.
    nominal_partition_len : frames (ragged) or rows (dense) a typical partition writes;
        a shard is sized to about that, so partitions own one or a few shards.
    dtype : storage dtype of the feature arrays, ``float32`` or ``float16``.
    channels : channels kept per example (already the first axis of each shape), or 0.
    """
    # sized for 4-byte values whatever ``dtype``: float32 layouts stay as they were, and a
    # float16 layout keeps the same frames per chunk (half the bytes)
    widest = max((int(np.prod(s)) for s in feature_shapes.values()), default=1)
    unit = widest * 4 * (dense_frames if dense_frames else 1)
    chunk = max(1, CHUNK_TARGET_BYTES // unit)
    if not dense_frames:
        chunk = max(256, 1 << int(math.log2(chunk)))
    per_partition = max(1, nominal_partition_len // chunk)
    # a partition's region in as few shards as keep each under SHARD_TARGET_BYTES, evenly
    n_shards = max(1, math.ceil(per_partition * chunk * unit / SHARD_TARGET_BYTES))
    per_shard = math.ceil(per_partition / n_shards)
    return Layout(
        mode="dense" if dense_frames else "ragged",
        feature_shapes=dict(feature_shapes),
        frames_per_row=dense_frames,
        chunk=chunk,
        shard=chunk * per_shard,
        dtype=dtype,
        channels=channels,
    )


def feature_array_shape(layout: Layout, name: str, length: int) -> tuple[int, ...]:
    tail = layout.feature_shapes[name]
    return (length, layout.frames_per_row, *tail) if layout.mode == "dense" else (length, *tail)


def feature_dims(layout: Layout, name: str) -> tuple[str, ...]:
    tail = layout.feature_shapes[name][1:] if layout.channels else layout.feature_shapes[name]
    extra = tuple(f"{name}_bin" if i == 0 else f"{name}_bin{i}" for i in range(len(tail)))
    if layout.channels:
        extra = ("channel", *extra)
    return ("row", "frame", *extra) if layout.mode == "dense" else ("frame", *extra)


def ensure_feature_arrays(group: zarr.Group, layout: Layout, length: int, feature_params: dict[str, Any]) -> None:
    """Create the feature arrays, or grow them along axis 0 to ``length`` (never shrink).

    Only the coordinator calls this, before partitions start: workers never resize.
    """
    feats = group.require_group("features")
    existing = set(feats.array_keys())
    for name in layout.feature_shapes:
        shape = feature_array_shape(layout, name, length)
        if name in existing:
            arr = feats[name]
            if arr.shape[0] < length:
                arr.resize(shape)
            continue
        chunks = (layout.chunk, *shape[1:])
        shards = (layout.shard, *shape[1:])
        feats.create_array(
            name,
            shape=shape,
            chunks=chunks,
            shards=shards,
            dtype=layout.dtype,
            fill_value=0.0,
            # a CRC-32C of every inner chunk after compression: a damaged chunk is an error on
            # read, never other numbers (stores made before it have no checksum and still read)
            compressors=(BloscCodec(cname="lz4", clevel=5, shuffle=SHUFFLE[layout.dtype]), Crc32cCodec()),
            dimension_names=feature_dims(layout, name),
            attributes={
                "dtype": layout.dtype,
                "frame_shape": list(layout.feature_shapes[name]),
                "layout": layout.mode,
                "params": feature_params.get(name, {}),
                "description": "time-major feature frames; see docs/store-format.md",
            },
        )
