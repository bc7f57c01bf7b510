"""What one ``prepare`` run needs around it: a Prefect API.

The Dask cluster is not started here: prefect-dask's ``DaskTaskRunner`` starts an embedded
``LocalCluster`` (or connects to the scheduler given) when the flow submits its first task,
and closes it when the flow ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from flows.server import prefect_api


@contextlib.contextmanager
def local_runtime(scheduler: str | None = None) -> Iterator[dict[str, Any]]:
    """Yield ``{"api_url", "scheduler"}`` for :func:`flows.prepare.prepare`.

    The API is the one ``PREFECT_API_URL`` names, else ``prefect server start`` on a free
    loopback port for the duration of the block (:func:`flows.server.prefect_api`).
    """
    with prefect_api() as url:
        yield {"api_url": url, "scheduler": scheduler}
