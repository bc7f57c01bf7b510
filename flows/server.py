"""One local Prefect API for a run: the flow, and every Dask worker, report to it."""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Callable, Iterator

# quiet: local servers must not try to reach the internet (field-notes.md)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@contextlib.contextmanager
def prefect_api(while_starting: Callable[[str], Any] | None = None) -> Iterator[str]:
    """Use ``PREFECT_API_URL`` when set; otherwise start a local API server for the duration.

    The URL is exported in the environment so that worker processes started afterwards
    (a LocalCluster's nannies) inherit it instead of each starting a server of their own.
    ``while_starting(url)`` runs while the server boots (seconds), e.g. to start the cluster.
    """
    url = os.environ.get("PREFECT_API_URL")
    if url:
        if while_starting:
            while_starting(url)
        yield url
        return
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = SubprocessASGIServer(port=SubprocessASGIServer().find_available_port())
    url = server.api_url
    os.environ["PREFECT_API_URL"] = url
    failure: list[BaseException] = []

    def boot() -> None:
        try:
            server.start(timeout=60)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(exc)

    booting = threading.Thread(target=boot, name="prefect-api-start", daemon=True)
    booting.start()
    try:
        if while_starting:
            while_starting(url)
    finally:
        booting.join()
    if failure:
        os.environ.pop("PREFECT_API_URL", None)
        raise failure[0]
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
