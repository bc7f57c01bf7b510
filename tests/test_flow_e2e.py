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

    started = datetime.datetime.now(datetime.timezone.utc)
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

    async def names():
        async with get_client() as client:
            runs = await client.read_task_runs(
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="partition-"), start_time=TaskRunFilterStartTime(after_=started)),
                limit=200,
                sort=TaskRunSort.NAME_ASC,
            )
            return [(r.name, r.state_type.value) for r in runs]

    async def artifacts():
        async with get_client() as client:
            r = await client._client.post("/artifacts/filter", json={"sort": "CREATED_DESC", "limit": 50, "offset": 0})
            return {a["key"]: a for a in r.json()}

    arts = asyncio.run(artifacts())
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

    # same catalog, one worker, headers probed on Dask in 4 batches instead of in the flow's
    # process (32 local files): identical store content
    store1 = tmp_path / "w1.zarr"
    c1 = {**c, "execution": {**c["execution"], "probe_in_flow_files": 0, "probe_batch_files": 10}}
    started1 = datetime.datetime.now(datetime.timezone.utc)
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


def test_local_runtime_warms_workers_and_runs_the_flow_on_them(api, tiny_corpus, tmp_path):
    """`audioprep run`'s runtime: the embedded cluster's workers are warm before the first task
    (the FFT, zarr, a cached FeatureSet), the flow runs on that cluster, and the
    cluster is gone afterwards."""
    from distributed import Client

    from flows.prepare import prepare
    from flows.runtime import local_runtime

    def warm_state():
        import sys

        from pipeline.features import build_feature_set

        return sorted(m for m in ("scipy.fft", "zarr", "soxr", "soundfile") if m in sys.modules), build_feature_set.cache_info().currsize

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    store = tmp_path / "rt.zarr"
    cat = write_catalog(tmp_path / "c.yaml", base_catalog(tiny_corpus, store))
    # heartbeats on, as with a user's server: the runtime takes them over from Prefect
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 60}), local_runtime(2, None) as rt:
        assert rt["api_url"] == api and rt["dashboard"].startswith("http://")
        with Client(rt["scheduler"]) as client:
            client.wait_for_workers(2, timeout=60)  # the runtime yields before its workers are up
            states = client.run(warm_state)
            assert len(states) == 2
            assert all(mods == ["scipy.fft", "soundfile", "soxr", "zarr"] and cached >= 1 for mods, cached in states.values()), states

            def origin():
                import os

                import psutil
                from prefect.settings import get_current_settings

                import dask

                # forked from the warm fork server, yet with this run's API (read after the fork);
                # Dask's statistical profiler off
                return (" ".join(psutil.Process().parent().cmdline()), os.environ.get("PREFECT_API_URL"), get_current_settings().api.url,
                        dask.config.get("distributed.worker.profile.enabled"))

            for parent, env_url, settings_url, profiling in client.run(origin).values():
                assert "multiprocessing.forkserver" in parent and env_url == settings_url == api, (parent, env_url, settings_url)
                assert profiling is False

            def calls():
                from pipeline.features import build_feature_set

                info = build_feature_set.cache_info()
                return info.hits + info.misses

            before = sum(client.run(calls).values())
            state = prepare(str(cat), scheduler=rt["scheduler"], report=False, return_state=True)
            summary = state.result()
            assert summary["examples"] == 32
            # the partitions ran on this cluster's workers: each partition made one FeatureSet call
            assert sum(client.run(calls).values()) == before + summary["partitions"]
    with pytest.raises(OSError):
        with Client(rt["scheduler"], timeout=2):
            pass
    # one heartbeat event for the flow run: audioprep's (flows.heartbeat), not also Prefect's
    beats = _heartbeats(state.state_details.flow_run_id)
    assert len(beats) == 1, beats
    # the event Prefect's thread would send: this flow run, related to its flow (Prefect's
    # events worker may add the run context it was started in)
    assert {"prefect.resource.role": "flow", "prefect.resource.name": "prepare"}.items() <= next(
        r for r in beats[0]["related"] if r["prefect.resource.role"] == "flow").items(), json.dumps(beats)


def _heartbeats(flow_run_id, settle_seconds: float = 2.0) -> list[dict]:
    import time

    from prefect.client.orchestration import get_client
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=10)

    async def read():
        async with get_client() as client:
            r = await client._client.post("/events/filter", json={
                "filter": {"event": {"name": ["prefect.flow-run.heartbeat"]}, "resource": {"id": [f"prefect.flow-run.{flow_run_id}"]}},
                "limit": 50})
            r.raise_for_status()
            return r.json()["events"]

    deadline = time.monotonic() + 30  # the API persists events in batches
    while not (found := asyncio.run(read())) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(settle_seconds)  # a second heartbeat sent at the same time would be stored by now
    return asyncio.run(read())


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

        def submit(i):
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


_CLIENTS_SEEN: list = []  # filled in the worker process (kept alive there: ids stay unique)


def test_task_runs_on_a_worker_thread_share_one_api_client(api):
    """Sync task runs submitted by KeyedDaskTaskRunner reuse their worker thread's Prefect
    client (Prefect's own path builds two per task run, each with a new SSL context); results
    and states are as before."""
    from prefect import flow, task
    from prefect.client.orchestration import get_client

    from flows.dask_runner import KeyedDaskTaskRunner

    @task
    def note_client(i: int) -> tuple[int, int]:
        import importlib

        client = get_client(sync_client=True)
        importlib.import_module("tests.test_flow_e2e")._CLIENTS_SEEN.append(client)
        return i * 10, id(client)

    runner = KeyedDaskTaskRunner(cluster_kwargs={"n_workers": 1, "threads_per_worker": 1, "processes": True, "dashboard_address": ":0"})

    @flow(task_runner=runner)
    def run() -> list[tuple[int, int]]:
        futures = [note_client.submit(i) for i in range(4)]
        return [f.result() for f in futures]

    out = run()
    assert [r for r, _ in out] == [0, 10, 20, 30]
    assert len({cid for _, cid in out}) == 1  # one client for the worker thread's four task runs
