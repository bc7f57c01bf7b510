"""The run's Prefect API: the user's when PREFECT_API_URL is set (nothing started), else
`prefect server start` on a free port for the duration of the run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

from flows import server

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def no_api(tmp_path, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield


def _server_processes() -> list[psutil.Process]:
    return [c for c in psutil.Process().children(recursive=True) if "server" in c.cmdline() and "start" in c.cmdline()]


def test_without_an_api_url_prefect_server_start_serves_the_run_and_stops(no_api):
    from prefect.settings import get_current_settings

    assert server.configured_api_url() is None
    with server.prefect_api() as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/api")
        assert str(get_current_settings().api.url) == url  # the flow and its workers report here
        [proc] = _server_processes()
        cmd = proc.cmdline()
        assert cmd[cmd.index("server") : cmd.index("server") + 3] == ["server", "start", "--host"]  # Prefect's documented command
        with _DIRECT.open(f"{url}/health", timeout=5) as r:
            assert r.status == 200 and json.loads(r.read()) is True
        port = int(url.rsplit(":", 1)[1].split("/")[0])
    assert "PREFECT_API_URL" not in os.environ and get_current_settings().api.url is None
    assert not _server_processes()
    with pytest.raises(OSError):
        _DIRECT.open(f"http://127.0.0.1:{port}/api/health", timeout=2)


def test_with_an_api_url_nothing_is_started(tmp_path, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        with server.prefect_api() as url:
            assert url == "http://127.0.0.1:9/api"
            assert not _server_processes()


@pytest.mark.skipif(not os.path.exists("/proc/self/environ"), reason="reads a process's environment from /proc")
def test_the_server_batches_task_run_states_unless_the_environment_says_otherwise(no_api, monkeypatch):
    monkeypatch.setenv("PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL", "7")
    api = server.LocalApiServer()
    api.start()
    try:
        api.wait_ready()  # exec'd: /proc shows the server's own environment, not the forking parent's
        with open(f"/proc/{api.proc.pid}/environ", "rb") as f:
            env = dict(item.split("=", 1) for item in f.read().decode().split("\0") if "=" in item)
    finally:
        api.stop()
    assert env["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE"] == "100"
    assert env["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL"] == "7"  # the user's value
    assert "PREFECT_API_URL" not in env


def test_a_port_taken_by_another_process_is_a_clear_error(no_api):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        api = server.LocalApiServer(port=busy.getsockname()[1])
        api.start()
        try:
            with pytest.raises(RuntimeError, match="local Prefect API .* exited with code"):
                api.wait_ready(timeout=60)
        finally:
            api.stop()


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_the_api_server_ends_with_the_process_that_started_it(tmp_path, signal_name):
    """A run ended by a signal that runs no cleanup leaves no API server behind."""
    code = (
        "import time\n"
        "from flows.server import prefect_api\n"
        "with prefect_api() as url:\n"
        "    print('up', flush=True)\n"
        "    time.sleep(120)\n"
    )
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        assert proc.stdout.readline().strip() == "up"
        left = {c.pid: " ".join(c.cmdline()) for c in psutil.Process(proc.pid).children(recursive=True)}
        assert any("server start" in c for c in left.values()), left
        os.kill(proc.pid, getattr(signal, signal_name))
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(pid) for pid in left):
            time.sleep(0.1)
        assert not [c for pid, c in left.items() if _alive(pid)]
    finally:
        proc.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_api_listens_where_the_workers_reach_the_scheduler_from():
    """Loopback for an embedded cluster or a scheduler on this host; the address of the route
    to a scheduler elsewhere (a UDP connect sends nothing); a clear refusal otherwise."""
    from pipeline.errors import ClusterError

    assert server.api_host_for(None) == "127.0.0.1"
    assert server.api_host_for("tcp://127.0.0.1:8786") == "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # this host's address toward a documentation address
        try:
            s.connect(("192.0.2.10", 8786))
            expected = s.getsockname()[0]
        except OSError:
            expected = None
    if expected:
        assert server.api_host_for("tcp://192.0.2.10:8786") == expected != "127.0.0.1"
    with pytest.raises(ClusterError, match="set PREFECT_API_URL"):
        server.api_host_for("tcp://no-such-host.invalid:8786")
    with pytest.raises(ClusterError, match="set PREFECT_API_URL"):
        server.api_host_for("inproc://10.0.0.1/1/2")
    assert server.LocalApiServer(host="::1", port=5).url == "http://[::1]:5/api"


def test_workers_that_cannot_reach_the_api_are_named_before_anything_runs(no_api):
    """A scheduler whose worker gets a URL it cannot reach: ClusterError names the worker and
    says to set PREFECT_API_URL (the workers reach nothing on a closed port either)."""
    from flows.runtime import check_workers_reach
    from pipeline.errors import ClusterError

    port = server.free_port()
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "PYTHONPATH": REPO}
    procs = [subprocess.Popen([f"{bin_dir}/dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        addr = f"tcp://127.0.0.1:{port}"
        procs.append(subprocess.Popen([f"{bin_dir}/dask", "worker", addr, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", "wx"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        closed = f"http://127.0.0.1:{server.free_port()}/api"
        with pytest.raises(ClusterError) as err:
            check_workers_reach(addr, closed)
        msg = str(err.value)
        assert f"1 of 1 Dask worker(s) of {addr} cannot reach this run's Prefect API at {closed}" in msg
        assert "Set PREFECT_API_URL" in msg and "tcp://127.0.0.1:" in msg
        with server.prefect_api() as url:  # a server every worker here reaches: no error
            check_workers_reach(addr, url)
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(15)
