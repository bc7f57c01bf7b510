"""Worker warm-up: pay the one-off imports (the FFT, zarr, codecs; librosa's numba kernels
for the features that use them) while a worker starts, not inside its first partition; and
pay them once per machine, not once per worker, where workers can be forked.

``pipeline.run.warmup`` is a Dask preload (``dask worker --preload pipeline.run.warmup``;
the embedded LocalCluster preloads it too). Measured here: a worker's first 1800 s
partition took 2.4 s cold and 1.0 s warm.

:func:`use_forkserver` makes an embedded LocalCluster fork its workers from one warmed-up
server process instead of starting each from a fresh interpreter: a spawned worker spent
about 3.5 CPU-s on imports and warm-up, which on a 2-core machine competes with the Prefect
API's own start.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
from collections.abc import Sequence

import numpy as np

#: Imported once by the fork server, so every worker forked from it starts with them. The
#: orchestration layer adds its own modules (``use_forkserver(extra_preload=...)``).
FORKSERVER_PRELOAD = ("distributed", "pipeline.run.partition", "pipeline.run.warmed")

_forkserver: bool | None = None  # use_forkserver's answer, once it has run in this process


def warm(sample_rate: int = 16000) -> None:
    """Import and exercise the code every partition runs, on one second of silence."""
    import soundfile  # noqa: F401
    import soxr  # noqa: F401
    import zarr  # noqa: F401
    from zarr.codecs import BloscCodec  # noqa: F401

    from pipeline.features import FeaturesConfig, build_feature_set
    from pipeline.run.allocator import tune_allocator

    tune_allocator()
    build_feature_set(FeaturesConfig(), sample_rate).compute(np.zeros(sample_rate, dtype=np.float32))


def skip_final_collection() -> None:
    """Make this process exit without the interpreter's last garbage collections.

    At exit CPython collects every object of the process several times while it tears its
    modules down: with a run's modules imported (Prefect, Dask, pydantic, zarr: ~1,700) that
    alone took 0.4 s here (0.03 s with the heap frozen), after every result was written and
    every resource closed. ``gc.freeze`` as an exit handler leaves the objects to the OS; the
    other exit handlers run as before. For a process about to end (the CLI, the fork
    server), never a library call.
    """
    atexit.register(gc.freeze)


def dask_setup(worker=None) -> None:
    """Dask's preload hook (called with the worker, which the warm-up does not need)."""
    warm()


def use_forkserver(extra_preload: Sequence[str] = ()) -> bool:
    """Have Dask nannies of this process fork workers from a warm fork server; start it now.

    The server is started with Dask's pre-spawn environment (one BLAS/OpenMP thread per
    worker), which libraries read when they load, and imports :data:`FORKSERVER_PRELOAD`
    and then ``extra_preload``. Each forked worker gets its own environment from its nanny
    as before, after the fork: a preloaded module that reads the environment at import must
    read it again in the worker (a Dask preload's ``dask_setup``). Returns False where fork
    servers do not exist (Windows) or ``DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD``
    chooses a start method; Dask then starts workers as usual.

    There is one fork server per process, so the first call's ``extra_preload`` holds.
    """
    global _forkserver
    if _forkserver is not None:  # the runtime calls it early, the cluster's kwargs again
        return _forkserver
    import multiprocessing
    from multiprocessing import forkserver

    import dask

    # no fork servers (Windows), or the user chose a start method
    if "forkserver" not in multiprocessing.get_all_start_methods() or os.environ.get("DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD"):
        _forkserver = False
        return False
    dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"})
    import distributed.utils

    # distributed would otherwise replace this preload list with its own on first use (and
    # import pandas in this process to build it)
    distributed.utils._forkserver_preload_set = True
    multiprocessing.get_context("forkserver").set_forkserver_preload([*FORKSERVER_PRELOAD, *extra_preload])
    pre_spawn = dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {}
    with _environ({k: str(v) for k, v in pre_spawn.items() if v is not None}):
        forkserver.ensure_running()
    _forkserver = True
    return True


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
