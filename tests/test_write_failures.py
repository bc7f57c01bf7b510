"""A failing write inside a partition: reported, nothing half-committed, readers unaffected,
and the retry completes the same store."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

from pipeline import open_dataset
from pipeline.config.catalog import load_catalog
from pipeline.errors import AudioprepError
from pipeline.io.discovery import probe_headers
from pipeline.run import steps
from pipeline.run.commit import commit_run, prepare_store
from pipeline.run.partition import manifest_path, process_partition
from pipeline.run.planner import build_plan
from pipeline.store.location import StoreLocation
from pipeline.store.lock import acquire_lock
from tests.conftest import base_catalog, write_catalog


def test_failed_partition_write_commits_nothing_and_retry_completes(tiny_corpus, tmp_path):
    src = tmp_path / "audio"
    shutil.copytree(tiny_corpus, src)
    store = tmp_path / "s.zarr"
    loaded = load_catalog(write_catalog(tmp_path / "c.yaml", base_catalog(src, store)))
    steps.run_catalog(loaded)  # version 1
    # new files arrive; their partition will fail to write
    for f in sorted(src.rglob("*.flac"))[:3]:
        shutil.copy(f, f.with_name("spk01_new_" + f.name))
    loc = StoreLocation(str(store))
    refs, banks = steps.discover(loaded)
    heads = {h.example_id: h for h in probe_headers(refs, {})}
    plan = build_plan(loaded, refs, heads, banks, location=loc, run_id="r2")
    assert len(plan.partitions) == 1
    acquire_lock(loc, "r2")  # as a run holds it: prepare and commit check it (fencing)
    prepare_store(plan)
    # a real failing write: the shard's folder is taken by a plain file, so zarr cannot write
    shard_dir = store / "features" / "log_mel" / "c"
    start_shard = plan.partitions[0].start // plan.layout.shard
    blocker = shard_dir / str(start_shard)
    blocker.parent.mkdir(parents=True, exist_ok=True)
    if blocker.exists():
        shutil.rmtree(blocker)
    blocker.write_text("not a directory")
    with pytest.raises(OSError):
        process_partition(plan.partitions[0], plan.ctx)
    assert not [t for t in threading.enumerate() if t.name.startswith("audioprep-writer")]  # none left behind
    assert loc.read_json(manifest_path(plan.partitions[0].partition_id)) is None
    with pytest.raises(AudioprepError, match="did not finish"):
        commit_run(plan)
    ds = open_dataset(str(store))  # readers still see version 1 only
    assert ds.meta["current_version"] == 1 and len(ds) == 32
    # the disk is fixed; the retried partition and the commit complete
    blocker.unlink()
    process_partition(plan.partitions[0], plan.ctx)
    summary = commit_run(plan)
    assert summary["version"] == 2 and summary["new_examples"] == 3
    ds2 = open_dataset(str(store))
    assert len(ds2) == 35
    new = [i for i in range(len(ds2)) if "_new_" in ds2.table["path"][i]]
    assert len(new) == 3
    for i in new:
        assert np.isfinite(ds2[i]["features"]["log_mel"]).all() and ds2[i]["features"]["log_mel"].shape[0] > 10
