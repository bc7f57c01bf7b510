"""Real processes, real failures: an external `dask scheduler` + `dask worker` cluster, a
worker SIGKILLed mid-partition, and a driver killed mid-run then resumed."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from threadpoolctl import threadpool_limits

from flows.server import free_port
from pipeline import open_dataset
from tests.conftest import base_catalog, write_catalog
from tests.conftest import wait_for as _wait_for

pytestmark = pytest.mark.slow
BIN = pathlib.Path(sys.executable).parent


@pytest.fixture(scope="module")
def mp_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def api(tmp_path_factory, mp_module):
    mp_module.setenv("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect")))
    from flows.server import prefect_api

    with prefect_api() as url:
        yield url


def _same_examples(a_store, b_store):
    a, b = open_dataset(str(a_store)), open_dataset(str(b_store))
    assert sorted(a.table["id"]) == sorted(b.table["id"])
    assert len(set(a.table["id"])) == len(a)  # every example exactly once
    ids_b = list(b.table["id"])
    for i in range(len(a)):
        j = ids_b.index(a.table["id"][i])
        np.testing.assert_array_equal(a[i]["features"]["log_mel"], b[j]["features"]["log_mel"])


@pytest.fixture(scope="module")
def reference_store(tiny_corpus, tmp_path_factory):
    from pipeline.config.catalog import load_catalog
    from pipeline.run.steps import run_catalog

    d = tmp_path_factory.mktemp("ref")
    loaded = load_catalog(write_catalog(d / "c.yaml", base_catalog(tiny_corpus, d / "ref.zarr", execution={"partition_seconds": 3})))
    # one BLAS thread, as Dask starts every worker process (distributed.nanny.pre-spawn-environ):
    # a multi-threaded BLAS sums matrix products in another order (float32 round-off)
    with threadpool_limits(limits=1):
        run_catalog(loaded)
    return d / "ref.zarr"


def test_external_dask_cluster_started_from_the_command_line(api, tiny_corpus, tmp_path, reference_store):
    port = free_port()
    env = {**os.environ, "PREFECT_API_URL": api}
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0"], **quiet)]
    try:
        addr = f"tcp://127.0.0.1:{port}"
        for _ in range(2):
            procs.append(subprocess.Popen([str(BIN / "dask"), "worker", addr, "--nthreads", "1", "--nworkers", "1", "--no-dashboard"], **quiet))
        from distributed import Client

        with Client(addr, timeout=60) as c:
            c.wait_for_workers(2, timeout=60)
        from flows.prepare import prepare

        cat = write_catalog(tmp_path / "c.yaml", base_catalog(tiny_corpus, tmp_path / "s.zarr", execution={"partition_seconds": 3, "scheduler": addr}))
        summary = prepare(str(cat), report=False)
        assert summary["examples"] == 32
        _same_examples(tmp_path / "s.zarr", reference_store)

        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName
        from prefect.client.schemas.sorting import TaskRunSort

        async def runs():
            async with get_client() as client:
                named = TaskRunFilter(name=TaskRunFilterName(like_="partition-"))
                trs = await client.read_task_runs(task_run_filter=named, limit=200, sort=TaskRunSort.NAME_ASC)
                return [t for t in trs if t.state_type.value == "COMPLETED"]

        from tests.test_flow_e2e import eventually

        assert len(eventually(lambda: asyncio.run(runs()), lambda r: len(r) >= summary["partitions"])) >= summary["partitions"]
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def test_worker_sigkill_mid_partition_loses_nothing(api, tiny_corpus, tmp_path, reference_store, mp_module):
    import threading

    import psutil

    from flows.prepare import prepare

    store = tmp_path / "s.zarr"
    # slow every partition down a little (in the workers) so a kill lands mid-partition
    mp_module.setenv("AUDIOPREP_TEST_PARTITION_DELAY_SECONDS", "1.5")
    cat = write_catalog(tmp_path / "c.yaml", base_catalog(tiny_corpus, store, execution={"partition_seconds": 3, "retries": 3}))
    killed = []

    def killer():
        me = psutil.Process()
        def workers():
            return [p for p in me.children(recursive=True) if "distributed" in " ".join(p.cmdline()) or "spawn" in " ".join(p.cmdline())]
        try:
            _wait_for(lambda: (store / "_partitions").exists() and any((store / "_partitions").iterdir()), 120, "first manifest")
            time.sleep(0.3)
            leaves = [p for p in workers() if not p.children()]
            if leaves:
                os.kill(leaves[0].pid, signal.SIGKILL)
                killed.append(leaves[0].pid)
        except Exception as exc:  # noqa: BLE001
            killed.append(exc)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        summary = prepare(str(cat), workers=2, report=False)
    finally:
        mp_module.delenv("AUDIOPREP_TEST_PARTITION_DELAY_SECONDS")
    t.join(5)
    assert killed and isinstance(killed[0], int), killed
    assert summary["examples"] == 32
    _same_examples(store, reference_store)


def test_driver_killed_mid_run_then_resumed(tiny_corpus, tmp_path, reference_store):
    store = tmp_path / "s.zarr"
    cat = write_catalog(tmp_path / "c.yaml", base_catalog(tiny_corpus, store, execution={"partition_seconds": 3}))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "ph"), "AUDIOPREP_TEST_PARTITION_DELAY_SECONDS": "1.0"}
    env.pop("PREFECT_API_URL", None)
    cmd = [str(BIN / "audioprep"), "run", str(cat), "--workers", "1", "--no-report"]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(lambda: (store / "_partitions").exists() and len(list((store / "_partitions").glob("*.json"))) >= 2, 120, "two manifests")
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # the driver and its whole process group, no clean-up
        p.wait(30)
    done_before = len(list((store / "_partitions").glob("*.json")))
    assert (store / "_lock.json").exists()  # the dead run's lock is still there
    g = zarr.open_group(str(store), mode="r")
    assert g.attrs["audioprep"]["current_version"] == 0  # nothing committed
    env.pop("AUDIOPREP_TEST_PARTITION_DELAY_SECONDS")
    r = subprocess.run([*cmd, "--json", str(tmp_path / "s.json")], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    s = json.loads((tmp_path / "s.json").read_text())
    total = len(list((store / "_partitions").glob("*.json")))
    assert s["examples"] == 32 and s["partitions"] == total and done_before < total
    # only the recomputed partitions count as processed audio
    assert s["partitions_already_done"] == done_before
    assert f"resumed: {done_before} of {total} partitions already committed" in r.stdout
    assert 0 < s["processed_audio_seconds"] < s["audio_hours"] * 3600
    _same_examples(store, reference_store)


def test_ctrl_c_as_a_terminal_sends_it_then_resumed(tiny_corpus, tmp_path, reference_store):
    """SIGINT to the run's process group: one line, exit 130, no process left; the rerun
    says how many partitions were already done and ends identical to a clean run."""
    import psutil

    store = tmp_path / "s.zarr"
    cat = write_catalog(tmp_path / "c.yaml", base_catalog(tiny_corpus, store, execution={"partition_seconds": 3, "workers": 2}))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "ph"), "AUDIOPREP_TEST_PARTITION_DELAY_SECONDS": "1.0", "COLUMNS": "200"}
    env.pop("PREFECT_API_URL", None)
    p = subprocess.Popen([str(BIN / "audioprep"), "run", str(cat), "--no-report"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        _wait_for(lambda: (store / "_partitions").exists() and len(list((store / "_partitions").glob("*.json"))) >= 2, 120, "two manifests")
        family = psutil.Process(p.pid).children(recursive=True)
        assert len(family) >= 3  # the API server and the workers
        sent = time.monotonic()
        os.killpg(p.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        out, err = p.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, err[-3000:]
    assert took < 15, took  # seconds, not the minute of retries against a stopped API
    assert "interrupted; nothing committed; rerun to resume" in err and "Traceback" not in err, err[-3000:]
    _wait_for(lambda: not [c for c in family if c.is_running() and c.status() != psutil.STATUS_ZOMBIE], 30, "children gone")
    done_before = len(list((store / "_partitions").glob("*.json")))
    env.pop("AUDIOPREP_TEST_PARTITION_DELAY_SECONDS")
    r = subprocess.run([str(BIN / "audioprep"), "run", str(cat), "--no-report"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resumed: {done_before} of " in r.stdout, r.stdout
    _same_examples(store, reference_store)
