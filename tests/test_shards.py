"""Whole-shard writes (pipeline.store.shards.RegionWriter) through zarr's public API: the
values read back, the shard objects stored, fill rows, retries over a stale attempt, and
errors from the writer's thread."""

from __future__ import annotations

import os
import pathlib
import threading

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from pipeline.store.location import StoreLocation
from pipeline.store.shards import RegionWriter, write_shards, write_unit
from tests.s3util import BUCKET, all_objects, resolved_options, s3_endpoint  # noqa: F401 - s3_endpoint is a fixture


def _array(root: pathlib.Path, shape, chunks, shards, dtype="float32", compressors=None):
    g = zarr.open_group(str(root), mode="a")
    return g.create_array(
        "features/x", shape=shape, dtype=dtype, chunks=chunks, shards=shards, fill_value=0.0,
        compressors=compressors or BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
    )


def _shard_files(root: pathlib.Path) -> list[str]:
    """The chunk/shard objects of features/x (metadata left out), relative to the store."""
    out = []
    for dirpath, _, names in os.walk(root / "features" / "x"):
        out += [str((pathlib.Path(dirpath) / n).relative_to(root)) for n in names if n != "zarr.json"]
    return sorted(out)


def _parts(block: np.ndarray, seed: int = 1) -> list[np.ndarray]:
    """The rows as uneven parts (clips), as a partition has them."""
    cuts = sorted({0, block.shape[0], *np.random.default_rng(seed).integers(0, block.shape[0], size=7).tolist()})
    return [block[a:b] for a, b in zip(cuts, cuts[1:])]


def _write(how: str, arr, start: int, parts: list[np.ndarray], end: int | None = None) -> None:
    if how == "write_shards":
        write_shards(arr, start, parts, end=end)
        return
    w = RegionWriter(arr, start, end=end, background=True)  # as a partition: rows while it computes
    for p in parts:
        w.append(p)
    w.close()


CASES = [
    # shape, chunks, shards, dtype, start, rows, expected shard objects
    ((8192, 80), (1024, 80), (4096, 80), "float32", 4096, 3000, ["c/1/0"]),  # one shard, data ends mid-chunk
    ((8192, 80), (1024, 80), (4096, 80), "float32", 0, 8192, ["c/0/0", "c/1/0"]),  # two full shards
    ((8192, 80), (1024, 80), (4096, 80), "float16", 0, 5000, ["c/0/0", "c/1/0"]),  # the second shard partly filled
    ((12288, 13), (2048, 13), (4096, 13), "float32", 4096, 100, ["c/1/0"]),  # one partial chunk, rest fill
    ((64, 100, 80), (8, 100, 80), (32, 100, 80), "float32", 32, 20, ["c/1/0/0"]),  # dense (row, frame, bin)
]


@pytest.mark.parametrize("how", ["write_shards", "background"])
@pytest.mark.parametrize("shape, chunks, shards, dtype, start, rows, objects", CASES)
def test_values_read_back_and_only_the_regions_shards_are_stored(tmp_path, shape, chunks, shards, dtype, start, rows, objects, how):
    rng = np.random.default_rng(rows)
    block = (rng.standard_normal((rows, *shape[1:])) * 20 - 40).astype(dtype)
    a = _array(tmp_path, shape, chunks, shards, dtype)
    # float16 stores receive float32 features, as from FeatureSet.compute, and cast them
    src = block.astype(np.float32) if dtype == "float16" else block
    _write(how, a, start, _parts(src))
    assert _shard_files(tmp_path) == [f"features/x/{o}" for o in objects]
    back = zarr.open_array(str(tmp_path / "features" / "x"), mode="r")
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back[start : start + rows], block)
    assert not back[:start].any() and not back[start + rows :].any()  # the rows around are the fill value


@pytest.mark.parametrize("how", ["write_shards", "background"])
def test_the_stored_shards_are_the_bytes_of_zarrs_own_write(tmp_path, how):
    block = (np.random.default_rng(7).standard_normal((5000, 80)) * 20).astype(np.float32)
    block[:1024] = 0  # an inner chunk of fill values: not stored inside the shard
    ours = _array(tmp_path / "ours", (8192, 80), (1024, 80), (4096, 80))
    theirs = _array(tmp_path / "theirs", (8192, 80), (1024, 80), (4096, 80))
    theirs[:5000] = block
    _write(how, ours, 0, _parts(block))
    assert _shard_files(tmp_path / "ours") == _shard_files(tmp_path / "theirs") == ["features/x/c/0/0", "features/x/c/1/0"]
    for key in ("c/0/0", "c/1/0"):
        assert (tmp_path / "ours" / "features/x" / key).read_bytes() == (tmp_path / "theirs" / "features/x" / key).read_bytes()


@pytest.mark.parametrize("how", ["write_shards", "background"])
def test_a_retry_replaces_every_shard_of_a_stale_attempt(tmp_path, how):
    a = _array(tmp_path, (16384, 8), (1024, 8), (4096, 8))
    # the first attempt wrote three shards of its region [4096, 16384)
    _write(how, a, 4096, [np.full((12000, 8), 7, np.float32)], end=16384)
    assert _shard_files(tmp_path) == ["features/x/c/1/0", "features/x/c/2/0", "features/x/c/3/0"]
    # the retry computes fewer rows (a file rejected this time): its data ends in shard 1,
    # shards 2 and 3 are cleared
    new = np.arange(3000 * 8, dtype=np.float32).reshape(3000, 8) + 1
    _write(how, a, 4096, _parts(new), end=16384)
    assert _shard_files(tmp_path) == ["features/x/c/1/0"]
    back = zarr.open_array(str(tmp_path / "features" / "x"), mode="r")[:]
    np.testing.assert_array_equal(back[4096:7096], new)
    assert not back[:4096].any() and not back[7096:].any()


@pytest.mark.parametrize("how", ["write_shards", "background"])
def test_a_shard_of_only_fill_values_is_not_stored_and_a_stale_one_is_removed(tmp_path, how):
    a = _array(tmp_path, (8192, 8), (1024, 8), (4096, 8))
    _write(how, a, 4096, [np.ones((4096, 8), np.float32)])
    assert _shard_files(tmp_path) == ["features/x/c/1/0"]
    _write(how, a, 4096, [np.zeros((4096, 8), np.float32)])  # a retry that computed nothing but fill
    assert _shard_files(tmp_path) == []
    _write(how, a, 4096, [np.ones((100, 8), np.float32)])
    _write(how, a, 4096, [], end=8192)  # a retry whose files were all rejected: no rows at all
    assert _shard_files(tmp_path) == []
    assert not zarr.open_array(str(tmp_path / "features" / "x"), mode="r")[:].any()


@pytest.mark.parametrize("fill", [-100.0, float("nan")])
def test_a_nonzero_fill_value_pads_the_last_shard_and_clears_the_rest(tmp_path, fill):
    g = zarr.open_group(str(tmp_path), mode="a")
    a = g.create_array("features/x", shape=(12288, 4), chunks=(1024, 4), shards=(4096, 4), dtype="float32", fill_value=fill)
    a[8192:12288] = 1.0  # a stale shard after the data
    block = np.arange(5000 * 4, dtype=np.float32).reshape(5000, 4)
    write_shards(a, 0, _parts(block), end=12288)
    assert _shard_files(tmp_path) == ["features/x/c/0/0", "features/x/c/1/0"]
    back = zarr.open_array(str(tmp_path / "features" / "x"))[:]
    np.testing.assert_array_equal(back[:5000], block)
    np.testing.assert_array_equal(back[5000:], np.full((12288 - 5000, 4), fill, np.float32))  # NaN equals NaN here


def test_other_codecs_unsharded_arrays_and_unaligned_regions(tmp_path):
    block = np.arange(3000 * 4, dtype=np.float32).reshape(3000, 4) + 1
    z = _array(tmp_path / "zstd", (8192, 4), (1024, 4), (4096, 4), compressors=ZstdCodec(level=3))
    write_shards(z, 0, [block[:1000], block[1000:]])
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "zstd" / "features" / "x"))[:3000], block)
    assert _shard_files(tmp_path / "zstd") == ["features/x/c/0/0"]

    plain = zarr.open_group(str(tmp_path / "plain"), mode="a").create_array("features/x", shape=(8192, 4), chunks=(1024, 4), dtype="float32", fill_value=0.0)
    assert write_unit(plain) == 1024
    write_shards(plain, 1024, [block])
    assert _shard_files(tmp_path / "plain") == ["features/x/c/1/0", "features/x/c/2/0", "features/x/c/3/0"]
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "plain" / "features" / "x"))[1024:4024], block)

    # a region that does not start on a shard boundary: zarr merges its first shard
    u = _array(tmp_path / "unaligned", (8192, 4), (1024, 4), (4096, 4))
    u[:1024] = 5
    write_shards(u, 1024, [block])
    back = zarr.open_array(str(tmp_path / "unaligned" / "features" / "x"))[:]
    np.testing.assert_array_equal(back[1024:4024], block)
    assert (back[:1024] == 5).all() and not back[4024:].any()


def test_rows_of_another_shape_or_past_the_region_are_refused(tmp_path):
    a = _array(tmp_path, (8192, 8), (1024, 8), (4096, 8))
    w = RegionWriter(a, 0, end=4096, background=False)
    with pytest.raises(ValueError, match="rows of shape"):
        w.append(np.ones((10, 9), np.float32))
    w.append(np.ones((4096, 8), np.float32))
    with pytest.raises(ValueError, match="past the end of the region"):
        w.append(np.ones((1, 8), np.float32))
    w.abort()


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("audioprep-writer")]


def test_a_write_error_on_the_writers_thread_reaches_the_caller_and_no_thread_outlives_it(tmp_path):
    a = _array(tmp_path, (8192, 8), (1024, 8), (4096, 8))
    (tmp_path / "features" / "x" / "c").write_text("a file where the shard folder goes")
    w = RegionWriter(a, 0)
    with pytest.raises(OSError):  # raised on the writer's thread by zarr's store, by append or close
        for _ in range(16):  # two shards: the first write fails while rows still arrive
            w.append(np.ones((512, 8), np.float32))
        w.close()
    w.abort()  # what a failed partition does with every writer; never raises
    assert not _writer_threads()


def test_a_write_error_is_raised_by_close_when_it_is_the_last_shard(tmp_path):
    a = _array(tmp_path, (8192, 8), (1024, 8), (4096, 8))
    (tmp_path / "features" / "x" / "c").write_text("not a folder")
    w = RegionWriter(a, 0)
    w.append(np.ones((100, 8), np.float32))  # no shard full yet: nothing written
    with pytest.raises(OSError):
        w.close()
    assert not _writer_threads()


def test_abort_stops_without_writing_the_last_shard(tmp_path):
    a = _array(tmp_path, (8192, 8), (1024, 8), (4096, 8))
    w = RegionWriter(a, 0, end=8192)
    w.append(np.ones((4096 + 100, 8), np.float32))  # one whole shard, and 100 rows of the next
    w.abort()
    assert _shard_files(tmp_path) == ["features/x/c/0/0"]  # the finished shard only
    assert not _writer_threads()
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "features" / "x"))[:4096], np.ones((4096, 8), np.float32))


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


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names the synced files by their descriptors")
def test_every_stored_shard_of_a_local_store_is_synced_before_close_returns(tmp_path, monkeypatch):
    import pipeline.store.shards as shards

    synced = []
    monkeypatch.setattr(shards, "_sync_and_drop", lambda fd: synced.append(os.path.relpath(os.readlink(f"/proc/self/fd/{fd}"), tmp_path)))
    a = _array(tmp_path, (16384, 8), (1024, 8), (4096, 8))
    w = RegionWriter(a, 4096, end=16384)
    w.append(np.ones((5000, 8), np.float32))
    w.close()
    assert sorted(synced) == _shard_files(tmp_path) == ["features/x/c/1/0", "features/x/c/2/0"]  # shard 3: fill only


# --- the same on S3 (moto's server on loopback) -------------------------------------------------


def test_shards_on_s3_values_objects_and_a_retry_over_a_stale_attempt(s3_endpoint):
    loc = StoreLocation(f"s3://{BUCKET}/shards.zarr", resolved_options(s3_endpoint))
    g = zarr.open_group(loc.zarr_store(), mode="a")
    a = g.create_array("features/x", shape=(16384, 8), chunks=(1024, 8), shards=(4096, 8), dtype="float32", fill_value=0.0,
                       compressors=BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"))

    def shard_keys() -> list[str]:
        return sorted(k for k in all_objects(s3_endpoint, BUCKET, "shards.zarr/features/x/") if not k.endswith("zarr.json"))

    first = np.full((9000, 8), 3, np.float32)
    w = RegionWriter(a, 4096, end=16384)
    for p in _parts(first):
        w.append(p)
    w.close()
    assert shard_keys() == ["shards.zarr/features/x/c/1/0", "shards.zarr/features/x/c/2/0", "shards.zarr/features/x/c/3/0"]
    retry = np.arange(5000 * 8, dtype=np.float32).reshape(5000, 8) + 1
    w = RegionWriter(a, 4096, end=16384)
    for p in _parts(retry, seed=2):
        w.append(p)
    w.close()
    assert shard_keys() == ["shards.zarr/features/x/c/1/0", "shards.zarr/features/x/c/2/0"]
    back = zarr.open_array(loc.zarr_store(read_only=True), path="features/x", mode="r")[:]
    np.testing.assert_array_equal(back[4096:9096], retry)
    assert not back[:4096].any() and not back[9096:].any()
