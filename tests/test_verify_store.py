"""Damaged stores: checksums, missing shards, errors that name what is damaged, `verify`,
guarded deletion (`run --overwrite`), lock breaking and unknown versions. Stores are real,
written by the pipeline in one process; damage is done to their files on disk."""

from __future__ import annotations

import json
import os
import shutil
import socket

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from pipeline import open_dataset
from pipeline.config.catalog import load_catalog
from pipeline.errors import StoreError, StoreLockedError
from pipeline.report.export import table_columns
from pipeline.report.inspect import describe
from pipeline.run import steps
from pipeline.store.layout import Layout
from pipeline.store.location import StoreLocation
from pipeline.store.verify import delete_store, shard_key, unlock_store, verify_store
from tests.conftest import base_catalog, write_catalog


@pytest.fixture(scope="module")
def built(tiny_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("built")
    cat = write_catalog(root / "c.yaml", base_catalog(tiny_corpus, root / "s.zarr"))
    steps.run_catalog(load_catalog(str(cat)))
    return root / "s.zarr"


@pytest.fixture
def store(built, tmp_path):
    dst = tmp_path / "s.zarr"
    shutil.copytree(built, dst)
    return dst


def _rows_in_shard(store, name, s):
    """Example ids whose rows lie in shard ``s`` of ``features/name`` (from the table)."""
    ds = open_dataset(str(store))
    arr = zarr.open_group(str(store), mode="r")[f"features/{name}"]
    n = arr.shards[0]
    off, ln = ds.table["offset"].astype(int), ds.table["length"].astype(int)
    hit = (off < (s + 1) * n) & (off + ln > s * n) & (ln > 0)
    return sorted(str(i) for i in ds.table["id"][hit]), [int(i) for i in np.flatnonzero(hit)]


def test_new_feature_arrays_checksum_every_inner_chunk(store):
    arr = zarr.open_group(str(store), mode="r")["features/log_mel"]
    assert isinstance(arr.compressors[0], BloscCodec) and isinstance(arr.compressors[-1], Crc32cCodec)
    meta = json.loads((store / "features/log_mel/zarr.json").read_text())
    inner = [c["name"] for c in meta["codecs"][0]["configuration"]["codecs"]]
    assert inner == ["bytes", "blosc", "crc32c"]


def test_the_layout_and_so_the_fingerprint_of_existing_stores_is_unchanged(store):
    meta = zarr.open_group(str(store), mode="r").attrs["audioprep"]
    layout = Layout.from_dict(meta["layout"])
    assert layout.to_dict() == meta["layout"]
    assert sorted(layout.to_dict()) == ["chunk", "feature_shapes", "frames_per_row", "mode", "shard"]


def test_a_flipped_bit_is_an_error_naming_store_array_shard_and_example(store):
    ids, pos = _rows_in_shard(store, "log_mel", 1)
    assert ids
    f = store / "features/log_mel" / "c/1/0"
    b = bytearray(f.read_bytes())
    b[len(b) // 3] ^= 1
    f.write_bytes(bytes(b))
    ds = open_dataset(str(store))
    with pytest.raises(StoreError) as e:
        ds[pos[0]]
    msg = str(e.value)
    assert str(store) in msg and "features/log_mel" in msg and "features/log_mel/c/1/0" in msg
    assert str(ds.table["id"][pos[0]]) in msg and "checksum" in msg
    with pytest.raises(StoreError, match="features/log_mel/c/1/0"):
        list(ds.iter_batches(4, shuffle=False))


def test_a_missing_shard_is_an_error_not_zeros(store):
    ids, pos = _rows_in_shard(store, "mfcc", 1)
    os.remove(store / "features/mfcc/c/1/0")
    ds = open_dataset(str(store))
    for p in pos:
        with pytest.raises(StoreError) as e:
            ds[p]
        assert "features/mfcc/c/1/0" in str(e.value) and str(ds.table["id"][p]) in str(e.value) and "missing" in str(e.value)
    # rows in other shards still read
    others = [i for i in range(len(ds)) if i not in pos]
    assert others and ds[others[0]]["features"]["mfcc"].shape[1] == 13


def test_verify_lists_every_damaged_shard_with_its_examples(store):
    loc = StoreLocation(str(store))
    clean = verify_store(loc)
    assert clean.ok and clean.shards_read == 8 and clean.tables_read > 0
    ids_a, _ = _rows_in_shard(store, "log_mel", 0)
    ids_b, _ = _rows_in_shard(store, "mfcc", 2)
    os.remove(store / "features/log_mel/c/0/0")
    (store / "features/mfcc/c/2/0").write_bytes(b"x" * 100)
    r = verify_store(loc)
    assert not r.ok and r.shards_read == 8
    got = {(d.array, d.shard): (sorted(d.example_ids), d.error) for d in r.damage}
    assert set(got) == {("features/log_mel", "features/log_mel/c/0/0"), ("features/mfcc", "features/mfcc/c/2/0")}
    assert got[("features/log_mel", "features/log_mel/c/0/0")][0] == ids_a
    assert "missing" in got[("features/log_mel", "features/log_mel/c/0/0")][1]
    assert got[("features/mfcc", "features/mfcc/c/2/0")][0] == ids_b
    assert "checksum" in got[("features/mfcc", "features/mfcc/c/2/0")][1]


def test_verify_reads_the_tables(store):
    col = store / "tables/v00001/examples/offset/c/0"
    col.write_bytes(b"garbage")
    r = verify_store(StoreLocation(str(store)))
    assert not r.ok and any(d.array == "tables/v00001/examples" for d in r.damage)


def _drop_checksums(store, name):
    """Rewrite ``features/name`` as stores were written before checksums (blosc only)."""
    g = zarr.open_group(str(store), mode="a")
    old = g[f"features/{name}"]
    data, attrs, dims = old[:], dict(old.attrs), old.metadata.dimension_names
    shutil.rmtree(store / "features" / name)
    g = zarr.open_group(str(store), mode="a")
    new = g["features"].create_array(
        name, shape=data.shape, chunks=old.chunks, shards=old.shards, dtype=data.dtype, fill_value=0.0,
        compressors=BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"), dimension_names=dims, attributes=attrs,
    )
    new[:] = data
    return data


def test_a_store_without_checksums_still_reads_and_its_damage_is_named(store):
    data = _drop_checksums(store, "log_mel")
    meta = json.loads((store / "features/log_mel/zarr.json").read_text())
    assert [c["name"] for c in meta["codecs"][0]["configuration"]["codecs"]] == ["bytes", "blosc"]
    ds = open_dataset(str(store))
    o, n = int(ds.table["offset"][3]), int(ds.table["length"][3])
    np.testing.assert_array_equal(ds[3]["features"]["log_mel"], data[o : o + n])
    assert verify_store(StoreLocation(str(store))).ok
    _, pos = _rows_in_shard(store, "log_mel", 2)
    (store / "features/log_mel/c/2/0").write_bytes(b"\0" * 64 + b"y" * 4000)
    with pytest.raises(StoreError) as e:
        open_dataset(str(store))[pos[0]]
    assert "features/log_mel/c/2/0" in str(e.value) and str(ds.table["id"][pos[0]]) in str(e.value)


def test_shard_key_is_the_object_name(store):
    arr = zarr.open_group(str(store), mode="r")["features/log_mel"]
    assert [shard_key(arr, i) for i in range(4)] == [f"c/{i}/0" for i in range(4)]
    assert sorted(p.relative_to(store / "features/log_mel").as_posix() for p in (store / "features/log_mel/c").rglob("*") if p.is_file()) == [
        f"c/{i}/0" for i in range(4)
    ]


def test_unknown_version_lists_the_versions(store):
    for call in (lambda: describe(str(store), version=9), lambda: table_columns(str(store), "examples", version=9),
                 lambda: open_dataset(str(store), version=9)):
        with pytest.raises(StoreError, match=r"has no version 9; its versions: 1$"):
            call()


# --- delete (run --overwrite) ---------------------------------------------------------------


def test_delete_store_deletes_what_the_layout_names_and_the_report(store):
    report = store.parent / "s.zarr.report" / "v00001"
    report.mkdir(parents=True)
    (report / "index.html").write_text("x")
    deleted = delete_store(StoreLocation(str(store)))
    assert set(deleted) >= {"zarr.json", "features", "tables", "_partitions", "s.zarr.report"}
    assert not store.exists() and not report.parent.exists()


def test_delete_store_accepts_nothing_and_an_empty_folder(tmp_path):
    assert delete_store(StoreLocation(str(tmp_path / "absent"))) == []
    (tmp_path / "empty").mkdir()
    assert delete_store(StoreLocation(str(tmp_path / "empty"))) == []


def test_delete_store_refuses_a_folder_that_is_not_a_store(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(StoreError, match=r"not an audioprep store .*thesis\.tex"):
        delete_store(StoreLocation(str(home)))
    assert (home / "thesis.tex").read_text() == "years of work"
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["x"] = 1
    with pytest.raises(StoreError, match="not an audioprep store"):
        delete_store(StoreLocation(str(tmp_path / "other.zarr")))
    assert (tmp_path / "other.zarr" / "zarr.json").exists()


def test_delete_store_refuses_unknown_files_listing_them(store):
    (store / "notes.txt").write_text("mine")
    (store / "features" / "extra").mkdir()
    with pytest.raises(StoreError) as e:
        delete_store(StoreLocation(str(store)))
    assert "notes.txt" in str(e.value) and "features/extra" in str(e.value)
    assert (store / "zarr.json").exists() and (store / "features/log_mel/zarr.json").exists()


def test_delete_store_takes_the_lock(store):
    lock = {"host": "another-host", "pid": 1, "run_id": "r-live", "since": "2026-01-01T00:00:00+00:00"}
    (store / "_lock.json").write_text(json.dumps(lock))
    with pytest.raises(StoreLockedError, match="r-live"):
        delete_store(StoreLocation(str(store)))
    assert (store / "zarr.json").exists() and json.loads((store / "_lock.json").read_text()) == lock


# --- unlock ---------------------------------------------------------------------------------


def test_unlock_refuses_a_live_lock_without_force(store):
    loc = StoreLocation(str(store))
    for lock in ({"host": socket.gethostname(), "pid": os.getpid(), "run_id": "here"},
                 {"host": "another-host", "pid": 1, "run_id": "there"}):
        (store / "_lock.json").write_text(json.dumps(lock))
        with pytest.raises(StoreError, match=f"locked by run {lock['run_id']}.*--force"):
            unlock_store(loc)
        assert (store / "_lock.json").exists()
        assert unlock_store(loc, force=True) == lock
        assert not (store / "_lock.json").exists()


def test_unlock_removes_a_dead_local_lock(store):
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    lock = {"host": socket.gethostname(), "pid": p.pid, "run_id": "dead"}
    (store / "_lock.json").write_text(json.dumps(lock))
    assert unlock_store(StoreLocation(str(store))) == lock
    assert not (store / "_lock.json").exists()
    assert unlock_store(StoreLocation(str(store))) is None


def test_a_damaged_table_column_is_a_store_error_naming_it(store):
    (store / "tables/v00001/examples/offset/c/0").write_bytes(b"garbage")
    with pytest.raises(StoreError, match=r"table tables/v00001/examples, column offset: "):
        open_dataset(str(store))
    with pytest.raises(StoreError, match=r"table tables/v00001/examples, column offset: "):
        describe(str(store))


def test_dense_stores_name_their_shards_too(tiny_corpus, tmp_path):
    store = tmp_path / "d.zarr"
    cat = base_catalog(tiny_corpus, store, audio={"sample_rate": 16000, "clip": {"mode": "fixed", "seconds": 1.0, "crop": "center"}})
    steps.run_catalog(load_catalog(str(write_catalog(tmp_path / "c.yaml", cat))))
    arr = zarr.open_group(str(store), mode="r")["features/log_mel"]
    assert shard_key(arr, 0) == "c/0/0/0" and (store / "features/log_mel/c/0/0/0").exists()
    assert verify_store(StoreLocation(str(store))).ok
    ds = open_dataset(str(store))
    in_first = sorted(str(i) for i, o in zip(ds.table["id"], ds.table["offset"]) if int(o) < arr.shards[0])
    os.remove(store / "features/log_mel/c/0/0/0")
    r = verify_store(StoreLocation(str(store)))
    assert [(d.shard, sorted(d.example_ids)) for d in r.damage] == [("features/log_mel/c/0/0/0", in_first)]
    p = int(np.flatnonzero(ds.table["id"] == in_first[0])[0])
    with pytest.raises(StoreError, match=rf"features/log_mel/c/0/0/0 .*{in_first[0]}"):
        ds[p]


def test_crc32c_runs_compiled_code():
    """The reader checks every chunk's CRC-32C and the quality metrics hash the PCM with it:
    google-crc32c's pure-Python fallback is ~1000x slower. 1.5.0's C extension needs
    setuptools' pkg_resources, which current setuptools no longer ship, hence >=1.6."""
    import google_crc32c

    assert google_crc32c.implementation == "c"
    assert google_crc32c.value(b"123456789") == 0xE3069283  # the CRC-32C check value
