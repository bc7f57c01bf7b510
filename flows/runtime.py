"""The local runtime of one ``prepare`` run: a Prefect API and the Dask cluster.

Both take seconds to start, so they start together: the API server process is spawned
first, and this process's imports and the embedded LocalCluster's workers (which warm up:
imports, feature kernels) start while it boots. With
``PREFECT_API_URL`` set (a running server, as under a deployment) no API is started; with a
scheduler address no cluster is started.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from flows.server import prefect_api


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

            use_forkserver()  # the workers' fork server warms up while this process imports
        # Prefect, Dask and the task code: seconds of imports, paid while the API boots
        from flows.prepare import local_cluster_kwargs

        if chosen["scheduler"]:
            return
        from distributed import LocalCluster

        cluster["c"] = LocalCluster(**local_cluster_kwargs(w, t or 1))

    try:
        with prefect_api(while_starting=start_cluster) as url:
            c = cluster.get("c")
            try:
                yield {"api_url": url, "scheduler": c.scheduler_address if c else chosen["scheduler"], "dashboard": c.dashboard_link if c else None}
            finally:
                # workers go first: they may still be shipping logs to the API
                if c is not None:
                    c.close()
    finally:
        if "c" in cluster:  # also when the API failed to start; close() is idempotent
            cluster["c"].close()
