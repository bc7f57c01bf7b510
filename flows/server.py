"""One local Prefect API for a run: the flow, and every Dask worker, report to it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

# quiet: local servers must not try to reach the internet (field-notes.md)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

BOOT_TIMEOUT_SECONDS = 90.0
# health checks go straight to 127.0.0.1, never through an HTTP proxy from the environment
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@contextlib.contextmanager
def prefect_api(while_starting: Callable[[str], Any] | None = None) -> Iterator[str]:
    """Use ``PREFECT_API_URL`` when set; otherwise start a local API server for the duration.

    The URL is exported in the environment so that worker processes started afterwards
    (a LocalCluster's nannies) inherit it instead of each starting a server of their own.
    ``while_starting(url)`` runs while the server boots (seconds), e.g. to import the flow
    code and start the cluster.
    """
    url = os.environ.get("PREFECT_API_URL")
    if url:
        if while_starting:
            while_starting(url)
        yield url
        return
    server = LocalApiServer()
    url = server.start()
    os.environ["PREFECT_API_URL"] = url
    try:
        if while_starting:
            while_starting(url)
        server.wait_ready()
        from prefect.settings import (
            PREFECT_API_URL,
            PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
            temporary_settings,
        )

        # Flow heartbeats feed the server's crash detection, a service this run-scoped server
        # does not run; their thread costs each flow up to 1 s at exit.
        with temporary_settings({PREFECT_API_URL: url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield url
    finally:
        _flush_logs()
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


class LocalApiServer:
    """The Prefect API in a subprocess: the command ``prefect.server.api.server.SubprocessASGIServer``
    runs (uvicorn, ``create_app`` factory, ephemeral mode: no UI, no background services).

    Started without importing Prefect's server package in this process (about 2 s of
    imports), so the caller's own imports and the cluster start overlap the server's boot.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> str:
        """Spawn the server; returns its API URL at once (it answers after :meth:`wait_ready`)."""
        import importlib.util

        # where the prefect package lives (uvicorn's --app-dir), without importing it
        app_dir = os.path.dirname(list(importlib.util.find_spec("prefect").submodule_search_locations)[0])
        self.port = free_port()
        self._log = tempfile.TemporaryFile()
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "--app-dir", app_dir,
                "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", "error", "--lifespan", "on",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        return self.url

    def wait_ready(self, timeout: float = BOOT_TIMEOUT_SECONDS) -> None:
        """Poll ``/health`` until the server answers; raise with its stderr if it exits or hangs."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.seek(0)
                err = self._log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(
                    f"the local Prefect API exited with code {self.proc.returncode} while starting; set PREFECT_API_URL "
                    f"to a running server (`prefect server start`), or fix the cause in its output: {err}"
                )
            try:
                with _DIRECT.open(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"the local Prefect API did not answer on {self.url} within {timeout:.0f} s; "
            "set PREFECT_API_URL to a running server (`prefect server start`)"
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the API here; tests and benchmarks too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _flush_logs() -> None:
    # logs still queued for the API would otherwise retry against a stopped server at exit
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)
    except Exception:  # noqa: BLE001 - best effort
        pass
