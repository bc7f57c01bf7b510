"""flows/serve.py: the scheduled deployment, served for real and run through the Prefect API."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from pipeline.errors import CatalogError, ConfigError
from tests.conftest import base_catalog, write_catalog

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def prefect_env(tmp_path, monkeypatch):
    """A private PREFECT_HOME, no telemetry, and no API inherited from the caller's shell."""
    from prefect.settings import PREFECT_HOME, temporary_settings

    home = tmp_path / "prefect-home"
    home.mkdir()
    monkeypatch.setenv("PREFECT_HOME", str(home))
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings({PREFECT_HOME: str(home)}):
        yield home


def _catalog(tiny_corpus, tmp_path) -> tuple[pathlib.Path, pathlib.Path]:
    store = tmp_path / "store.zarr"
    cat = base_catalog(tiny_corpus, store, execution={"partition_seconds": 8, "workers": 1})
    return write_catalog(tmp_path / "catalog.yaml", cat), store


def test_build_deployment_holds_schedule_parameters_and_limit(tiny_corpus, tmp_path, prefect_env, monkeypatch):
    from flows.serve import build_deployment

    path, _ = _catalog(tiny_corpus, tmp_path)
    monkeypatch.chdir(tmp_path)
    d = build_deployment("catalog.yaml", cron="0 * * * *", name="hourly")
    assert d.name == "hourly"
    assert d.flow_name == "prepare"
    assert d.entrypoint == "flows.prepare.prepare"  # a module path: works from any directory
    assert d.parameters == {"catalog_path": str(path.resolve())}
    [s] = d.schedules
    assert s.schedule.cron == "0 * * * *" and s.active
    assert d.concurrency_limit == 1 and d.concurrency_options.collision_strategy.value == "ENQUEUE"


def test_bad_cron_and_bad_catalog_fail_before_serving(tiny_corpus, tmp_path, prefect_env):
    from flows.serve import build_deployment

    path, _ = _catalog(tiny_corpus, tmp_path)
    with pytest.raises(ConfigError, match="not a valid cron expression"):
        build_deployment(path, cron="every hour")
    with pytest.raises(CatalogError, match="catalog file not found"):
        build_deployment(tmp_path / "missing.yaml", cron="0 * * * *")


def test_serve_without_an_api_says_how_to_get_one(tiny_corpus, tmp_path, prefect_env):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.serve import serve_catalog

    path, _ = _catalog(tiny_corpus, tmp_path)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with pytest.raises(ConfigError, match="PREFECT_API_URL"):
            serve_catalog(str(path), cron="0 * * * *")


def _wait_for_deployment(client, name: str, proc: subprocess.Popen, log: pathlib.Path, timeout: float):
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`audioprep serve` exited with {proc.returncode}:\n{log.read_text()}")
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            time.sleep(0.5)
    pytest.fail(f"deployment {name} was not registered within {timeout:.0f} s:\n{log.read_text()}")


def _task_runs(client, prefix: str, timeout: float = 15.0) -> list:
    """Task runs whose name starts with ``prefix`` (task runs reach the API through events: poll)."""
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName
    from prefect.client.schemas.sorting import TaskRunSort

    deadline = time.monotonic() + timeout
    while True:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=prefix)), sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=200
        )
        runs = [r for r in runs if r.name.startswith(prefix)]
        if (runs and all(r.state_type.value == "COMPLETED" for r in runs)) or time.monotonic() > deadline:
            return runs
        time.sleep(0.5)


_DEFAULT_SIGINT = "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); runpy.run_module('audioprep.cli', run_name='__main__')"


def _stop(proc: subprocess.Popen) -> None:
    """Ctrl-C (the runner stops and pauses the schedule), then kill what is left of its group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group of the process we started: leftover flow-run children
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


@pytest.mark.slow
def test_served_deployment_runs_through_the_api(tiny_corpus, tmp_path, prefect_env):
    """`audioprep serve` registers the cron deployment; a run triggered through the API completes."""
    from prefect import get_client
    from prefect.deployments import run_deployment

    from flows.server import prefect_api
    from pipeline import open_dataset

    path, store = _catalog(tiny_corpus, tmp_path)
    name = "prepare/test-serve"
    log = tmp_path / "serve.log"
    t0 = time.monotonic()
    with prefect_api() as url:
        env = {**os.environ, "PREFECT_API_URL": url, "PREFECT_RUNNER_POLL_FREQUENCY": "1", "PREFECT_LOGGING_LEVEL": "INFO"}
        with log.open("wb") as out:
            proc = subprocess.Popen(
                # Ctrl-C must reach it as in a terminal, also when this test runs where SIGINT is
                # ignored (a shell's background job), which its children would inherit
                [sys.executable, "-c", _DEFAULT_SIGINT, "serve", str(path), "--cron", "0 * * * *", "--name", "test-serve"],
                cwd=tmp_path,  # not the repository: the deployment must not depend on the working directory
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            with get_client(sync_client=True) as client:
                deployment = _wait_for_deployment(client, name, proc, log, timeout=60)
                assert [s.schedule.cron for s in deployment.schedules] == ["0 * * * *"]
                assert all(s.active for s in deployment.schedules)
                assert deployment.parameters == {"catalog_path": str(path)}
                assert deployment.entrypoint == "flows.prepare.prepare"

                flow_run = run_deployment(name=name, timeout=120, poll_interval=1)
                assert flow_run.deployment_id == deployment.id
                assert flow_run.state is not None and flow_run.state.is_completed(), f"{flow_run.state}\n{log.read_text()}"
                assert flow_run.parameters == {"catalog_path": str(path)}
                # the partitions ran on the Dask worker processes and reported to this API
                partitions = _task_runs(client, "partition-")
                assert partitions and all(t.state_type.value == "COMPLETED" for t in partitions), partitions
        finally:
            _stop(proc)
        with get_client(sync_client=True) as client:
            assert client.read_deployment_by_name(name).paused, "stopping `audioprep serve` pauses its schedule"
    assert proc.returncode is not None
    ds = open_dataset(str(store))
    assert len(ds) == 32
    print(f"serve -> run through the API -> store: {time.monotonic() - t0:.1f} s")
