"""Shared helpers for the benchmarks: thread limits, RSS sampling, catalogs, sizes, env."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import platform
import subprocess
import sys
import threading
import time
from typing import Any

from flows.server import free_port  # noqa: F401 - the benchmarks' one free-port helper

RESULTS = pathlib.Path(__file__).parent / "results"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def env_float(name: str, default: float) -> float:
    v = os.environ.get(name)
    return float(v) if v else default


def env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    return int(v) if v else default


def one_thread_env(**extra: str) -> dict[str, str]:
    """This process's environment with every BLAS/OpenMP pool limited to one thread."""
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = "1"
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("MPLBACKEND", "Agg")
    env.update(extra)
    return env


def set_one_thread() -> None:
    for var in THREAD_VARS:
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def _role(cmdline: list[str], forked: bool = False) -> str:
    """``forked``: the process's parent is not the sampling process (a fork server's child)."""
    s = " ".join(cmdline)
    if "uvicorn" in s or "prefect" in s and "server" in s:
        return "prefect_server"
    if "resource_tracker" in s or "semaphore_tracker" in s:
        return "tracker"
    if "multiprocessing.forkserver" in s and not forked:
        return "forkserver"  # the embedded cluster forks its workers from it (they keep its cmdline)
    return "worker"  # Dask workers (forked or spawned), lhotse's process pool (fork)


class RssSampler:
    """Samples RSS of this process and every descendant every ``interval`` s in a thread.

    ``result()`` -> {"driver_peak_mb", "workers": [peak MB per worker pid], "worker_peak_mb", ...}.
    Worker processes are multiprocessing spawn children (Dask nanny workers, lhotse's pool).
    """

    def __init__(self, interval: float = 0.05):
        import psutil

        self._psutil = psutil
        self.interval = interval
        self.me = psutil.Process()
        self.peaks: dict[int, float] = {}
        self.roles: dict[int, str] = {}
        self.cpu: dict[int, float] = {}
        self._procs: list[Any] = []
        self._next_listing = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        ps = self._psutil
        # listing descendants reads /proc/*/stat of every process on the machine: do it every
        # 0.5 s, not on every sample, so the sampler itself stays well under 1% of a core
        now = time.monotonic()
        if now >= self._next_listing:
            try:
                self._procs = [self.me, *self.me.children(recursive=True)]
            except ps.Error:
                pass
            self._next_listing = now + 0.5
        for p in self._procs:
            try:
                rss = p.memory_info().rss / 2**20
                t = p.cpu_times()
                self.cpu[p.pid] = t.user + t.system
                if p.pid not in self.roles:
                    self.roles[p.pid] = "driver" if p.pid == self.me.pid else _role(p.cmdline(), forked=p.ppid() != self.me.pid)
            except ps.Error:
                continue
            self.peaks[p.pid] = max(self.peaks.get(p.pid, 0.0), rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)
        self._next_listing = 0.0
        self._sample()

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds (user + system, last sample) of the driver, workers and Prefect server."""
        out: dict[str, float] = {}
        for pid, secs in self.cpu.items():
            role = self.roles.get(pid, "other")
            out[role] = round(out.get(role, 0.0) + secs, 2)
        return out

    def result(self) -> dict[str, Any]:
        workers = sorted((round(v, 1) for pid, v in self.peaks.items() if self.roles.get(pid) == "worker"), reverse=True)
        return {
            "driver_peak_mb": round(self.peaks.get(self.me.pid, 0.0), 1),
            "worker_peak_mb": workers[0] if workers else None,
            "workers_peak_mb": workers,
            "cpu_seconds_by_role": self.cpu_by_role(),
            "prefect_server_peak_mb": max((round(v, 1) for pid, v in self.peaks.items() if self.roles.get(pid) == "prefect_server"), default=None),
            "forkserver_peak_mb": max((round(v, 1) for pid, v in self.peaks.items() if self.roles.get(pid) == "forkserver"), default=None),
        }



@contextlib.contextmanager
def pin_workers(cpu: int, interval: float = 0.05):
    """Keep every thread of this process's Dask worker processes on CPU ``cpu`` while the
    block runs (Linux). Affinity is per thread and new threads inherit their creator's, so
    the workers' threads are pinned as soon as they appear and again every ``interval``."""
    import psutil

    me = psutil.Process()
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                procs = me.children(recursive=True)
            except psutil.Error:
                procs = []
            for p in procs:
                try:
                    if _role(p.cmdline(), forked=p.ppid() != me.pid) != "worker":
                        continue
                    for t in p.threads():
                        try:
                            os.sched_setaffinity(t.id, {cpu})
                        except OSError:  # a thread that has just ended
                            pass
                except psutil.Error:
                    continue
            stop.wait(interval)

    thread = threading.Thread(target=loop, daemon=True, name="bench-pin-workers")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class ExternalCluster:
    """``dask scheduler`` + N ``dask worker`` processes (1 thread each, warm-up preload): a cluster
    that already exists when a run starts. ``address`` once entered."""

    def __init__(self, n_workers: int, env: dict[str, str]):
        self.n_workers, self.env, self.procs, self.address = n_workers, env, [], ""

    def __enter__(self) -> ExternalCluster:
        from distributed import Client

        dask = str(pathlib.Path(sys.executable).parent / "dask")
        port = free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        # the settings deploy/ recommends: no statistical profiler, housekeeping every 500 ms
        env = {**self.env, "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False", "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "500ms",
               "DASK_DISTRIBUTED__WORKER__MEMORY__MONITOR_INTERVAL": "500ms"}
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=pathlib.Path(__file__).parent.parent)
        # the scheduler unpickles each task graph: with the flow code preloaded, the first one does
        # not wait for it to import (1.5 s measured)
        self.procs.append(subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0",
                                            "--preload", "flows.prepare"], **quiet))
        for _ in range(self.n_workers):
            self.procs.append(subprocess.Popen([dask, "worker", self.address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                                                "--preload", "flows.prepare", "--preload", "pipeline.run.warmup"], **quiet))
        with Client(self.address, timeout=60) as c:
            c.wait_for_workers(self.n_workers, timeout=120)
        return self

    def __exit__(self, *exc) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def dir_bytes(path: pathlib.Path | str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def speech_catalog(audio_dir: pathlib.Path, store: pathlib.Path, *, partition_seconds: float = 600.0, workers: int = 2,
                   clip: dict | None = None, dataset: str = "bench", dtype: str = "float32") -> dict[str, Any]:
    """A catalog for a bench/corpus speech folder: log-mel 80 (n_fft 400, hop 160), 16 kHz."""
    audio: dict[str, Any] = {"sample_rate": 16000, "max_seconds": 600}
    if clip:
        audio["clip"] = clip
    return {
        "dataset": dataset,
        "seed": 0,
        "output": {"store": str(store), "dtype": dtype},
        "sources": [
            {
                "name": "speech",
                "url": str(audio_dir),
                "pattern": "**/*.{flac,wav}",
                "label": {"from": "parent_dir"},
                "group": {"from": "regex", "pattern": r"(?P<group>\d+)-\d+-"},
            }
        ],
        "audio": audio,
        "features": {"stft": {"n_fft": 400, "hop_length": 160}, "log_mel": {"n_mels": 80}},
        "splits": {"train": 0.8, "val": 0.1, "test": 0.1},
        "execution": {"partition_seconds": partition_seconds, "workers": workers},
    }


def write_catalog(path: pathlib.Path, cat: dict[str, Any]) -> pathlib.Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cat, sort_keys=False))
    return path


def run_child(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 3600) -> dict[str, Any]:
    """Run ``python -m bench.<module> ...`` in a fresh process; it prints one JSON line last.

    ``process_wall_seconds`` ends when the process exits (what ``time`` in a shell reports);
    ``pipes_closed_seconds`` when its output pipes close, which waits also for processes it
    left behind holding them (the embedded cluster's fork server exits after the run).
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], env=env or one_thread_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=pathlib.Path(__file__).parent.parent)
    exited: list[float] = []
    waiter = threading.Thread(target=lambda: (proc.wait(), exited.append(time.perf_counter())), daemon=True)
    waiter.start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    closed = time.perf_counter()
    waiter.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{stdout[-3000:]}\n{stderr[-3000:]}")
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    out = json.loads(lines[-1])
    out["process_wall_seconds"] = exited[0] - t0
    out["pipes_closed_seconds"] = closed - t0
    return out


def versions(*names: str) -> dict[str, str | None]:
    """Installed versions of distributions (None when absent), read without importing them."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def env_info() -> dict[str, Any]:
    import numpy as np

    info = {"python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(), "cpus": os.cpu_count()}
    info.update(versions("librosa", "zarr", "dask", "prefect", "lhotse", "torch"))
    try:
        info["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def save(name: str, result: dict[str, Any], out: pathlib.Path | None = None) -> pathlib.Path:
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path
