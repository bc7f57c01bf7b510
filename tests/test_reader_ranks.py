"""iter_batches on a real store: the same values as ``ds[i]``, ranks and workers that split
each epoch exactly, resume after a killed reader at another world size, duration buckets."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest
import zarr

from pipeline import open_dataset
from pipeline.read.chunks import RowReader
from pipeline.store.location import StoreLocation

SMALL = 64 << 10  # 64 KiB blocks: ~300 frames, so the 120-clip store has 57 of them


def epoch(ds, **kw):
    return list(ds.iter_batches(block_bytes=SMALL, **kw))


def check_batch_values(ds, batch):
    """Every row of a batch equals ds[i] of its id, zero past its length."""
    pos = {str(x): i for i, x in enumerate(ds.table["id"])}
    for j, ex_id in enumerate(batch["ids"]):
        item = ds[pos[ex_id]]
        for name, x in item["features"].items():
            n = x.shape[0]
            assert batch["lengths"][j] == n
            np.testing.assert_array_equal(batch["features"][name][j, :n], x)
            assert not batch["features"][name][j, n:].any()
        assert batch["label_index"][j] == item["label_index"]


def test_row_reader_equals_zarr_across_chunks_and_shards(reader_store):
    arr = zarr.open_group(str(reader_store), mode="r")["features/log_mel"]
    assert arr.shards[0] == 2 * arr.chunks[0]  # several chunks per shard, several shards
    r = RowReader(StoreLocation(str(reader_store)), arr, lambda a, b: ["x"])
    assert r.format is not None
    rng = np.random.default_rng(0)
    n = arr.shape[0]
    spans = [(0, n), (0, 1), (n - 1, n), (4095, 4097), (8191, 8193)]
    spans += [(int(a), int(a) + int(rng.integers(1, 9000))) for a in rng.integers(0, n, 30)]
    for a, b in spans:
        np.testing.assert_array_equal(r.read(a, b), arr[a : min(b, n)])


@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_hold_the_values_of_ds_getitem(reader_store, shuffle):
    ds = open_dataset(str(reader_store))
    batches = epoch(ds, batch_size=16, shuffle=shuffle, seed=3)
    ids = [i for b in batches for i in b["ids"]]
    assert sorted(ids) == sorted(str(x) for x in ds.table["id"]) and len(batches) == 8
    assert [b["index"] for b in batches] == list(range(8))
    for b in batches:
        check_batch_values(ds, b)
    if not shuffle:  # disk order
        assert ids == [str(x) for x in ds.table["id"][np.argsort(ds.table["offset"], kind="stable")]]


@pytest.mark.parametrize("world_size,num_workers", [(2, 1), (3, 2), (4, 1)])
def test_every_example_once_across_ranks_and_workers_in_the_same_batches(reader_store, world_size, num_workers):
    ds = open_dataset(str(reader_store))
    one = {b["index"]: b["ids"] for b in epoch(ds, batch_size=7, seed=1, epoch=4)}
    got, per_rank = {}, []
    for r in range(world_size):
        n = 0
        for w in range(num_workers):
            for b in epoch(ds, batch_size=7, seed=1, epoch=4, rank=r, world_size=world_size, worker=w, num_workers=num_workers):
                n += 1
                assert b["ids"] == one[b["index"]]  # the same batch, whoever reads it
                if not b["repeat"]:
                    assert b["index"] not in got
                    got[b["index"]] = b["ids"]
        per_rank.append(n)
    # 120 examples in batches of 7: 17 full ones and one of 1
    assert sorted(got) == sorted(one) == list(range(18)) and len(one[17]) == 1
    assert sorted(i for ids in got.values() for i in ids) == sorted(str(x) for x in ds.table["id"])
    assert len(set(per_rank)) == 1  # DDP needs as many batches on every rank


def test_drop_last_gives_every_rank_as_many_full_batches(reader_store):
    ds = open_dataset(str(reader_store))
    per_rank = [epoch(ds, batch_size=7, drop_last=True, rank=r, world_size=4) for r in range(4)]
    assert [len(x) for x in per_rank] == [4, 4, 4, 4]  # 17 full batches, the 17th left out
    ids = [i for rank in per_rank for b in rank for i in b["ids"]]
    assert len(ids) == len(set(ids)) == 112 and all(len(b["ids"]) == 7 for r in per_rank for b in r)


KILLED_READER = r"""
import json, os, signal, sys
from pipeline import open_dataset
store, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
ds = open_dataset(store)
streams = [ds.iter_batches(5, seed=11, epoch=2, rank=r, world_size=2, block_bytes=65536) for r in range(2)]
for step in range(steps):
    for s in streams:
        b = next(s)
        with open(out + ".batches", "a") as f:
            f.write(json.dumps({"index": b["index"], "ids": b["ids"], "repeat": b["repeat"]}) + "\n")
    with open(out + ".tmp", "w") as f:
        json.dump(streams[0].state_dict(), f)
    os.replace(out + ".tmp", out)
os.kill(os.getpid(), signal.SIGKILL)  # mid-epoch, no cleanup
"""


def test_a_killed_reader_resumes_at_another_world_size_with_the_rest_of_the_epoch(reader_store, tmp_path):
    out = tmp_path / "state.json"
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parent.parent)}
    proc = subprocess.run([sys.executable, "-c", KILLED_READER, str(reader_store), str(out), "5"], env=env, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    first = [json.loads(line) for line in (tmp_path / "state.json.batches").read_text().splitlines()]
    assert len(first) == 10
    state = json.loads(out.read_text())

    ds = open_dataset(str(reader_store))
    whole = {b["index"]: b["ids"] for b in ds.iter_batches(5, seed=11, epoch=2, block_bytes=SMALL)}
    assert len(whole) == 24
    second = []
    for r in range(3):  # restarted with 3 ranks instead of 2
        second += [b for b in ds.iter_batches(5, seed=11, epoch=2, rank=r, world_size=3, block_bytes=SMALL, state=state)]
    real = [b for b in first + second if not b["repeat"]]
    assert sorted(b["index"] for b in real) == list(range(24))  # every batch once
    for b in real:
        assert b["ids"] == whole[b["index"]]  # the same batches as the uninterrupted epoch
    # 14 batches were left for 3 ranks: 5 each, one repeated
    assert len(second) == 15 and sum(b["repeat"] for b in second) == 1


def test_state_dict_after_the_epoch_leaves_nothing(reader_store):
    ds = open_dataset(str(reader_store))
    s = ds.iter_batches(16, block_bytes=SMALL)
    assert len(s) == 8
    list(s)
    assert s.state_dict()["remaining"] == []
    assert list(ds.iter_batches(16, block_bytes=SMALL, state=s.state_dict())) == []
    with pytest.raises(ValueError, match="epoch"):
        ds.iter_batches(16, epoch=1, block_bytes=SMALL, state=s.state_dict())


@pytest.mark.parametrize("prefetch", [0, 1, 6])
def test_prefetch_depth_changes_nothing(reader_store, prefetch):
    ds = open_dataset(str(reader_store))
    ref = epoch(ds, batch_size=9, seed=5, prefetch=0)
    got = epoch(ds, batch_size=9, seed=5, prefetch=prefetch)
    for a, b in zip(ref, got):
        assert a["ids"] == b["ids"]
        for name in a["features"]:
            np.testing.assert_array_equal(a["features"][name], b["features"][name])


def test_duration_buckets_cap_frames_and_report_padding(reader_store):
    ds = open_dataset(str(reader_store))
    stream = ds.iter_batches(max_frames=1200, buckets=6, seed=2, block_bytes=SMALL)
    batches = list(stream)
    ids = [i for b in batches for i in b["ids"]]
    assert sorted(ids) == sorted(str(x) for x in ds.table["id"])
    real = padded = 0
    for b in batches:
        n, t = b["features"]["log_mel"].shape[:2]
        assert n * t <= 1200 or n == 1
        assert t == b["lengths"].max()
        real += int(b["lengths"].sum())
        padded += n * t
        check_batch_values(ds, b)
    assert stream.stats.real_frames == real == int(ds.frames.sum())
    assert stream.stats.padded_frames == padded
    plan = ds.plan_epoch(ds.batch_settings(None, max_frames=1200, buckets=6), seed=2, block_bytes=SMALL)
    assert plan.padding()["padding_efficiency"] == pytest.approx(real / padded)
    plain = ds.plan_epoch(ds.batch_settings(16), seed=2, block_bytes=SMALL)
    assert real / padded > plain.padding()["padding_efficiency"] + 0.1


@pytest.mark.parametrize("prefetch", [0, 3])
def test_long_clips_decoded_straight_into_the_batch_equal_block_decoding(reader_store, prefetch):
    """Clips at least a chunk long are decoded per example into their batch row; forced on here
    (the test store's clips are shorter than a chunk), it gives the same batches."""
    ds = open_dataset(str(reader_store))
    assert not ds._direct()
    ref = epoch(ds, batch_size=13, seed=8)
    direct = open_dataset(str(reader_store))
    direct._cache["direct"] = True
    got = epoch(direct, batch_size=13, seed=8, prefetch=prefetch)
    assert [b["ids"] for b in got] == [b["ids"] for b in ref]
    for a, b in zip(ref, got):
        for name in a["features"]:
            np.testing.assert_array_equal(a["features"][name], b["features"][name])
    check_batch_values(direct, got[0])
