"""Partitioning: cut the work into tasks of about ``partition_seconds`` of audio each.

Partitions depend only on the catalog and the store's committed state (sorted file
list, durations, the allocation end), never on the number of workers, so every run of
the same catalog plans the same partitions, and a resumed run recognises finished ones.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

from pipeline.io.audio import resampled_length
from pipeline.store.layout import Layout


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One file to decode and featurize in a partition, with its augmented copies."""

    example_id: str
    source: str
    rel_path: str
    url: str
    content_key: str
    label: str
    group: str
    split: str
    copies: int
    frames: int
    sample_rate: int
    channels: int
    text: str = ""
    """The transcript (normalized), "" without one."""
    tags: str = ""
    """Multi-label tags, a JSON list ("" without)."""

    @property
    def duration_seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


@dataclass(frozen=True, slots=True)
class PartitionSpec:
    """One Prefect task's worth of work and the region of axis 0 it alone writes."""

    index: int
    partition_id: str
    items: tuple[WorkItem, ...]
    start: int
    """First frame (ragged) or row (dense) of this partition's region; shard-aligned."""
    capacity: int
    """Region length; a whole number of shards."""
    audio_seconds: float

    def to_dict(self) -> dict:
        d = asdict(self)
        d["items"] = [asdict(i) for i in self.items]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PartitionSpec:
        return cls(**{**d, "items": tuple(WorkItem(**i) for i in d["items"])})


def segments_of(item: WorkItem, segment_seconds: float | None) -> int:
    """How many examples a file becomes (more than one only when long files are split)."""
    if not segment_seconds or item.duration_seconds <= segment_seconds:
        return 1
    return int(math.ceil(item.frames / int(segment_seconds * item.sample_rate)))


def item_length(
    item: WorkItem, *, layout: Layout, target_sr: int, n_frames: Callable[[int], int], copy_length_factor: float, segment_seconds: float | None = None
) -> int:
    """Upper bound of the axis-0 length the item, its segments and its copies need."""
    segments = segments_of(item, segment_seconds)
    if layout.mode == "dense":
        return segments * (1 + item.copies)
    n = resampled_length(item.frames, item.sample_rate, target_sr) + segments  # each segment rounds up
    try:
        total = n_frames(n)
    except ValueError:  # shorter than one window with center=False: rejected by the partition
        return 0
    total += segments  # centred framing adds up to one frame per segment
    if item.copies:
        total += item.copies * (n_frames(int(math.ceil(n * copy_length_factor)) + 1) + segments)
    return total


def plan_partitions(
    items: Iterable[WorkItem],
    *,
    layout: Layout,
    start: int,
    partition_seconds: float,
    target_sr: int,
    n_frames: Callable[[int], int],
    copy_length_factor: float,
    fingerprint: str,
    segment_seconds: float | None = None,
) -> list[PartitionSpec]:
    """Group items (in the given, deterministic order) into partitions.

    A partition closes before the item that would take it past ``partition_seconds``, or
    before the item that would open one more shard when the rest of ``partition_seconds``
    would fill less than half of it: typical partitions then fill their shards instead of
    writing one more, nearly empty one.

    ``fingerprint`` is a hash of everything that changes the computed bytes (feature,
    audio and augmentation settings, seed); it is part of every partition id.
    """
    parts: list[PartitionSpec] = []
    batch: list[WorkItem] = []
    seconds = 0.0
    length = 0
    cursor = start

    def flush() -> None:
        nonlocal batch, seconds, length, cursor
        if not batch:
            return
        capacity = layout.align(length)
        pid = _partition_id(batch, cursor, fingerprint)
        parts.append(PartitionSpec(len(parts), pid, tuple(batch), cursor, capacity, seconds))
        cursor += capacity
        batch, seconds, length = [], 0.0, 0

    for item in items:
        cost = item.duration_seconds * (1 + item.copies)
        need = item_length(
            item, layout=layout, target_sr=target_sr, n_frames=n_frames, copy_length_factor=copy_length_factor, segment_seconds=segment_seconds
        )
        if batch and seconds + cost > partition_seconds:
            flush()
        elif batch and layout.align(length + need) > layout.align(length) and partition_seconds - seconds < 0.5 * layout.shard * seconds / max(1, length):
            # the item would open one more shard and what is left of the budget would fill
            # less than half of it (a full partition would spill a little into it): close here
            flush()
        batch.append(item)
        seconds += cost
        length += need
    flush()
    return parts


def _partition_id(items: Sequence[WorkItem], start: int, fingerprint: str) -> str:
    h = hashlib.blake2b(digest_size=10)
    h.update(f"{fingerprint}|{start}".encode())
    for it in items:
        h.update(json.dumps([it.example_id, it.content_key, it.split, it.copies]).encode())
    return f"p{start:012d}-{h.hexdigest()}"
