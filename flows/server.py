"""One local Prefect API for a run: the flow, and every Dask worker, report to it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

# quiet: local servers must not try to reach the internet (field-notes.md)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

BOOT_TIMEOUT_SECONDS = 90.0
#: The server process: uvicorn's CLI, which also ends when the process that started it does
#: (killed, or ended by a SIGTERM that ran no cleanup), and exits without the final garbage
#: collections (pipeline.run.warmup.skip_final_collection).
_UVICORN = """
import atexit, gc, os, runpy, signal, threading

def _end_with_parent(fd):
    os.read(fd, 1)  # b'' once the parent's end of the pipe is closed: it stopped us, or it ended
    os.kill(os.getpid(), signal.SIGTERM)

fd = os.environ.pop("AUDIOPREP_PARENT_PIPE_FD", None)
if fd is not None:
    threading.Thread(target=_end_with_parent, args=(int(fd),), daemon=True).start()
atexit.register(gc.freeze)
runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)
"""
#: The local API's task-run recorder writes task-run states in batches, at least once a second,
#: instead of one transaction per event (Prefect's default batch is 1). Each task run sends
#: three events; with partitions spread over a run, every one was its own flush, and the server
#: took 0.09 of a core in steady state, from the same 2 cores as the workers. Batched:
#: 0.4-0.5 CPU-s less per 20 partitions (docs/performance.md, round 7). The cost: the API
#: shows a task run's state up to a second later. The recorder's last batch is written when
#: the server stops. A value set in the environment is kept.
TASK_RUN_RECORDER_BATCHING = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
}
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
        from prefect.settings import (
            PREFECT_API_URL,
            PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
            temporary_settings,
        )

        # Flow heartbeats feed the server's crash detection, a service this run-scoped server
        # does not run; their thread costs each flow up to 1 s at exit. Entered while the
        # server boots: it validates every setting again (0.16 s).
        with temporary_settings({PREFECT_API_URL: url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            server.wait_ready()
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
    On a machine of a few cores the server boots on a core of its own (:class:`BootCpus`).
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self._log: Any = None
        self._cpus: BootCpus | None = None
        self._cpus_lock = threading.Lock()
        self._parent_end: int | None = None

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
        # No block types registered at start: registering (even memoized) first imports every
        # installed Prefect collection, prefect-dask and with it Dask (0.4 of the server's 0.7 s
        # lifespan). No run uses blocks: results are not persisted.
        env = {**TASK_RUN_RECORDER_BATCHING, **os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1", "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
               "PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false"}
        # the server reads EOF on this pipe when this process ends, however it ends
        child_end, self._parent_end = os.pipe()
        env["AUDIOPREP_PARENT_PIPE_FD"] = str(child_end)
        self.proc = subprocess.Popen(
            [
                sys.executable, "-c", _UVICORN, "--app-dir", app_dir,
                "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", "error", "--lifespan", "on",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            pass_fds=(child_end,),
        )
        os.close(child_end)
        self._cpus = BootCpus.split(self.proc.pid)
        if self._cpus is not None:
            # The caller reaches wait_ready only when its own start-up is done; a server that
            # answers sooner must not leave its CPU idle meanwhile while the rest stay pinned
            # to the others (measured: 0.6 s of one core idle in a cold run).
            threading.Thread(target=self._release_when_ready, name="audioprep-api-boot", daemon=True).start()
        return self.url

    def _answers(self) -> bool:
        try:
            with _DIRECT.open(f"{self.url}/health", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def _release_when_ready(self) -> None:
        """Give the CPUs back as soon as the server answers (or exits, or never answers)."""
        deadline = time.monotonic() + BOOT_TIMEOUT_SECONDS
        proc = self.proc
        while self._cpus is not None and proc.poll() is None and time.monotonic() < deadline and not self._answers():
            time.sleep(0.05)
        self._release_cpus()

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
            if self._answers():
                self._release_cpus()
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"the local Prefect API did not answer on {self.url} within {timeout:.0f} s; "
            "set PREFECT_API_URL to a running server (`prefect server start`)"
        )

    def _release_cpus(self) -> None:
        # from the boot watcher or the caller, whichever comes first; the other waits until
        # every thread has its CPUs back
        with self._cpus_lock:
            if self._cpus is not None:
                self._cpus.release()
                self._cpus = None

    def stop(self) -> None:
        self._release_cpus()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._parent_end is not None:  # after the wait: its EOF would be a second SIGTERM
            os.close(self._parent_end)
            self._parent_end = None
        if self._log is not None:
            self._log.close()
            self._log = None


class BootCpus:
    """Keeps the booting API server and this process tree on different CPUs, then gives every
    thread of both back the CPUs it had.

    The server's boot is single-threaded (about 3 CPU-s of imports and app set-up) and is
    what the run waits for. Time-sliced with this process's imports and the fork server's
    on 2 cores, it got 0.6 of a core and answered at 6.0 s with the other core idle for the
    last 2.5 s; on a core of its own it answers when they are done (measured here: 1 to 1.5 s
    sooner, docs/performance.md). Only with 2 to 4 usable CPUs: with more, nothing competes
    for the server's core. Affinity, unlike priority, can be given back without privileges.
    """

    MAX_CPUS = 4
    MAX_PASSES = 5

    def __init__(self, server_pid: int, before: dict[int, set[int]], default: set[int]):
        self.server_pid = server_pid
        self.before = before  # thread id -> its CPUs before the split
        self.default = default  # for threads and processes started during the split

    @classmethod
    def split(cls, server_pid: int) -> BootCpus | None:
        """Pin the server to the last usable CPU and this process's threads to the others
        (threads and processes it starts meanwhile inherit them). None where not possible."""
        if not hasattr(os, "sched_setaffinity"):
            return None
        try:
            mine = os.sched_getaffinity(0)
            if not 2 <= len(mine) <= cls.MAX_CPUS:
                return None
            before = {tid: os.sched_getaffinity(tid) for tid in _threads(os.getpid())}
            before.update({tid: os.sched_getaffinity(tid) for tid in _threads(server_pid)})
        except OSError:  # a container forbids it, or the server already exited: boot as usual
            return None
        split = cls(server_pid, before, mine)
        server_cpu = max(mine)
        try:
            for tid in _threads(server_pid):
                os.sched_setaffinity(tid, {server_cpu})
            for tid in _threads(os.getpid()):
                os.sched_setaffinity(tid, mine - {server_cpu})
        except OSError:  # a thread ended meanwhile: undo what was set, boot as usual
            split.release()
            return None
        return split

    def release(self) -> None:
        """Every thread of the server, of this process and of its descendants gets its CPUs back."""
        import psutil  # a dependency of distributed

        # Until a pass finds nothing left to change: a thread or process started (by a thread or
        # the fork server not yet given back its CPUs) while a pass ran is in the next one. The
        # release may run in a thread of its own while this process starts threads and workers.
        for _ in range(self.MAX_PASSES):
            try:
                pids = [os.getpid(), self.server_pid, *(p.pid for p in psutil.Process().children(recursive=True))]
            except psutil.Error:
                pids = [os.getpid(), self.server_pid]
            changed = False
            for pid in dict.fromkeys(pids):
                for tid in _threads(pid):
                    cpus = self.before.get(tid, self.default)
                    try:
                        if os.sched_getaffinity(tid) != cpus:
                            os.sched_setaffinity(tid, cpus)
                            changed = True
                    except OSError:  # ended meanwhile
                        pass
            if not changed:
                return


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


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
