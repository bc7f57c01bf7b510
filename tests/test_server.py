"""The local Prefect API process: starts, answers, exports its URL, stops; a real port
conflict is a clear error."""

from __future__ import annotations

import json
import os
import socket
import urllib.request

import pytest

from flows import server


def test_local_api_answers_exports_its_url_and_stops(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    seen = []
    with server.prefect_api(while_starting=seen.append) as url:
        assert seen == [url] and os.environ["PREFECT_API_URL"] == url and url.startswith("http://127.0.0.1:")
        with server._DIRECT.open(f"{url}/health", timeout=5) as r:
            assert r.status == 200 and json.loads(r.read()) is True
        port = int(url.rsplit(":", 1)[1].split("/")[0])
    assert "PREFECT_API_URL" not in os.environ
    with pytest.raises(OSError):
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"http://127.0.0.1:{port}/api/health", timeout=2)


@pytest.mark.skipif(not os.path.exists("/proc/self/environ"), reason="reads a process's environment from /proc")
def test_the_server_batches_task_run_states_unless_the_environment_says_otherwise(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.setenv("PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL", "7")
    api = server.LocalApiServer()
    api.start()
    try:
        with open(f"/proc/{api.proc.pid}/environ", "rb") as f:
            env = dict(item.split("=", 1) for item in f.read().decode().split("\0") if "=" in item)
    finally:
        api.stop()
    assert env["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE"] == "100"
    assert env["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL"] == "7"  # the user's value


def test_a_port_taken_by_another_process_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        monkeypatch.setattr(server, "free_port", lambda: busy.getsockname()[1])
        with pytest.raises(RuntimeError, match="local Prefect API exited with code"):
            with server.prefect_api():
                pass
    assert "PREFECT_API_URL" not in os.environ


#: Tests of BootCpus: it splits CPUs only where there are 2 to 4 of them.
boot_split = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or not 2 <= len(os.sched_getaffinity(0)) <= server.BootCpus.MAX_CPUS,
    reason="the boot split applies to 2 to 4 usable CPUs",
)


def _cpus(pid: int) -> set[int]:
    return os.sched_getaffinity(pid)


@boot_split
def test_the_booting_server_has_a_cpu_of_its_own_and_every_thread_gets_its_cpus_back(tmp_path, monkeypatch):
    import subprocess
    import sys
    import threading

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    mine = _cpus(0)
    api = server.LocalApiServer()
    api.start()
    try:
        last = max(mine)
        assert _cpus(api.proc.pid) == {last} and _cpus(0) == mine - {last}
        # started during the boot: they inherit the narrowed set, and get the full one back
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        stop, tids = threading.Event(), []
        thread = threading.Thread(target=lambda: (tids.append(threading.get_native_id()), stop.wait()))
        thread.start()
        while not tids:
            pass
        try:
            assert _cpus(child.pid) == _cpus(tids[0]) == mine - {last}
            api.wait_ready()
            assert _cpus(api.proc.pid) == _cpus(0) == _cpus(child.pid) == _cpus(tids[0]) == mine
        finally:
            stop.set()
            thread.join()
            child.kill()
            child.wait()
    finally:
        api.stop()
    assert _cpus(0) == mine


@boot_split
def test_the_cpus_come_back_when_the_server_answers_before_the_caller_waits_for_it(tmp_path, monkeypatch):
    import time

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    mine = _cpus(0)
    api = server.LocalApiServer()
    api.start()
    try:
        assert _cpus(0) == mine - {max(mine)}
        deadline = time.monotonic() + server.BOOT_TIMEOUT_SECONDS
        while _cpus(0) != mine and time.monotonic() < deadline:  # never calls wait_ready
            time.sleep(0.05)
        assert _cpus(0) == _cpus(api.proc.pid) == mine
        with server._DIRECT.open(f"{api.url}/health", timeout=5) as r:  # given back once it answered
            assert r.status == 200
    finally:
        api.stop()


def test_a_failed_boot_gives_the_cpus_back(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    mine = _cpus(0) if hasattr(os, "sched_getaffinity") else None
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        monkeypatch.setattr(server, "free_port", lambda: busy.getsockname()[1])
        with pytest.raises(RuntimeError):
            with server.prefect_api():
                pass
    if mine is not None:
        assert _cpus(0) == mine


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_the_runtime_ends_with_the_process_that_started_it(tmp_path, signal_name):
    """A run ended by a signal that runs no cleanup leaves nothing behind: its API server,
    the embedded cluster's fork server and workers, multiprocessing's resource tracker."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    code = (
        "import time\n"
        "from distributed import Client\n"
        "from flows.runtime import local_runtime\n"
        "with local_runtime(2) as rt:\n"
        "    Client(rt['scheduler']).wait_for_workers(2, timeout=120)\n"
        "    print('up', flush=True)\n"
        "    time.sleep(120)\n"
    )
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env, cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        assert proc.stdout.readline().strip() == "up"
        left = {c.pid: " ".join(c.cmdline()) for c in psutil.Process(proc.pid).children(recursive=True)}
        assert any("uvicorn" in c for c in left.values()) and any("forkserver" in c for c in left.values()), left
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


@boot_split
def test_a_split_that_fails_midway_is_undone(monkeypatch):
    import subprocess
    import sys

    mine = _cpus(0)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    real, calls = os.sched_setaffinity, []

    def flaky(tid, cpus):
        calls.append(tid)
        if len(calls) == 2:  # the server is pinned, this process's first thread fails
            raise OSError("thread ended")
        return real(tid, cpus)

    monkeypatch.setattr(os, "sched_setaffinity", flaky)
    try:
        assert server.BootCpus.split(child.pid) is None
        assert len(calls) > 2 and _cpus(child.pid) == _cpus(0) == mine
    finally:
        child.kill()
        child.wait()
