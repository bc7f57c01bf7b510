"""A file that kills its worker becomes a WorkerCrashed reject, and the run goes on.

Real deaths: the embedded cluster's workers get a small memory limit
(``execution.worker_memory_limit``) and one long file needs more than that to featurize,
so Dask's nanny kills the worker each time it reaches it. Everything else is an ordinary
`audioprep run` from the command line.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from pipeline import open_dataset
from pipeline.store.location import StoreLocation
from pipeline.store.state import read_state
from tests.conftest import base_catalog, write_catalog

pytestmark = pytest.mark.slow
BIN = pathlib.Path(sys.executable).parent


def test_a_file_that_kills_workers_becomes_a_reject_and_the_run_goes_on(tiny_corpus, tmp_path):
    src = tmp_path / "audio"
    shutil.copytree(tiny_corpus, src)
    killer = src / "tone" / "spk01_killer.wav"
    # 30 minutes: its spectrogram needs far more than the workers' limit
    sf.write(killer, np.random.default_rng(0).uniform(-0.3, 0.3, 16_000 * 1800).astype(np.float32), 16_000, subtype="PCM_16")
    store = tmp_path / "s.zarr"
    # a worker starts at about 400 MB with the oldest pins: Dask pauses it at 80% of its limit
    execution = {"partition_seconds": 8, "workers": 1, "worker_memory_limit": "1GiB", "retries": 0}
    cat = base_catalog(src, store, audio={"sample_rate": 16000, "max_seconds": 3600}, execution=execution)
    catalog = write_catalog(tmp_path / "c.yaml", cat)
    # one death per attempt (Dask's default is 4), to keep the test short: a user setting, kept by the run
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    r = subprocess.run([str(BIN / "audioprep"), "run", str(catalog)], env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    state = read_state(StoreLocation(str(store)))
    (reject,) = (x for x in state.rejects if x["path"] == "tone/spk01_killer.wav")
    assert (reject["stage"], reject["error_class"]) == ("crash", "WorkerCrashed")
    assert reject["message"].startswith("tone/spk01_killer.wav: crash: the worker processing this file died (KilledWorker)")
    ds = open_dataset(str(store))
    assert sorted(ds.table["path"]) == sorted(p.relative_to(tiny_corpus).as_posix() for p in tiny_corpus.rglob("*.*"))
    # no trace left behind
    assert not [p for p in (store / "_partitions").iterdir() if p.name.endswith(".trace.json")]


def test_the_crash_policy_blames_a_file_only_when_traced_deaths_repeat_on_it(tmp_path):
    from distributed import KilledWorker

    from pipeline.plan.partition import PartitionSpec
    from pipeline.run.crashes import BLAME_AFTER, MAX_EXCLUDED, MAX_UNNAMED_DEATHS, Attempt, PartitionCrashed, next_attempt
    from pipeline.run.partition import trace_path

    loc = StoreLocation(str(tmp_path / "s.zarr"))
    spec = PartitionSpec(index=7, partition_id="p7", items=(), start=0, capacity=4096, audio_seconds=0.0)
    died = KilledWorker("partition-00007", SimpleNamespace(address="tcp://10.0.0.2:4000"), 0)

    def dies_on(attempt, example_id):
        if example_id:
            loc.write_json(trace_path("p7"), {"example_id": example_id, "path": f"a/{example_id}.wav"})
        out = next_attempt(loc, spec, attempt, died)
        assert loc.read_json(trace_path("p7")) is None  # each attempt's trace starts empty
        return out

    attempt = next_attempt(loc, spec, Attempt(), died)
    assert attempt == Attempt(trace=True)
    # a bystander (queued on the dying worker) names no file: retried, up to a bound
    for k in range(MAX_UNNAMED_DEATHS - 1):
        attempt = dies_on(attempt, None)
        assert attempt.unnamed_deaths == k + 1 and not attempt.excluded
    with pytest.raises(PartitionCrashed, match=f"died {MAX_UNNAMED_DEATHS} times .* before any file's work began"):
        dies_on(attempt, None)
    # one traced death on a file is not enough (another thread's task may have killed it)
    attempt = dies_on(Attempt(trace=True), "innocent")
    assert not attempt.excluded and attempt.suspects == ("innocent",)
    for k in range(MAX_EXCLUDED):
        for _ in range(BLAME_AFTER):
            attempt = dies_on(attempt, f"id{k}")
        assert list(attempt.excluded_map()) == [f"id{i}" for i in range(k + 1)]
        assert attempt.excluded_map()[f"id{k}"].startswith(f"a/id{k}.wav: crash: the worker processing this file died (KilledWorker)")
    with pytest.raises(PartitionCrashed, match=f"workers died on {MAX_EXCLUDED + 1} of its files"):
        for _ in range(BLAME_AFTER):
            attempt = dies_on(attempt, "id9")
