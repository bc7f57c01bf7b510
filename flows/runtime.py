"""What one ``prepare`` run needs around it: a Prefect API its workers reach.

The Dask cluster is not started here: prefect-dask's ``DaskTaskRunner`` starts an embedded
``LocalCluster`` (or a dask-jobqueue cluster, or connects to the scheduler given) when the
flow submits its first task, and closes it when the flow ends.
"""

from __future__ import annotations

import contextlib
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from flows.server import api_host_for, prefect_api

#: How long the check that the workers reach the API waits for a scheduler, and for its
#: first worker (a scheduler without workers yet is not an error: they may join later).
CONNECT_TIMEOUT_SECONDS = 30.0
FIRST_WORKER_SECONDS = 10.0


def run_cluster(scheduler: str | None, catalog: str | None = None, store: str | None = None) -> tuple[str | None, Any, Any]:
    """``(external scheduler address or None, execution.cluster spec or None, the catalog's
    execution settings or None)`` of a run: ``--scheduler`` wins over the catalog's
    ``execution.scheduler`` / ``execution.cluster``."""
    if not catalog:
        return scheduler, None, None
    from pipeline.config.catalog import load_catalog

    ex = load_catalog(catalog, store=store).catalog.execution
    if scheduler:
        return scheduler, None, ex
    address = ex.scheduler_address()
    return address, None if address else ex.cluster, ex


def api_host(scheduler: str | None, cluster: Any = None) -> str:
    """Where the run's own API listens: loopback for an embedded cluster; the address this
    host reaches an external scheduler from; the SLURM scheduler's own address."""
    if scheduler:
        return api_host_for(scheduler)
    if getattr(cluster, "kind", None) == "slurm":
        from flows.slurm import slurm_api_host

        return slurm_api_host(cluster)
    return "127.0.0.1"


@contextlib.contextmanager
def local_runtime(
    scheduler: str | None = None, catalog: str | None = None, store: str | None = None, *, workers: int | None = None,
    dashboard_address: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield ``{"api_url", "scheduler"}`` for :func:`flows.prepare.prepare`.

    The API is the one ``PREFECT_API_URL`` names, else ``prefect server start`` for the
    duration of the block (:func:`flows.server.prefect_api`) on :func:`api_host`. With an
    external scheduler, every worker it has must answer from that API's ``/health`` before
    anything runs (:func:`check_workers_reach`).

    While that API boots, the flow's modules are imported and, for the catalog's embedded
    cluster, its LocalCluster starts (``workers``, the catalog's ``execution`` settings,
    ``dashboard_address``): the yielded ``scheduler`` is then its address, and it closes with
    the block.
    """
    from flows.server import configured_api_url

    external, cluster, ex = run_cluster(scheduler, catalog, store)
    host = "127.0.0.1" if configured_api_url() else api_host(external, cluster)
    started: dict[str, Any] = {}

    def while_booting(url: str) -> None:
        from flows import prepare  # the flow's imports, on the other core while the API boots

        if ex is None or external or getattr(cluster, "kind", "local") != "local":
            return
        started["url"] = url
        started["cluster"] = prepare.start_embedded_cluster(url, workers or ex.workers, ex.threads_per_worker, dashboard_address,
                                                            ex.worker_memory_limit)

    try:
        with prefect_api(host, while_booting=while_booting) as url:
            if external:
                check_workers_reach(external, url)
            embedded = started.get("cluster")
            if embedded is not None and started["url"] != url:  # a retried boot moved the API: the runner starts one
                started.pop("cluster").close()
                embedded = None
            yield {"api_url": url, "scheduler": embedded.scheduler_address if embedded is not None else scheduler}
    finally:
        if started.get("cluster") is not None:
            started["cluster"].close()


def api_answers(url: str) -> str | None:
    """None when ``{url}/health`` answers 200 from where this runs; else why not."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url.rstrip('/')}/health", timeout=10) as r:
            return None if r.status == 200 else f"HTTP {r.status}"
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
        return str(getattr(exc, "reason", exc))


def check_workers_reach(scheduler: str, url: str) -> None:
    """Ask every worker of ``scheduler`` to call the API at ``url``; raise
    :class:`~pipeline.errors.ClusterError` naming those that cannot, and what to set.

    Prefect hands the flow's API URL to the tasks it sends to Dask: a worker that cannot
    reach it would fail every task (``Failed to reach API``) after the run has started.
    """
    from distributed import Client

    from pipeline.errors import ClusterError

    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_SECONDS, set_as_default=False)
    except OSError as exc:
        raise ClusterError(f"cannot connect to the Dask scheduler {scheduler}: {exc}") from None
    with client:
        deadline = time.monotonic() + FIRST_WORKER_SECONDS
        while not client.scheduler_info().get("workers") and time.monotonic() < deadline:
            time.sleep(0.2)
        answers = client.run(api_answers, url)
    failed = {addr: why for addr, why in answers.items() if why is not None}
    if failed:
        names = ", ".join(f"{addr} ({why})" for addr, why in sorted(failed.items()))
        raise ClusterError(
            f"{len(failed)} of {len(answers)} Dask worker(s) of {scheduler} cannot reach this run's Prefect API at {url}: {names}. "
            "Set PREFECT_API_URL to a Prefect server that this host and every worker reach "
            "(docs/operations.md, Running on a cluster)"
        )


def _workers_of(client) -> dict[str, str]:
    """address -> name of every worker the scheduler has now."""
    try:
        info = client.scheduler_info(n_workers=-1)  # distributed >= 2025.4 lists only 5 by default
    except TypeError:  # older: no such parameter, every worker listed
        info = client.scheduler_info()
    return {addr: str(w.get("name", addr)) for addr, w in info.get("workers", {}).items()}


def worker_label(address: str, name: str) -> str:
    """``name (address)``, or the address alone where the name is the address."""
    return address if name in ("", address) else f"{name} ({address})"


class WorkerWatch:
    """The workers a run saw, polled from its Dask client at most every ``interval_seconds``;
    :meth:`lost` names those gone by the end (a host that died, a worker killed)."""

    def __init__(self, client: Any, interval_seconds: float = 1.0) -> None:
        self.client = client
        self.interval_seconds = interval_seconds
        self.seen: dict[str, str] = {}
        self.current: dict[str, str] = {}
        self._last = float("-inf")
        self.poll()

    def poll(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.client is None or (not force and now - self._last < self.interval_seconds):
            return
        self._last = now
        try:
            self.current = _workers_of(self.client)
        except Exception:  # noqa: BLE001 - best effort: the run does not depend on this record
            return
        self.seen.update(self.current)

    def lost(self) -> list[str]:
        self.poll(force=True)
        return sorted(worker_label(a, n) for a, n in self.seen.items() if a not in self.current)


def this_worker() -> str | None:
    """``name (address)`` of the Dask worker this runs on; None outside a worker."""
    from distributed import get_worker

    try:
        w = get_worker()
    except ValueError:
        return None
    return worker_label(w.address, str(w.name))
