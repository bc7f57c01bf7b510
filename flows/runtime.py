"""The local runtime of one ``prepare`` run: a Prefect API and the Dask cluster.

Both take seconds to start, so they start together: the API server process is spawned
first, and this process's imports and the embedded LocalCluster's workers (which warm up:
imports, feature kernels) start while it boots. The runtime does not wait for the workers:
the flow starts (flow run, discovery) while they come up, and its first tasks queue on the
scheduler until they have. With ``PREFECT_API_URL`` set (a running server, as under a
deployment) no API is started; with a scheduler address no cluster is started.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

from flows import heartbeat
from flows.server import prefect_api

#: What the embedded cluster's fork server imports besides the pipeline: Prefect and the
#: flow's tasks (:mod:`flows.forked`).
FORKSERVER_PRELOAD = ("flows.forked",)

#: How long the embedded cluster's workers may take to start before the cluster is closed
#: (so that a run whose workers cannot start fails instead of waiting for them).
WORKER_START_TIMEOUT_SECONDS = 120.0

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def local_runtime(
    workers: int | None = None, scheduler: str | None = None, threads_per_worker: int | None = None, *, catalog_path: str | None = None
) -> Iterator[dict[str, Any]]:
    """Yield ``{"api_url", "scheduler", "dashboard"}`` for :func:`flows.prepare.prepare`.

    Parameters
    ----------
    workers : embedded cluster size (None: the catalog's ``execution.workers``, else one per core);
        ignored with a scheduler.
    scheduler : address of an existing Dask scheduler (None: the catalog's ``execution.scheduler``,
        else an embedded LocalCluster).
    threads_per_worker : threads of each embedded worker (None: the catalog's, else 1).
    catalog_path : catalog whose ``execution`` section fills what is not given. It is read, and
        the flow code imported, while the API boots.
    """
    cluster: dict[str, Any] = {}
    chosen: dict[str, Any] = {"scheduler": scheduler}

    def start_cluster(_url: str) -> None:
        w, t = workers, threads_per_worker
        if catalog_path:
            from pipeline.config.catalog import load_catalog

            ex = load_catalog(catalog_path).catalog.execution
            w, t, chosen["scheduler"] = w or ex.workers, t or ex.threads_per_worker, chosen["scheduler"] or ex.scheduler
        if not chosen["scheduler"]:
            from pipeline.run.warmup import use_forkserver

            use_forkserver(FORKSERVER_PRELOAD)  # the workers' fork server warms up while this process imports
        # Prefect, Dask and the task code: seconds of imports, paid while the API boots; and
        # what Prefect imports at the first flow call (serializing its parameters: 0.18 s)
        import fastapi.encoders  # noqa: F401

        from flows.prepare import local_cluster_kwargs

        if chosen["scheduler"]:
            return
        from distributed import LocalCluster

        kwargs = local_cluster_kwargs(w, t or 1)
        n = kwargs.pop("n_workers")
        # the scheduler now, the workers in the background: scale() returns at once
        cluster["c"] = c = LocalCluster(n_workers=0, **kwargs)
        c.scale(n)
        threading.Thread(target=_watch_workers, args=(c, n), name="audioprep-worker-start", daemon=True).start()

    try:
        with prefect_api(while_starting=start_cluster) as url:
            c = cluster.get("c")
            try:
                # heartbeats that do not hold the end of each run for up to 1 s (flows.heartbeat)
                with heartbeat.take_over():
                    yield {"api_url": url, "scheduler": c.scheduler_address if c else chosen["scheduler"], "dashboard": c.dashboard_link if c else None}
            finally:
                # workers go first: they may still be shipping logs to the API
                if c is not None:
                    c.close()
    finally:
        if "c" in cluster:  # also when the API failed to start; close() is idempotent
            cluster["c"].close()


def _watch_workers(cluster, n: int, timeout: float = WORKER_START_TIMEOUT_SECONDS) -> None:
    """Close ``cluster`` if its ``n`` workers do not all start within ``timeout``: the flow's
    tasks then fail (the scheduler is gone) instead of waiting for workers that never come."""
    from distributed.core import Status

    try:
        cluster.wait_for_workers(n, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - TimeoutError, or the cluster closed meanwhile
        if cluster.status in (Status.closing, Status.closed):
            return  # the run ended first (an up-to-date store needs no workers)
        logger.error(
            "the embedded Dask cluster started %d of %d workers within %.0f s (%s); closing it. "
            "Check the workers' errors above, or run with --scheduler on a cluster of your own",
            len(cluster.scheduler_info.get("workers", {})), n, timeout, exc,
        )
        cluster.close()
