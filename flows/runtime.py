"""The local runtime of one ``prepare`` run: a Prefect API and the Dask cluster.

Both take seconds to start, so they start together: the embedded LocalCluster's workers
spawn and warm up (imports, feature kernels) while the Prefect API boots. With
``PREFECT_API_URL`` set (a running server, as under a deployment) no API is started; with a
scheduler address no cluster is started.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from flows.server import prefect_api


@contextlib.contextmanager
def local_runtime(workers: int | None, scheduler: str | None, threads_per_worker: int = 1) -> Iterator[dict[str, Any]]:
    """Yield ``{"api_url", "scheduler", "dashboard"}`` for :func:`flows.prepare.prepare`.

    Parameters
    ----------
    workers : embedded cluster size (None: one per core); ignored with ``scheduler``.
    scheduler : address of an existing Dask scheduler, or None for an embedded LocalCluster.
    threads_per_worker : threads of each embedded worker.
    """
    from flows.prepare import local_cluster_kwargs

    cluster: dict[str, Any] = {}

    def start_cluster(_url: str) -> None:
        if scheduler:
            return
        from distributed import LocalCluster

        cluster["c"] = LocalCluster(**local_cluster_kwargs(workers, threads_per_worker))

    try:
        with prefect_api(while_starting=start_cluster) as url:
            c = cluster.get("c")
            try:
                yield {"api_url": url, "scheduler": c.scheduler_address if c else scheduler, "dashboard": c.dashboard_link if c else None}
            finally:
                # workers go first: they may still be shipping logs to the API
                if c is not None:
                    c.close()
    finally:
        if "c" in cluster:  # also when the API failed to start; close() is idempotent
            cluster["c"].close()
