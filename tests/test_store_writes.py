"""Store writes end to end (process_partition through RegionWriter): the same catalog and seed
give the same shard objects whatever the number of workers and their order, and partitions
retried over an earlier attempt's stale shards leave the store a clean run writes."""

from __future__ import annotations

import os
import pathlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import zarr

from pipeline import open_dataset
from pipeline.config.catalog import load_catalog
from pipeline.io.discovery import probe_headers
from pipeline.run import steps
from pipeline.run.commit import commit_run, prepare_store
from pipeline.run.partition import process_partition
from pipeline.run.planner import build_plan
from pipeline.store.location import StoreLocation
from pipeline.store.lock import acquire_lock
from tests.conftest import base_catalog, write_catalog


def _feature_objects(store: pathlib.Path) -> dict[str, bytes]:
    """Every object of the feature arrays (shards and array metadata), path -> bytes."""
    out = {}
    for dirpath, _, names in os.walk(store / "features"):
        for n in names:
            p = pathlib.Path(dirpath) / n
            out[str(p.relative_to(store))] = p.read_bytes()
    return out


def _shards(objects: dict[str, bytes]) -> list[str]:
    return sorted(k for k in objects if "/c/" in k)


def _threads(n: int):
    """``map`` over ``n`` threads, last item first: partitions of one run written concurrently
    and out of order, as by ``n`` workers."""

    def map_fn(fn, items):
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(fn, list(items)[::-1]))

    return map_fn


def test_same_shards_whatever_the_number_of_workers(tiny_corpus, tmp_path):
    stores = {}
    for name, map_fn in (("one", map), ("three", _threads(3))):
        store = tmp_path / f"{name}.zarr"
        loaded = load_catalog(write_catalog(tmp_path / f"{name}.yaml", base_catalog(tiny_corpus, store)))
        summary = steps.run_catalog(loaded, map_fn=map_fn)
        assert summary["partitions"] >= 3
        stores[name] = store
    one, three = _feature_objects(stores["one"]), _feature_objects(stores["three"])
    assert _shards(one) and _shards(one) == _shards(three)
    assert one == three
    a, b = open_dataset(str(stores["one"])), open_dataset(str(stores["three"]))
    assert len(a) == len(b) == 32
    for i in range(len(a)):
        for k in ("log_mel", "mfcc"):
            np.testing.assert_array_equal(a[i]["features"][k], b[i]["features"][k])


def test_partitions_retried_over_stale_shards_write_what_a_clean_run_writes(tiny_corpus, tmp_path):
    clean = tmp_path / "clean.zarr"
    steps.run_catalog(load_catalog(write_catalog(tmp_path / "clean.yaml", base_catalog(tiny_corpus, clean))))

    store = tmp_path / "retried.zarr"
    loaded = load_catalog(write_catalog(tmp_path / "retried.yaml", base_catalog(tiny_corpus, store)))
    loc = StoreLocation(str(store))
    refs, banks = steps.discover(loaded)
    heads = {h.example_id: h for h in probe_headers(refs, {})}
    plan = build_plan(loaded, refs, heads, banks, location=loc, run_id="r1")
    acquire_lock(loc, "r1")  # as a run holds it: prepare and commit check it (fencing)
    prepare_store(plan)
    # an earlier attempt of every partition left other values in every row of its region
    group = zarr.open_group(loc.zarr_store(), mode="r+")
    for spec in plan.partitions:
        for name in plan.layout.feature_shapes:
            arr = group[f"features/{name}"]
            arr[spec.start : spec.start + spec.capacity] = 9.0
    assert len(_shards(_feature_objects(store))) == 2 * sum(p.capacity // plan.layout.shard for p in plan.partitions)
    for spec in plan.partitions:
        process_partition(spec, plan.ctx)
    commit_run(plan)
    assert _feature_objects(store) == _feature_objects(clean)
