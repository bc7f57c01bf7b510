"""Shared helpers for the benchmarks: thread limits, RSS/CPU sampling, catalogs, sizes, env."""

from __future__ import annotations

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


def process_role(cmdline: list[str]) -> str:
    """What a process of a measured run is, from its command line."""
    s = " ".join(cmdline)
    if "audioprep" in s and " run " in f"{s} ":
        return "flow"  # `audioprep run`: the flow's process (it also hosts Dask's scheduler and nannies)
    if "server" in s and "start" in s and "prefect" in s or "uvicorn" in s:
        return "prefect_server"  # `prefect server start` (flows.server.LocalApiServer)
    if "resource_tracker" in s or "semaphore_tracker" in s:
        return "tracker"
    return "worker"  # Dask workers (multiprocessing spawn), lhotse's process pool


class RssSampler:
    """Samples RSS and CPU time of this process and every descendant every ``interval`` s in a thread.

    ``result()`` -> {"driver_peak_mb", "workers": [peak MB per worker pid], "worker_peak_mb", ...}.
    The driver is the ``audioprep run`` process where one runs below this one, else this process.
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
                    self.roles[p.pid] = "bench" if p.pid == self.me.pid else process_role(p.cmdline())
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
        """CPU seconds (user + system, last sample) of the bench process, the flow's process,
        the workers and the Prefect server. A process's CPU after its last sample is missed
        (at most ``interval``)."""
        out: dict[str, float] = {}
        for pid, secs in self.cpu.items():
            role = self.roles.get(pid, "other")
            out[role] = round(out.get(role, 0.0) + secs, 2)
        return out

    def result(self) -> dict[str, Any]:
        def peaks(role: str) -> list[float]:
            return sorted((round(v, 1) for pid, v in self.peaks.items() if self.roles.get(pid) == role), reverse=True)

        workers, flow = peaks("worker"), peaks("flow")
        return {
            "driver_peak_mb": flow[0] if flow else round(self.peaks.get(self.me.pid, 0.0), 1),
            "worker_peak_mb": workers[0] if workers else None,
            "workers_peak_mb": workers,
            "cpu_seconds_by_role": self.cpu_by_role(),
            "prefect_server_peak_mb": max(peaks("prefect_server"), default=None),
        }


def dir_bytes(path: pathlib.Path | str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def speech_catalog(audio_dir: pathlib.Path, store: pathlib.Path, *, partition_seconds: float | None = 600.0, workers: int | None = 2,
                   clip: dict | None = None, dataset: str = "bench", dtype: str = "float32") -> dict[str, Any]:
    """A catalog for a bench/corpus speech folder: log-mel 80 (n_fft 400, hop 160), 16 kHz.
    ``partition_seconds`` / ``workers`` None: not in the catalog (the catalog's defaults)."""
    audio: dict[str, Any] = {"sample_rate": 16000, "max_seconds": 600}
    if clip:
        audio["clip"] = clip
    cat: dict[str, Any] = {
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
    }
    execution = {k: v for k, v in (("partition_seconds", partition_seconds), ("workers", workers)) if v is not None}
    if execution:
        cat["execution"] = execution
    return cat


def write_catalog(path: pathlib.Path, cat: dict[str, Any]) -> pathlib.Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cat, sort_keys=False))
    return path


def run_child(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 3600) -> dict[str, Any]:
    """Run ``python -m bench.<module> ...`` in a fresh process; it prints one JSON line last.

    ``process_wall_seconds`` ends when the process exits (what ``time`` in a shell reports);
    ``pipes_closed_seconds`` when its output pipes close, which waits also for processes it
    left behind holding them.
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
    info.update(git_info())
    return info


def git_info() -> dict[str, Any]:
    """The commit measured, and the files of the working tree that differ from it."""
    root = pathlib.Path(__file__).parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_head": head, "git_modified": [ln[3:] for ln in dirty.splitlines()]}


def save(name: str, result: dict[str, Any], out: pathlib.Path | None = None) -> pathlib.Path:
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path
