"""One Prefect API for a run: the user's (``PREFECT_API_URL``), or a local one started for it.

The local API is Prefect's own documented server, ``prefect server start``, in a subprocess
on a free port. The flow and every Dask worker report to it; it never runs per worker. With
workers on other hosts it listens on the address this host reaches their scheduler from
(:func:`api_host_for`), never on loopback.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

BOOT_TIMEOUT_SECONDS = 90.0
BOOT_ATTEMPTS = 3

#: The run-scoped server records task-run states in batches, at least once a second (Prefect's
#: default is one transaction per event, and every partition sends three). Values set in the
#: environment win. docs/performance.md has the measurement.
TASK_RUN_RECORDER_BATCHING = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
}

#: ``python -m prefect server start``, ended by SIGTERM when the process that started it ends
#: however it ends (killed included): it reads EOF on a pipe whose other end only that process holds.
_SERVER = """
import os, runpy, signal, sys, threading

def _end_with_parent(fd):
    os.read(fd, 1)
    os.kill(os.getpid(), signal.SIGTERM)

fd = os.environ.pop("AUDIOPREP_PARENT_PIPE_FD", None)
if fd is not None:
    threading.Thread(target=_end_with_parent, args=(int(fd),), daemon=True).start()
sys.argv = ["prefect", *sys.argv[1:]]
runpy.run_module("prefect", run_name="__main__", alter_sys=True)
"""

# health checks go straight to the server, never through an HTTP proxy from the environment
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def configured_api_url() -> str | None:
    """The API URL the user configured (environment or Prefect profile), if any."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


@contextlib.contextmanager
def prefect_api(host: str = "127.0.0.1", while_booting: Callable[[str], None] | None = None) -> Iterator[str]:
    """Yield the API URL this run reports to.

    With ``PREFECT_API_URL`` configured (a server of the user's, or Prefect Cloud), that URL,
    and nothing is started. Otherwise ``prefect server start`` on a free port of ``host``,
    stopped when the block ends; inside the block Prefect's settings point at it.
    ``while_booting(url)`` runs while the server boots (its URL known, not answering yet).
    """
    url = configured_api_url()
    if url:
        yield url
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = start_local_api(host, while_booting=while_booting)
    url = server.url
    try:
        with temporary_settings({PREFECT_API_URL: url}):
            try:
                yield url
            finally:
                _flush_logs()  # also when the run failed: its error's logs reach the API, not the terminal
    finally:
        server.stop()


def start_local_api(host: str = "127.0.0.1", attempts: int = BOOT_ATTEMPTS, while_booting: Callable[[str], None] | None = None) -> LocalApiServer:
    """A :class:`LocalApiServer` that answers. A server that exits while it boots is started
    again on a new port: two runs starting at once on a new ``PREFECT_HOME`` both migrate its
    database, and the loser exits (``duplicate column``); the next try finds it migrated.
    ``while_booting(url)`` runs once, after the first start (a retry moves the URL: the
    caller compares)."""
    for attempt in range(1, attempts + 1):
        server = LocalApiServer(host=host)
        server.start()
        try:
            if while_booting is not None and attempt == 1:
                try:
                    while_booting(server.url)
                except BaseException:
                    server.stop()
                    raise
            server.wait_ready()
            return server
        except RuntimeError:
            server.stop()
            if attempt == attempts or not server.exited:
                raise
            time.sleep(attempt)
    raise AssertionError("unreachable")


class LocalApiServer:
    """``prefect server start`` in a subprocess: no UI, no scheduler, no late-run marking
    (a run-scoped API serves no deployments), task-run states recorded in batches."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.proc: subprocess.Popen | None = None
        self._log = None
        self._parent_end: int | None = None
        self.exited = False  # it ended by itself while booting

    @property
    def url(self) -> str:
        return f"http://{http_host(self.host)}:{self.port}/api"

    def start(self) -> str:
        """Spawn the server; return its API URL at once (it answers after :meth:`wait_ready`)."""
        self.port = self.port or free_port(self.host)
        self._log = tempfile.TemporaryFile()
        env = {**TASK_RUN_RECORDER_BATCHING, **os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        env.pop("PREFECT_API_URL", None)
        child_end, self._parent_end = os.pipe()
        env["AUDIOPREP_PARENT_PIPE_FD"] = str(child_end)
        cmd = [
            sys.executable, "-c", _SERVER, "server", "start", "--host", self.host, "--port", str(self.port),
            "--no-ui", "--no-scheduler", "--no-late-runs", "--log-level", "ERROR",
        ]
        # a session of its own: a terminal's Ctrl-C goes to the run, which then records the
        # interruption in this API before it stops it
        self.proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, pass_fds=(child_end,), start_new_session=True
        )
        os.close(child_end)
        return self.url

    def answers(self) -> bool:
        try:
            with _DIRECT.open(f"{self.url}/health", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]

    def wait_ready(self, timeout: float = BOOT_TIMEOUT_SECONDS) -> None:
        """Poll ``/health`` until the server answers; raise with its output if it exits or hangs."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.exited = True
                raise RuntimeError(
                    f"the local Prefect API (prefect server start on {self.host}:{self.port}) exited with code "
                    f"{self.proc.returncode}; set PREFECT_API_URL to a running server, or fix the cause in its output: {self.output()}"
                )
            if self.answers():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the local Prefect API did not answer on {self.url} within {timeout:.0f} s; set PREFECT_API_URL to a running server")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._parent_end is not None:  # after the wait: its EOF would be a second SIGTERM
            os.close(self._parent_end)
            self._parent_end = None
        if self._log is not None:
            self._log.close()
            self._log = None


def api_host_for(scheduler: str | None) -> str:
    """The local address the run's own API listens on, so that the workers reach it.

    ``127.0.0.1`` for an embedded cluster or a scheduler on this host. For a scheduler
    elsewhere, the address this host sends from to reach it (the kernel's route, found by
    connecting a UDP socket: nothing is sent): the workers talk to that scheduler, so they
    are on a network that reaches this address. Raises :class:`~pipeline.errors.ClusterError`
    when there is no such address, saying to set ``PREFECT_API_URL``.
    """
    if not scheduler:
        return "127.0.0.1"
    from distributed.comm import parse_address, parse_host_port

    from pipeline.errors import ClusterError

    try:
        scheme, location = parse_address(scheduler)
        host, port = parse_host_port(location, default_port=8786)
    except (ValueError, TypeError) as exc:
        raise ClusterError(f"scheduler address {scheduler!r} is not tcp://host:port ({exc})") from None
    if scheme not in ("tcp", "tls"):
        raise ClusterError(
            f"scheduler address {scheduler!r}: this run cannot tell which of its addresses {scheme}:// workers reach; "
            "set PREFECT_API_URL to a Prefect server that this host and every worker reach"
        )
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        family, _, _, _, sockaddr = infos[0]
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect(sockaddr)
            local = s.getsockname()[0]
    except OSError as exc:
        raise ClusterError(
            f"cannot find the address this host reaches the scheduler {scheduler} from ({exc}); "
            "set PREFECT_API_URL to a Prefect server that this host and every worker reach"
        ) from None
    if ipaddress.ip_address(local).is_loopback and not ipaddress.ip_address(sockaddr[0]).is_loopback:
        raise ClusterError(
            f"this host reaches the scheduler {scheduler} only from a loopback address ({local}); "
            "set PREFECT_API_URL to a Prefect server that this host and every worker reach"
        )
    return local


def http_host(host: str) -> str:
    """``host`` as it goes into a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _flush_logs() -> None:
    # logs and events still queued for the API, sent before the server stops
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    with contextlib.suppress(Exception):  # best effort: the run's result does not depend on it
        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)
