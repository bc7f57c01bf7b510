"""One local Prefect API for a run: the flow, and every Dask worker, report to it."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

# quiet: local servers must not try to reach the internet (field-notes.md)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """Use ``PREFECT_API_URL`` when set; otherwise start a local API server for the duration.

    The URL is exported in the environment so that worker processes started afterwards
    (a LocalCluster's nannies) inherit it instead of each starting a server of their own.
    """
    url = os.environ.get("PREFECT_API_URL")
    if url:
        yield url
        return
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = SubprocessASGIServer()
    server.start(timeout=60)
    url = server.api_url
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings({PREFECT_API_URL: url}):
            yield url
    finally:
        _flush_logs()
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


def _flush_logs() -> None:
    # logs still queued for the API would otherwise retry against a stopped server at exit
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)
    except Exception:  # noqa: BLE001 - best effort
        pass
