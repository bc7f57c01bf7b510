"""flows/serve.py: the deployment `audioprep serve` serves, a run triggered through the API, SIGTERM.

The run that the server's scheduler creates from the cron schedule is tested in test_schedule.py.
"""

from __future__ import annotations

import pathlib
import signal
import time

import pytest

from pipeline import open_dataset
from pipeline.errors import CatalogError, ConfigError
from tests.conftest import base_catalog, write_catalog
from tests.test_schedule import BIN, Service, api_client, check_store, prefect_server, running, wait_for_deployment

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


def _wait_for_state(client, flow_run_id, states: set[str], service: Service, timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(flow_run_id)
        if run.state_type.value in states:
            return run
        service.check_alive()
        service.note_descendants()
        time.sleep(0.5)
    pytest.fail(f"flow run {flow_run_id} not in {states} within {timeout:.0f} s ({run.state_name}):\n{service.output()[-6000:]}")


NEVER = "0 0 1 1 *"
"""A cron schedule that does not come due while a test runs: these runs are triggered by hand."""


@pytest.mark.slow
def test_served_deployment_runs_by_hand_and_sigterm_stops_serve_mid_run(tiny_corpus, tmp_path):
    """`audioprep serve` registers the deployment; a run triggered through the API completes.

    Then a process manager stops the service (SIGTERM to its process) while a second run is
    going: the run is cancelled, its subprocess and Dask workers end, the schedule is paused,
    and `audioprep serve` exits 0 within seconds, without "coroutine 'Runner.astop' was never
    awaited" (Prefect 3.8's own SIGTERM handler).
    """
    from prefect.deployments import run_deployment

    path, store = _catalog(tiny_corpus, tmp_path)
    name = "prepare/test-serve"
    t0 = time.monotonic()
    with prefect_server(tmp_path) as server:
        serve = Service(
            [str(BIN / "audioprep"), "serve", str(path), "--cron", NEVER, "--name", "test-serve"],
            # not the repository: the deployment must not depend on the working directory
            env=server.client_env(), cwd=tmp_path, log=tmp_path / "serve.log",
        )
        with running(serve), api_client(server) as client:
            deployment = wait_for_deployment(client, name, [server, serve])
            assert [(s.schedule.cron, s.active) for s in deployment.schedules] == [(NEVER, True)]
            assert deployment.parameters == {"catalog_path": str(path)}
            assert deployment.entrypoint == "flows.prepare.prepare"

            flow_run = run_deployment(name=name, timeout=150, poll_interval=1)
            assert flow_run.deployment_id == deployment.id and not flow_run.auto_scheduled
            assert flow_run.state is not None and flow_run.state.is_completed(), f"{flow_run.state}\n{serve.output()[-6000:]}"
            assert flow_run.parameters == {"catalog_path": str(path)}
            # the partitions ran on the Dask worker processes and reported to this API
            partitions = _task_runs(client, "partition-")
            assert partitions and all(t.state_type.value == "COMPLETED" for t in partitions), partitions
            version = check_store(store)
            first_run = time.monotonic() - t0

            # a second run, stopped halfway by SIGTERM to the serving process
            second = run_deployment(name=name, timeout=0, parameters={"catalog_path": str(path), "store": str(tmp_path / "second.zarr")})
            _wait_for_state(client, second.id, {"RUNNING"}, serve, timeout=90)
            time.sleep(2)  # into the run: its Dask cluster is starting or working
            serve.note_descendants()
            assert serve.seen, "the run's subprocess"
            rc, took = serve.stop(signal.SIGTERM, group=False)
            assert rc in (0, 128 + signal.SIGTERM), f"audioprep serve exited with {rc} after SIGTERM:\n{serve.output()[-6000:]}"
            assert took < 20, took
            assert "never awaited" not in serve.output(), serve.stop_output
            assert not serve.leftovers(), serve.leftovers()
            ended = client.read_flow_run(second.id)
            assert ended.state_type.value == "CANCELLED", f"{ended.state}\n{serve.stop_output}"
            assert client.read_deployment_by_name(name).paused, "stopping `audioprep serve` pauses its schedule"
        server.stop_cleanly()
    assert len(open_dataset(str(store))) == 32 and check_store(store) == version
    print(f"serve -> run by hand -> store v{version}: {first_run:.1f} s; SIGTERM mid-run -> exit {rc} in {took:.1f} s ({ended.state_name})")
