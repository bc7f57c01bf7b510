"""Partition packing: a full partition fills its shard instead of spilling a few frames into
a second, nearly empty one; deterministic and contiguous."""

from __future__ import annotations

from pipeline.plan.partition import WorkItem, plan_partitions
from pipeline.store.layout import Layout


def _items(n, seconds=10.0, sr=16_000):
    return [
        WorkItem(f"id{i:04d}", "s", f"f{i:04d}.wav", f"/x/f{i:04d}.wav", f"k{i}", "", "", "train", 0, int(seconds * sr), sr, 1)
        for i in range(n)
    ]


def _plan(items, shard, partition_seconds=1800.0):
    layout = Layout(mode="ragged", feature_shapes={"log_mel": (80,)}, frames_per_row=0, chunk=shard // 16, shard=shard)
    return plan_partitions(
        items, layout=layout, start=0, partition_seconds=partition_seconds, target_sr=16_000,
        n_frames=lambda n: 1 + n // 160, copy_length_factor=1.0, fingerprint="fp",
    )


def test_full_partitions_fit_their_shard():
    # the store's shard for 1800 s at hop 160 is 178,176 frames; 180 files of 10 s need 180,360
    parts = _plan(_items(400), shard=178_176)
    assert [len(p.items) for p in parts] == [177, 177, 46]
    assert [p.capacity for p in parts] == [178_176] * 3
    assert [p.start for p in parts] == [0, 178_176, 2 * 178_176]
    assert [p.audio_seconds for p in parts] == [1770.0, 1770.0, 460.0]
    assert [p.partition_id for p in parts] == [p.partition_id for p in _plan(_items(400), shard=178_176)]

    # a partition takes as many shards as its budget fills: with 600 s shards and 2000 s, a
    # 500 s file (50,002 frames) and 129 files of 10 s fill three shards (179,131 of 180,000
    # frames, 1790 s); the next file would open a fourth that the 210 s left would fill to a
    # third, so the partition closes there
    parts = _plan(_items(1, seconds=500.0) + _items(200)[1:], shard=60_000, partition_seconds=2000.0)
    assert [len(p.items) for p in parts] == [130, 70]
    assert [p.capacity for p in parts] == [180_000, 120_000]
    assert [p.audio_seconds for p in parts] == [1790.0, 700.0]
    # half a shard left is enough to open it: with 2100 s, the fourth shard is opened
    parts = _plan(_items(1, seconds=500.0) + _items(200)[1:], shard=60_000, partition_seconds=2100.0)
    assert [len(p.items) for p in parts] == [161, 39]
    assert [p.capacity for p in parts] == [240_000, 60_000]
