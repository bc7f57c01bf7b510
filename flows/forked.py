"""Prefect in the embedded cluster's fork server, and each forked worker's own Prefect settings.

The fork server (:func:`pipeline.run.warmup.use_forkserver`) imports this module, so every
worker forked from it starts with Prefect, prefect-dask's task runner and the flow's tasks
imported: measured here, about 1.1 CPU-s per worker that a fresh import took on the same
2 cores the flow's first tasks need.

Prefect reads its settings from the environment when it is imported, and the fork server
may have been started under another environment than the one a worker's nanny gives it
(a later run in the same process, with its own ``PREFECT_API_URL``). Each embedded worker
preloads this module too; its :func:`dask_setup` runs after the nanny has set the worker's
environment and reads Prefect's settings again when that environment differs.
"""

from __future__ import annotations

import os
import sys


def _prefect_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("PREFECT_")}


_ENV_AT_IMPORT = _prefect_env()

try:
    import prefect.flow_engine  # noqa: F401
    import prefect.task_engine  # noqa: F401
    import prefect_dask.task_runners  # noqa: F401

    import flows.prepare  # noqa: F401
except Exception:  # noqa: BLE001 - a failure must not kill the fork server: each worker's own import raises it
    pass


def dask_setup(worker=None) -> None:
    """Dask's preload hook: Prefect's settings and logging from this worker's environment."""
    import flows.prepare  # noqa: F401 - in a spawned worker, or to raise what the fork server swallowed

    if _prefect_env() == _ENV_AT_IMPORT or "prefect" not in sys.modules:
        return
    from prefect.context import refresh_global_settings_context
    from prefect.logging.configuration import setup_logging

    refresh_global_settings_context()
    setup_logging()
