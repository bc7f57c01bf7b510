"""The real thing: the `prepare` Prefect flow, a real local Prefect API, and a real Dask
LocalCluster of worker processes, on a tiny generated corpus."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
import zarr

from pipeline import open_dataset
from tests.conftest import base_catalog, write_catalog
from tests.test_pipeline_local import librosa_log_mel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect")))
    from flows.server import prefect_api

    with prefect_api() as url:
        yield url


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def eventually(read, done, timeout: float = 15.0):
    """``read()`` until ``done(result)`` or ``timeout`` seconds; the last result. Task runs reach
    the API through events, and the local API records them in batches (at least once a
    second: flows.server.TASK_RUN_RECORDER_BATCHING)."""
    deadline = time.monotonic() + timeout
    while True:
        result = read()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.25)


def _all_arrays(store):
    g = zarr.open_group(str(store), mode="r")
    out = {}
    for name in g["features"].array_keys():
        out[f"features/{name}"] = g[f"features/{name}"][:]
    v = g.attrs["audioprep"]["current_version"]
    t = g[f"tables/v{v:05d}/examples"]
    for name in t.array_keys():
        out[f"examples/{name}"] = t[name][:]
    return out


def test_flow_on_local_cluster_writes_the_store_and_reports_to_one_api(api, tiny_corpus, tmp_path, monkeypatch, capfd):
    from flows.prepare import prepare

    store2 = tmp_path / "w2.zarr"
    secret = "SECRET-e2e-zz9-do-not-leak"
    monkeypatch.setenv("AP_TEST_TOKEN", secret)
    c = base_catalog(tiny_corpus, store2)
    c["sources"][0]["storage_options"] = {"token": "${AP_TEST_TOKEN}"}
    cat = write_catalog(tmp_path / "c.yaml", c)
    import datetime

    started = datetime.datetime.now(datetime.UTC)
    summary = prepare(str(cat), workers=2)
    assert secret not in json.dumps(summary, default=str)
    assert summary["examples"] == 32 and summary["partitions"] >= 2
    ds = open_dataset(str(store2))
    item = ds[5]
    ref = librosa_log_mel(str(tiny_corpus / item["metadata"]["path"]))
    np.testing.assert_allclose(item["features"]["log_mel"], ref.T, rtol=1e-4, atol=1e-3)
    groups = {}
    for g, s in zip(ds.table["group"], ds.table["split"]):
        groups.setdefault(g, set()).add(s)
    assert all(len(v) == 1 for v in groups.values())

    # the partition task runs executed on the workers are visible in the flow's API
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName, TaskRunFilterStartTime
    from prefect.client.schemas.sorting import TaskRunSort

    async def names(prefix: str = "partition-"):
        async with get_client() as client:
            runs = await client.read_task_runs(
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=prefix), start_time=TaskRunFilterStartTime(after_=started)),
                limit=200,
                sort=TaskRunSort.NAME_ASC,
            )
            return [(r.name, r.state_type.value) for r in runs]

    def artifacts():  # Prefect's documented REST API
        import httpx

        r = httpx.post(f"{api}/artifacts/filter", json={"sort": "CREATED_DESC", "limit": 50, "offset": 0})
        r.raise_for_status()
        return {a["key"]: a for a in r.json()}

    arts = artifacts()
    assert "32" in arts["audioprep-summary"]["data"] and "| train |" in arts["audioprep-summary"]["data"]
    assert f"{store2}.report/v00001" in arts["audioprep-report"]["data"] and ".png)" in arts["audioprep-report"]["data"]
    runs = eventually(lambda: asyncio.run(names()), lambda r: len(r) == summary["partitions"] and {s for _, s in r} == {"COMPLETED"})
    # the secret reached no file of the store or of the Prefect API's database, and no output
    import os

    for root in (store2, os.environ["PREFECT_HOME"]):
        for dirpath, _, files in os.walk(root):
            for f in files:
                with open(os.path.join(dirpath, f), "rb") as fh:
                    assert secret.encode() not in fh.read(), os.path.join(dirpath, f)
    out, err = capfd.readouterr()
    assert secret not in out and secret not in err
    assert len(runs) == summary["partitions"]
    assert {s for _, s in runs} == {"COMPLETED"}
    # the duplicate reduction after the last partition: a bucket per worker thread (2 x 1)
    reductions = eventually(lambda: asyncio.run(names("duplicate-index-")), lambda r: len(r) == 2 and {s for _, s in r} == {"COMPLETED"})
    assert reductions == [("duplicate-index-0", "COMPLETED"), ("duplicate-index-1", "COMPLETED")]

    # same catalog, one worker, headers probed on Dask in 4 batches instead of in the flow's
    # process (32 local files): identical store content
    store1 = tmp_path / "w1.zarr"
    c1 = {**c, "execution": {**c["execution"], "probe_in_flow_files": 0, "probe_batch_files": 10}}
    started1 = datetime.datetime.now(datetime.UTC)
    prepare(str(write_catalog(tmp_path / "c1.yaml", c1)), store=str(store1), workers=1, report=False)

    async def probes(after):
        async with get_client() as client:
            runs = await client.read_task_runs(
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="probe-headers-"), start_time=TaskRunFilterStartTime(after_=after)),
                limit=50,
                sort=TaskRunSort.NAME_ASC,
            )
            return sorted(r.name for r in runs)

    expected = [f"probe-headers-{i}" for i in range(4)]
    assert eventually(lambda: asyncio.run(probes(started1)), lambda r: r == expected) == expected
    # the first run read its 32 local headers in one task run of the flow's process
    assert asyncio.run(probes(started)) == sorted(["probe-headers-0", *expected])
    a, b = _all_arrays(store2), _all_arrays(store1)
    assert a.keys() == b.keys()
    for k in a:
        if k == "examples/partition":
            continue
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    np.testing.assert_array_equal(a["examples/partition"], b["examples/partition"])


def _worker_state(_i: int) -> dict:
    import os
    import sys

    import dask
    from prefect.settings import get_current_settings

    from pipeline.features import build_feature_set

    return {
        "warm": sorted(m for m in ("scipy.fft", "zarr", "soxr", "soundfile") if m in sys.modules),
        "feature_sets": build_feature_set.cache_info().currsize,
        "env_api": os.environ.get("PREFECT_API_URL"),
        "settings_api": str(get_current_settings().api.url),
        "profiling": dask.config.get("distributed.worker.profile.enabled"),
        "malloc": {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")},
        "pid": os.getpid(),
    }


def test_embedded_cluster_workers_are_warm_report_to_the_runs_api_and_go_away(api):
    """The embedded LocalCluster the prepare flow runs on (prefect-dask's DaskTaskRunner): its
    workers preloaded the warm-up, report to this run's API (never a server of their own),
    run without Dask's statistical profiler, start with the allocator environment, serve the
    dashboard on loopback only, and are gone when the flow ends."""
    import dask
    import psutil
    from prefect import flow, task

    from flows.prepare import embedded_cluster_config, task_runner
    from pipeline.run.allocator import worker_malloc_environ

    state_task = task(name="worker-state")(_worker_state)
    seen: dict = {}

    def body():
        from prefect.context import FlowRunContext

        runner = FlowRunContext.get().task_runner
        states = [f.result() for f in [state_task.submit(i) for i in range(6)]]
        seen["dashboard"] = runner.client.dashboard_link
        return states

    with dask.config.set(embedded_cluster_config()):
        states = flow(name="probe-workers", task_runner=task_runner(2, None))(body)()
    assert len({s["pid"] for s in states}) <= 2
    for s in states:
        assert s["warm"] == ["scipy.fft", "soundfile", "soxr", "zarr"] and s["feature_sets"] >= 1, s
        assert s["env_api"] == s["settings_api"] == api, s
        assert s["profiling"] is False
        assert s["malloc"] == worker_malloc_environ()
    assert seen["dashboard"].startswith("http://127.0.0.1:")
    assert not any(psutil.pid_exists(s["pid"]) for s in states)
    # the block restored Dask's own configuration in this process
    assert dask.config.get("distributed.worker.profile.enabled") is True


def test_partition_results_are_taken_while_later_partitions_are_still_submitted(api):
    """submit_taking_results hands a done task's result over before the next submit, not after
    the last one (a 20,000-partition run spends minutes submitting)."""
    from prefect import flow, task

    from flows.prepare import submit_taking_results

    events: list[str] = []

    @task
    def square(i: int) -> int:
        return i * i

    @flow
    def run() -> int:
        first: list = []

        def submit(i, attempt):
            if i == 3:
                first[0].wait()  # item 0 is done before item 3 is submitted
            fut = square.submit(i)
            first.append(fut)
            events.append(f"submit {i}")
            return fut

        return submit_taking_results(submit, range(6), lambda r: events.append(f"result {r}"))

    assert run() == 6
    assert events.index("result 0") < events.index("submit 4")
    assert sorted(e for e in events if e.startswith("result")) == sorted(f"result {i * i}" for i in range(6))
    assert [e for e in events if e.startswith("submit")] == [f"submit {i}" for i in range(6)]


def test_the_dashboard_listens_on_loopback_unless_the_user_opens_it():
    from flows.prepare import local_cluster_kwargs

    assert local_cluster_kwargs(2)["dashboard_address"] == "127.0.0.1:0"
    assert local_cluster_kwargs(2, dashboard_address="0.0.0.0:8787")["dashboard_address"] == "0.0.0.0:8787"
