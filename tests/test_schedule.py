"""The cron schedule fires for real, on the two paths a user takes to run ``prepare`` on a schedule.

1. ``audioprep serve CATALOG --cron ...`` against ``prefect server start``;
2. ``prefect deploy`` of ``deploy/prefect.yaml`` onto a process work pool, and
   ``prefect worker start --pool ...``.

Each test starts its own ``prefect server start`` (private ``PREFECT_HOME``, no UI), lets the
server's scheduler create a run of an every-minute cron schedule (the test triggers nothing),
waits for that run to complete, reads the store it committed, then stops every process the
way a user does: Ctrl-C to the serving process's group as a terminal sends it, SIGTERM to the
worker and the server as a process manager sends it. Every process must exit on its own and
leave no process behind.

The helpers here (``PrefectServer``, ``Service``, ``api_client``) are used by test_serve.py too.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import yaml

from tests.conftest import base_catalog, write_catalog

REPO = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent
SCHEDULED_RUN_TIMEOUT = 150.0
"""Seconds from the deployment's registration to its first scheduled run completing: up to
60 s until the cron's next minute, the runner's or worker's poll (10 s), and the run itself."""

# health checks go straight to the server, never through a proxy from the environment
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(home: pathlib.Path, **extra: str) -> dict[str, str]:
    """The caller's environment, minus any Prefect API or profile of its own, plus a private home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="INFO", **extra)
    return env


def _sigint_as_in_a_terminal() -> None:
    # A terminal's Ctrl-C must reach the process also when this test runs where SIGINT is ignored
    # (a non-interactive shell's background job): an ignored signal stays ignored across exec.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Service:
    """A long-running command in a process group of its own, its output in a log file."""

    def __init__(self, cmd: list[str], *, env: dict[str, str], cwd: pathlib.Path, log: pathlib.Path):
        self.cmd, self.log = cmd, log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_sigint_as_in_a_terminal,
            )
        self.pid = self.proc.pid
        self.seen: set[psutil.Process] = set()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"`{' '.join(self.cmd[:3])}` exited with {self.proc.returncode}:\n{self.output()[-6000:]}")

    def note_descendants(self) -> None:
        """Remember every process started below this one so far (flow runs, Dask workers, ...)."""
        with contextlib.suppress(psutil.Error):
            self.seen.update(psutil.Process(self.pid).children(recursive=True))

    def leftovers(self) -> list[str]:
        """Processes of this service still running: any noted descendant, anything in its group."""
        alive = {p for p in self.seen if p.is_running() and p.status() != psutil.STATUS_ZOMBIE}
        for p in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if p.pid != self.pid and os.getpgid(p.pid) == self.pid and p.status() != psutil.STATUS_ZOMBIE:
                    alive.add(p)
        out = []
        for p in alive:
            with contextlib.suppress(psutil.Error):
                out.append(f"{p.pid} {' '.join(p.cmdline())[:200]}")
        return out

    def stop(self, sig: signal.Signals, *, group: bool, timeout: float = 30.0) -> tuple[int, float]:
        """Send ``sig`` (to the process group, as a terminal does, or to the process, as a process
        manager does) and wait for the exit: (exit code, seconds it took). ``stop_output`` is
        what the process wrote from then on."""
        self.note_descendants()
        before = self.log.stat().st_size
        t0 = time.monotonic()
        if group:
            os.killpg(self.pid, sig)
        else:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`{' '.join(self.cmd[:3])}` still running {timeout:.0f} s after {sig.name}:\n{self.output()[-6000:]}")
        elapsed = time.monotonic() - t0
        with self.log.open("rb") as f:
            f.seek(before)
            self.stop_output = f.read().decode(errors="replace")
        deadline = time.monotonic() + 10  # children it told to stop get a moment to finish
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.2)
        return rc, elapsed

    def kill(self) -> None:
        """Last resort, for a test that failed: SIGKILL whatever is left of this service."""
        self.note_descendants()
        for p in self.seen:
            with contextlib.suppress(psutil.Error):
                p.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


class PrefectServer(Service):
    """``prefect server start`` with its scheduler, as a user starts it (no UI, to start faster)."""

    def __init__(self, home: pathlib.Path, log: pathlib.Path):
        home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        super().__init__(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port), "--no-ui"],
            env=clean_env(home), cwd=home, log=log,
        )
        self.home = home

    def client_env(self, **extra: str) -> dict[str, str]:
        """The environment of a process that uses this server. Runners and workers look for
        due runs every 2 s, not 10 (Prefect settings, as a user would set them)."""
        polls = {"PREFECT_RUNNER_POLL_FREQUENCY": "2", "PREFECT_WORKER_QUERY_SECONDS": "2"}
        return clean_env(self.home, PREFECT_API_URL=self.url, **{**polls, **extra})

    def wait_ready(self, timeout: float = 90.0) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            self.check_alive()
            with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                with _DIRECT.open(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            time.sleep(0.2)
        pytest.fail(f"prefect server start did not answer within {timeout:.0f} s:\n{self.output()[-6000:]}")

    def stop_cleanly(self) -> None:
        """SIGTERM, as a process manager stops it: it exits on its own, leaving nothing behind."""
        rc, took = self.stop(signal.SIGTERM, group=False)
        assert rc in (0, -signal.SIGTERM, 128 + signal.SIGTERM), f"prefect server exited with {rc}:\n{self.output()[-6000:]}"
        assert not self.leftovers(), self.leftovers()
        print(f"prefect server: SIGTERM -> exit {rc} in {took:.1f} s")


@contextlib.contextmanager
def running(*services: Service) -> Iterator[None]:
    """Whatever happens in the block, nothing of these services is left running after it."""
    try:
        yield
    finally:
        for s in reversed(services):
            if s.proc.poll() is None or s.leftovers():
                s.kill()


@contextlib.contextmanager
def prefect_server(tmp_path: pathlib.Path) -> Iterator[PrefectServer]:
    server = PrefectServer(tmp_path / "prefect-home", tmp_path / "server.log")
    with running(server):
        took = server.wait_ready()
        print(f"prefect server start: answered in {took:.1f} s")
        yield server


@contextlib.contextmanager
def api_client(server: PrefectServer):
    """Prefect's sync client, talking to ``server``."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.url, PREFECT_HOME: str(server.home)}):
        with get_client(sync_client=True) as client:
            yield client


def wait_for_deployment(client, name: str, services: list[Service], timeout: float = 90.0):
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for s in services:
            s.check_alive()
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            time.sleep(0.5)
    pytest.fail(f"deployment {name} was not registered within {timeout:.0f} s:\n" + "\n".join(s.output()[-3000:] for s in services))


def flow_runs(client, deployment_id) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
    from prefect.client.schemas.sorting import FlowRunSort

    return client.read_flow_runs(
        flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id])),
        sort=FlowRunSort.EXPECTED_START_TIME_ASC,
        limit=50,
    )


def wait_for_scheduled_run(client, deployment, services: list[Service], timeout: float = SCHEDULED_RUN_TIMEOUT):
    """The first run the server's scheduler created for ``deployment``, once it completed."""
    deadline = time.monotonic() + timeout
    seen = "no run yet"
    while time.monotonic() < deadline:
        for s in services:
            s.check_alive()
            s.note_descendants()
        runs = flow_runs(client, deployment.id)
        seen = ", ".join(f"{r.name}: {r.state_name} (auto_scheduled={r.auto_scheduled})" for r in runs) or "no run yet"
        for r in runs:
            assert r.auto_scheduled, f"a run the scheduler did not create: {r}"
            if r.state_type.value == "COMPLETED":
                return r
            if r.state_type.value in ("FAILED", "CRASHED", "CANCELLED"):
                logs = "\n".join(s.output()[-8000:] for s in services)
                pytest.fail(f"scheduled run {r.name} ended {r.state_name}: {r.state.message}\n{logs}")
        time.sleep(2)
    pytest.fail(f"no scheduled run completed within {timeout:.0f} s ({seen}):\n" + "\n".join(s.output()[-6000:] for s in services))


def check_scheduled_run(client, run, deployment, catalog: pathlib.Path) -> None:
    """``run`` came from the cron schedule, for the catalog, and went Scheduled -> ... -> Completed."""
    assert run.deployment_id == deployment.id and run.auto_scheduled
    assert run.parameters == {"catalog_path": str(catalog)}
    # created by the cron: a whole minute, and its first state Scheduled
    assert (run.expected_start_time.second, run.expected_start_time.microsecond) == (0, 0), run.expected_start_time
    states = sorted(client.read_flow_run_states(run.id), key=lambda s: s.timestamp)
    assert states[0].type.value == "SCHEDULED" and states[-1].type.value == "COMPLETED", [s.name for s in states]


def check_store(store: pathlib.Path) -> int:
    """The store has a committed version with every file of the corpus; that version."""
    from pipeline import open_dataset
    from pipeline.store.location import StoreLocation
    from pipeline.store.state import read_meta

    meta = read_meta(StoreLocation(str(store), {}))
    assert meta is not None and int(meta.get("current_version") or 0) >= 1, meta
    assert len(open_dataset(str(store))) == 32
    return int(meta["current_version"])


def small_catalog(tiny_corpus: pathlib.Path, tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    store = tmp_path / "store.zarr"
    cat = base_catalog(tiny_corpus, store, execution={"partition_seconds": 8, "workers": 1})
    return write_catalog(tmp_path / "catalog.yaml", cat), store


# --- 2. prefect deploy + prefect worker --------------------------------------------------
def deploy_file_for_this_machine(tmp_path: pathlib.Path) -> pathlib.Path:
    """deploy/prefect.yaml, with the one thing the CLI cannot override adapted to this machine.

    Its pull step sets the working directory of a flow run to where the image holds the code
    (/opt/audioprep); on a process worker the code is this checkout. docs/serving.md does the
    same with sed. Everything else stays as written: pool, schedule and catalog are given on
    `prefect deploy`'s command line.
    """
    text = (REPO / "deploy" / "prefect.yaml").read_text()
    assert text.count("directory: /opt/audioprep") == 1
    path = tmp_path / "prefect.local.yaml"
    path.write_text(text.replace("directory: /opt/audioprep", f"directory: {REPO}"))
    [step] = yaml.safe_load(path.read_text())["pull"]
    assert step == {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
    return path


def prefect_cli(server: PrefectServer, *args: str, cwd: pathlib.Path, timeout: float = 120) -> str:
    proc = subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", *args], env=server.client_env(), cwd=cwd,
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"prefect {' '.join(args)} exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


# --- both paths at once: one server, one minute boundary ------------------------------------
@pytest.mark.slow
def test_cron_schedules_fire_for_audioprep_serve_and_for_a_deployed_process_worker(tiny_corpus, tmp_path):
    """1. ``audioprep serve CATALOG --cron`` and 2. ``prefect deploy`` of deploy/prefect.yaml on
    a process worker, served by one ``prefect server start``: the server's scheduler creates a
    run of each every-minute schedule (the test triggers nothing), both complete, then Ctrl-C
    stops serve (SIGINT to its process group) and a process manager's SIGTERM stops the worker.
    Both wait for the same minute boundary, so the module costs one minute, not two."""
    (tmp_path / "serve").mkdir()
    (tmp_path / "deploy").mkdir()
    serve_catalog, serve_store = small_catalog(tiny_corpus, tmp_path / "serve")
    deploy_catalog, deploy_store = small_catalog(tiny_corpus, tmp_path / "deploy")
    pool = "audioprep-local"
    name = yaml.safe_load((REPO / "deploy" / "prefect.yaml").read_text())["deployments"][0]["name"]
    prefect_file = deploy_file_for_this_machine(tmp_path)
    t0 = time.monotonic()
    with prefect_server(tmp_path) as server:
        prefect_cli(server, "work-pool", "create", pool, "--type", "process", cwd=tmp_path)
        # from the repository root, as deploy/prefect.yaml says: its entrypoint is relative to it
        out = prefect_cli(
            server, "deploy", "--prefect-file", str(prefect_file), "--name", name, "--pool", pool,
            "--cron", "* * * * *", "--param", f"catalog_path={deploy_catalog}", cwd=REPO,
        )
        assert f"prepare/{name}" in out, out
        serve = Service(
            [str(BIN / "audioprep"), "serve", str(serve_catalog), "--cron", "* * * * *", "--name", "every-minute"],
            env=server.client_env(), cwd=tmp_path / "serve", log=tmp_path / "serve.log",
        )
        worker = Service(
            [str(BIN / "prefect"), "worker", "start", "--pool", pool],
            env=server.client_env(), cwd=tmp_path / "deploy", log=tmp_path / "worker.log",
        )
        with running(serve, worker), api_client(server) as client:
            served = wait_for_deployment(client, "prepare/every-minute", [server, serve])
            assert [(s.schedule.cron, s.active) for s in served.schedules] == [("* * * * *", True)]
            deployed = wait_for_deployment(client, f"prepare/{name}", [server, worker])
            assert deployed.work_pool_name == pool and deployed.entrypoint == "flows/prepare.py:prepare"
            # the file's hourly schedule, and the every-minute one given to `prefect deploy`
            assert sorted(s.schedule.cron for s in deployed.schedules) == ["* * * * *", "0 * * * *"]
            assert deployed.global_concurrency_limit.limit == 1 and deployed.concurrency_options.collision_strategy.value == "ENQUEUE"

            served_run = wait_for_scheduled_run(client, served, [server, serve])
            deployed_run = wait_for_scheduled_run(client, deployed, [server, worker])
            waited = time.monotonic() - t0
            check_scheduled_run(client, served_run, served, serve_catalog)
            check_scheduled_run(client, deployed_run, deployed, deploy_catalog)
            versions = check_store(serve_store), check_store(deploy_store)

            # Ctrl-C in the terminal: SIGINT to the foreground process group
            rc, took = serve.stop(signal.SIGINT, group=True)
            assert rc == 0, f"audioprep serve exited with {rc} after Ctrl-C:\n{serve.output()[-6000:]}"
            assert took < 15, took
            assert not serve.leftovers(), serve.leftovers()
            assert "never awaited" not in serve.output() and "Traceback" not in serve.stop_output, serve.stop_output
            assert client.read_deployment_by_name("prepare/every-minute").paused, "Ctrl-C pauses the schedule"

            # a process manager stops the worker: SIGTERM to its process
            rc, took_w = worker.stop(signal.SIGTERM, group=False)
            assert rc in (0, -signal.SIGTERM, 128 + signal.SIGTERM), f"prefect worker exited with {rc}:\n{worker.output()[-6000:]}"
            assert took_w < 15, took_w
            assert not worker.leftovers(), worker.leftovers()
            assert "never awaited" not in worker.output() and "Traceback" not in worker.stop_output, worker.stop_output
        server.stop_cleanly()
    print(f"scheduled runs {served_run.name} (serve) and {deployed_run.name} (worker) completed (stores v{versions}) "
          f"{waited:.1f} s after start; Ctrl-C -> serve exits in {took:.1f} s; SIGTERM -> worker exits in {took_w:.1f} s")
