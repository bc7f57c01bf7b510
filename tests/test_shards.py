"""Whole-shard writes (pipeline.store.shards) give the exact bytes zarr writes itself."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from pipeline.store.location import StoreLocation
from pipeline.store.shards import RegionWriter, write_shards


def _array(root: pathlib.Path, shape, chunks, shards, dtype, compressors=None):
    g = zarr.open_group(str(root), mode="a")
    return g.create_array(
        "features/x", shape=shape, dtype=dtype, chunks=chunks, shards=shards, fill_value=0.0,
        compressors=compressors or BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
    )


def _files(root: pathlib.Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(root / "features"):
        for n in names:
            p = pathlib.Path(dirpath) / n
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


CASES = [
    # shape, chunks, shards, dtype, start, rows, shuffle
    ((8192, 80), (1024, 80), (4096, 80), "float32", 4096, 3000, "shuffle"),  # one shard, data ends mid-chunk
    ((8192, 80), (1024, 80), (4096, 80), "float32", 0, 8192, "shuffle"),  # two full shards
    ((8192, 80), (1024, 80), (4096, 80), "float16", 0, 5000, "bitshuffle"),  # the second shard partly filled
    ((8192, 80), (1024, 80), (4096, 80), "float16", 0, 4000, "shuffle"),
    ((12288, 13), (2048, 13), (4096, 13), "float32", 4096, 100, "noshuffle"),  # one partial chunk, rest empty
    ((64, 100, 80), (8, 100, 80), (32, 100, 80), "float32", 32, 20, "shuffle"),  # dense (row, frame, bin)
]


def _write(how: str, loc: StoreLocation, arr, start: int, parts: list[np.ndarray]) -> None:
    if how == "write_shards":
        write_shards(loc, arr, start, parts)
        return
    w = RegionWriter(loc, arr, start, background=True)  # as a partition: rows while it computes
    for p in parts:
        w.append(p)
    w.close()


@pytest.mark.parametrize("how", ["write_shards", "background"])
@pytest.mark.parametrize("shape, chunks, shards, dtype, start, rows, shuffle", CASES)
def test_shard_bytes_equal_zarrs_own_write(tmp_path, shape, chunks, shards, dtype, start, rows, shuffle, how):
    rng = np.random.default_rng(rows)
    block = (rng.standard_normal((rows, *shape[1:])) * 20 - 40).astype(dtype)
    block[: min(rows, chunks[0])] = 0  # an inner chunk of fill values: zarr stores no bytes for it
    ours, theirs = tmp_path / "ours", tmp_path / "zarr"
    codec = BloscCodec(cname="lz4", clevel=5, shuffle=shuffle)
    a_ours = _array(ours, shape, chunks, shards, dtype, compressors=codec)
    a_theirs = _array(theirs, shape, chunks, shards, dtype, compressors=codec)
    a_theirs[start : start + rows] = block
    # the rows arrive as uneven parts (clips), as a partition has them
    cuts = sorted({0, rows, *np.random.default_rng(1).integers(0, rows, size=7).tolist()})
    # float16 stores receive float32 features, as from FeatureSet.compute, and cast them
    src = block.astype(np.float32) if dtype == "float16" else block
    _write(how, StoreLocation(str(ours)), a_ours, start, [src[a:b] for a, b in zip(cuts, cuts[1:])])
    f_ours, f_theirs = _files(ours), _files(theirs)
    assert sorted(f_ours) == sorted(f_theirs) and f_ours
    for key in f_theirs:
        assert f_ours[key] == f_theirs[key], key
    back = zarr.open_array(str(ours / "features" / "x"), mode="r")
    np.testing.assert_array_equal(back[start : start + rows], block)
    assert not back[:start].any() and not back[start + rows :].any()


@pytest.mark.parametrize("how", ["write_shards", "background"])
def test_a_shard_of_only_fill_values_is_not_written_and_a_stale_one_is_removed(tmp_path, how):
    a = _array(tmp_path, (8192, 8), (1024, 8), (4096, 8), "float32")
    loc = StoreLocation(str(tmp_path))
    _write(how, loc, a, 4096, [np.ones((4096, 8), np.float32)])
    assert [k for k in _files(tmp_path) if "/c/" in k] == ["features/x/c/1/0"]
    _write(how, loc, a, 4096, [np.zeros((4096, 8), np.float32)])  # a retry that computed nothing but fill
    assert [k for k in _files(tmp_path) if "/c/" in k] == []
    assert not zarr.open_array(str(tmp_path / "features" / "x"), mode="r")[:].any()


def test_other_codec_chains_and_unaligned_regions_fall_back_to_zarr(tmp_path):
    block = np.arange(3000 * 4, dtype=np.float32).reshape(3000, 4)
    a = _array(tmp_path / "zstd", (8192, 4), (1024, 4), (4096, 4), "float32", compressors=ZstdCodec(level=3))
    write_shards(StoreLocation(str(tmp_path / "zstd")), a, 0, [block[:1000], block[1000:]])
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "zstd" / "features" / "x"))[:3000], block)
    b = _array(tmp_path / "unaligned", (8192, 4), (1024, 4), (4096, 4), "float32")
    write_shards(StoreLocation(str(tmp_path / "unaligned")), b, 1024, [block])  # not on a shard boundary
    back = zarr.open_array(str(tmp_path / "unaligned" / "features" / "x"))
    np.testing.assert_array_equal(back[1024:4024], block)
    assert not back[:1024].any()


def test_shard_sync_skips_files_that_cannot_sync_and_raises_real_errors(tmp_path):
    from pipeline.store.shards import _sync_and_drop

    with open(tmp_path / "f", "wb") as f:
        f.write(b"x" * 4096)
        f.flush()
        _sync_and_drop(f.fileno())  # a regular file: synced, pages dropped
    assert (tmp_path / "f").read_bytes() == b"x" * 4096
    r, w = os.pipe()
    try:
        _sync_and_drop(w)  # a pipe cannot be synced (EINVAL): nothing to make durable
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(OSError):
        _sync_and_drop(w)  # a closed descriptor (EBADF) is a real error


def test_a_writer_thread_error_reaches_the_caller_and_no_thread_outlives_it(tmp_path):
    import threading

    a = _array(tmp_path, (8192, 8), (1024, 8), (4096, 8), "float32")
    (tmp_path / "features" / "x" / "c").write_text("a file where the shard folder goes")
    w = RegionWriter(StoreLocation(str(tmp_path)), a, 0)
    with pytest.raises(OSError):  # raised on the writer's thread (makedirs), by append or close
        for _ in range(64):  # more than one chunk: the thread writes while rows still arrive
            w.append(np.ones((512, 8), np.float32))
        w.close()
    w.abort()  # what a failed partition does with every writer; never raises
    assert not [t for t in threading.enumerate() if t.name.startswith("audioprep-writer")]


def test_abort_stops_the_thread_without_writing_the_last_shard(tmp_path):
    a = _array(tmp_path, (8192, 8), (1024, 8), (4096, 8), "float32")
    w = RegionWriter(StoreLocation(str(tmp_path)), a, 0)
    w.append(np.ones((4096 + 100, 8), np.float32))  # one whole shard, and 100 rows of the next
    w.abort()
    assert [k for k in _files(tmp_path) if "/c/" in k] == ["features/x/c/0/0"]  # the finished shard only
    assert not w._thread.is_alive()
