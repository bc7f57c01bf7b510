"""The ``prepare`` flow: catalog -> partitions on Dask -> committed store version.

It only wires ``pipeline`` calls into Prefect tasks. Probing and partitions run on Dask
through prefect-dask (an embedded LocalCluster of worker processes, or an existing
scheduler); discovery, planning and the commit run in the flow's process.
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections.abc import Callable, Iterable
from typing import Any

from distributed import KilledWorker
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.utilities.annotations import quote
from prefect_dask import DaskTaskRunner

from flows import hooks
from flows.runtime import WorkerWatch, this_worker
from pipeline.config.catalog import load_catalog
from pipeline.io.discovery import probe_headers
from pipeline.io.fs import is_remote
from pipeline.quality.duplicates import reduce_bucket, reduction_inputs
from pipeline.report.summary import markdown_summary, reject_table_rows
from pipeline.run import commit, crashes, planner, steps
from pipeline.run.allocator import worker_malloc_environ
from pipeline.run.crashes import Attempt
from pipeline.run.partition import process_partition
from pipeline.store.lock import hold_lock
from pipeline.store.state import read_state

TASK_OPTS = dict(cache_policy=NO_CACHE, persist_result=False)


class Packed:
    """A task argument or result Prefect does not walk for futures (plans hold thousands of
    records and no futures; docs/performance.md). In-flow tasks take ``quote(...)``; tasks
    submitted to Dask take ``Packed``, whose contents prefect-dask does not walk either."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


# Each task's function is a module-level name of its own, so it pickles by reference, not by
# value with every function it references.
def _discover(loaded):
    return Packed(steps.discover(loaded))


def _probe(batch: Packed, options: dict, index: int = 0):
    return Packed(probe_headers(batch.value, options))


def _plan(loaded, refs, headers, banks, location, run_id, previous):
    return Packed(planner.build_plan(loaded, refs, headers, banks, location=location, run_id=run_id, previous=previous))


def _prepare_store(plan):
    commit.prepare_store(plan)


def _partition(spec: Packed, ctx: Packed, index: int, attempt: Attempt | None = None):
    attempt = attempt or Attempt()
    result = process_partition(spec.value, ctx.value, trace=attempt.trace, excluded=attempt.excluded_map())
    worker = this_worker()
    if worker:  # in the task run's logs: which host did which partition
        get_run_logger().info("partition %05d on Dask worker %s", index, worker)
    return {**result, "worker": worker}


def report_dir(store_url: str, version: int) -> str:
    """Where a run writes the figures of the version it committed (a local store only)."""
    return f"{store_url}.report/v{version:05d}"


def _report(store_url: str, version: int) -> str:
    from pipeline.report.figures import markdown_report  # matplotlib: imported only when reporting

    return markdown_report(store_url, out=report_dir(store_url, version))


def _duplicates(location, ids: Packed, bucket: int, n_buckets: int, cfg):
    return Packed(reduce_bucket(location, ids.value, bucket, n_buckets, cfg))


def _commit(plan, wall_seconds, duplicate_edges=None):
    return commit.commit_run(plan, wall_seconds=wall_seconds, duplicate_edges=duplicate_edges)


# Results of thousands of records come back Packed: Prefect would link each item to the task's state.
discover_task = task(name="discover-sources", **TASK_OPTS)(_discover)
probe_task = task(name="probe-headers", task_run_name="probe-headers-{index}", retries=2, retry_delay_seconds=[1, 5], **TASK_OPTS)(_probe)
plan_task = task(name="plan-run", **TASK_OPTS)(_plan)
prepare_store_task = task(name="prepare-store", **TASK_OPTS)(_prepare_store)
# retries come from the catalog (execution.retries, execution.retry_delay_seconds)
partition_task = task(name="partition", task_run_name="partition-{index:05d}", **TASK_OPTS)(_partition)
report_task = task(name="write-report", **TASK_OPTS)(_report)
commit_task = task(name="commit-version", **TASK_OPTS)(_commit)
duplicates_task = task(name="duplicate-index", task_run_name="duplicate-index-{bucket}", retries=2, retry_delay_seconds=[2, 10], **TASK_OPTS)(_duplicates)


def submit_taking_results(
    submit: Callable[[Any, Attempt], PrefectFuture],
    items: Iterable[Any],
    on_result: Callable[[Any], None],
    on_crash: Callable[[Any, Attempt, BaseException], Attempt] | None = None,
) -> int:
    """Submit one task per item, and hand each result to ``on_result`` as soon as its task is
    done, also while later items are still being submitted. Returns the number of items.

    A run of thousands of partitions spends minutes submitting; results and progress start
    with the first. A failed task raises here, as ``PrefectFuture.result`` does, except a
    task whose workers died (``KilledWorker``): ``on_crash`` says how to submit it again
    (pipeline.run.crashes), or raises.
    """
    done: queue.SimpleQueue = queue.SimpleQueue()
    pending = 0

    def launch(item: Any, attempt: Attempt) -> None:
        fut = submit(item, attempt)
        fut.add_done_callback(lambda f: done.put((item, attempt, f)))

    def take(entry: tuple[Any, Attempt, PrefectFuture]) -> bool:
        item, attempt, fut = entry
        try:
            result = fut.result()
        except KilledWorker as exc:
            if on_crash is None:
                raise
            launch(item, on_crash(item, attempt, exc))
            return False
        on_result(result)
        return True

    submitted = 0
    for item in items:
        launch(item, Attempt())
        submitted += 1
        pending += 1
        while not done.empty():  # this loop is the queue's only consumer
            pending -= take(done.get())
    while pending:
        pending -= take(_next_done(done))
    return submitted


def _next_done(done: queue.SimpleQueue) -> Any:
    # in short waits: a blocking get would hold off a Ctrl-C until the next result, and there is
    # none when the interrupted workers are gone
    while True:
        try:
            return done.get(timeout=0.2)
        except queue.Empty:
            continue


#: Dask settings for the embedded cluster, applied only while the run's cluster is built (a
#: ``dask.config.set`` block) and sent to its workers. Its scheduler and nannies run in the
#: flow's process on the cores the workers compute on: housekeeping every 500 ms instead of
#: 20/100 ms, and the statistical profiler (the dashboard's Profile page, sampling every
#: worker thread 100 times a second) off. A value the user configured is kept.
EMBEDDED_DEFAULTS = {
    "distributed.admin.tick.interval": ("20ms", "500ms"),
    "distributed.worker.memory.monitor-interval": ("100ms", "500ms"),
    "distributed.worker.profile.enabled": (True, False),
}


def embedded_cluster_config() -> dict[str, Any]:
    """The :data:`EMBEDDED_DEFAULTS` still at Dask's default, with their new values, and
    the allocator environment for the workers' start (Dask's ``pre-spawn-environ``)."""
    import dask

    config = {key: new for key, (default, new) in EMBEDDED_DEFAULTS.items() if dask.config.get(key, default=None) in (default, None)}
    for name, value in worker_malloc_environ().items():
        config[f"distributed.nanny.pre-spawn-environ.{name}"] = value
    return config


#: Where the embedded cluster's dashboard listens: loopback only, any free port. It has no
#: authentication; ``audioprep run --dashboard-address 0.0.0.0:8787`` opens it to the network.
DASHBOARD_ADDRESS = "127.0.0.1:0"


def local_cluster_kwargs(
    workers: int | None, threads_per_worker: int = 1, dashboard_address: str | None = None, memory_limit: str | None = None,
    api_url: str | None = None,
) -> dict[str, Any]:
    """An embedded LocalCluster of worker processes that report to this run's Prefect API
    (``api_url``, default the one Prefect's settings name), warm up while they start
    (``pipeline.run.warmup`` preload), and serve their dashboard on ``dashboard_address``
    (default :data:`DASHBOARD_ADDRESS`)."""
    from prefect.settings import get_current_settings

    env = {k: v for k, v in os.environ.items() if k.startswith("PREFECT_")}
    url = api_url or get_current_settings().api.url
    if url:  # never one server per worker: every worker reports to this run's API
        env["PREFECT_API_URL"] = str(url)
    return {
        "n_workers": workers or os.cpu_count() or 1,
        "threads_per_worker": threads_per_worker,
        "processes": True,
        "dashboard_address": dashboard_address or DASHBOARD_ADDRESS,
        "silence_logs": logging.WARNING,
        "env": env,
        "preload": ["pipeline.run.warmup", "flows.embedded_worker"],
        **({"memory_limit": memory_limit} if memory_limit else {}),
        "config": {k: v for k, v in embedded_cluster_config().items() if not k.startswith("distributed.nanny.")},
    }


def task_runner(
    workers: int | None,
    scheduler: str | None,
    threads_per_worker: int = 1,
    dashboard_address: str | None = None,
    memory_limit: str | None = None,
    cluster: Any = None,
) -> DaskTaskRunner:
    """prefect-dask's runner on an existing scheduler, on SLURM jobs (``cluster`` of kind
    ``slurm``: :mod:`flows.slurm`), or on an embedded LocalCluster."""
    if scheduler:
        return DaskTaskRunner(address=scheduler)
    if getattr(cluster, "kind", None) == "slurm":
        from flows.slurm import slurm_runner

        return slurm_runner(cluster, dashboard_address)
    kwargs = local_cluster_kwargs(workers, threads_per_worker, dashboard_address, memory_limit)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=kwargs)


def start_embedded_cluster(api_url: str, workers: int | None, threads_per_worker: int = 1, dashboard_address: str | None = None,
                           memory_limit: str | None = None):
    """The embedded LocalCluster of :func:`local_cluster_kwargs`, started now: ``audioprep run``
    starts it while its API boots and hands its address to :func:`prepare`."""
    import dask
    from distributed import LocalCluster

    kwargs = local_cluster_kwargs(workers, threads_per_worker, dashboard_address, memory_limit, api_url=api_url)
    with dask.config.set(embedded_cluster_config()):
        return LocalCluster(**kwargs)


def _runner_client():
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    runner = getattr(ctx, "task_runner", None) if ctx else None
    return runner.client if isinstance(runner, DaskTaskRunner) else None


def _worker_threads() -> int:
    """Threads of the run's Dask workers now (1 without a Dask client)."""
    client = _runner_client()
    if client is None:
        return 1
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:  # noqa: BLE001 - only sizes the reduction; one bucket is always correct
        return 1


def _dashboard_link() -> str | None:
    return getattr(_runner_client(), "dashboard_link", None)


def _run_on_dask(catalog_path: str, store: str | None, run_id: str) -> dict[str, Any]:
    # parameters are stored by the Prefect API: pass the path, never the resolved catalog (secrets)
    t0 = time.perf_counter()
    loaded = load_catalog(catalog_path, store=store)
    logger = get_run_logger()
    location = steps.store_location(loaded, store)
    refs, banks = discover_task(loaded).value
    opts = steps.source_options(loaded)
    with hold_lock(location, run_id):
        # the committed state is read once, under the lock, for both probing and planning
        previous = read_state(location)
        to_probe = planner.refs_needing_probe(refs, previous)
        ex = loaded.catalog.execution
        if steps.probe_in_flow(to_probe, ex.probe_in_flow_files):
            headers = {h.example_id: h for h in probe_task(Packed(to_probe), opts).value}
        else:
            headers = {}
            batches = steps.probe_batches(to_probe, ex.probe_batch_files)
            for fut in [probe_task.submit(Packed(b), opts, index=i) for i, b in enumerate(batches)]:
                headers.update((h.example_id, h) for h in fut.result().value)
        plan = plan_task(quote(loaded), quote(refs), quote(headers), quote(banks), quote(location), run_id, quote(previous)).value
        del headers
        if plan.up_to_date:
            logger.info("store %s is up to date: no new or changed files, no feature work", location.url)
            return steps.up_to_date_summary(plan, time.perf_counter() - t0)
        logger.info("%d partition(s), %.2f h of audio to process", len(plan.partitions), plan.planned_audio_seconds / 3600)
        hooks.emit("plan", plan)
        link = _dashboard_link()  # the embedded cluster starts here, at the runner's first use
        if link:
            logger.info("Dask dashboard: %s", link)
        hooks.emit("ready", link)
        prepare_store_task(quote(plan))
        ctx = Packed(plan.ctx)
        partition = partition_task.with_options(retries=ex.retries, retry_delay_seconds=ex.retry_delay_seconds)
        done = {"skipped": 0, "seconds": 0.0}
        watch, by_worker = WorkerWatch(_runner_client()), {}

        def on_result(r: dict[str, Any]) -> None:
            # a partition committed by an interrupted run is skipped, and its audio is not processed again
            done["skipped" if r["skipped"] else "seconds"] += 1 if r["skipped"] else r["audio_seconds"]
            by_worker[r.get("worker")] = by_worker.get(r.get("worker"), 0) + 1
            watch.poll()
            hooks.emit("partition", r)

        submit_taking_results(
            lambda p, attempt: partition.submit(Packed(p), ctx, index=p.index, attempt=attempt),
            plan.partitions,
            on_result,
            on_crash=lambda p, attempt, exc: crashes.next_attempt(location, p, attempt, exc),
        )
        # the duplicate index: a reduction over every partition's fingerprints, bucket by bucket on Dask
        ids, n_buckets = reduction_inputs(plan, min_buckets=_worker_threads())
        futures = [duplicates_task.submit(location, Packed(ids), b, n_buckets, loaded.catalog.duplicates) for b in range(n_buckets)]
        edges = [e for f in futures for e in f.result().value]
        summary = commit_task(quote(plan), time.perf_counter() - t0, quote(edges))
        return {**summary, "partitions_already_done": done["skipped"], "processed_audio_seconds": done["seconds"],
                "skipped_symlinks": getattr(refs, "skipped_symlinks", 0), "lost_workers": watch.lost(),
                "partitions_per_worker": {str(k): n for k, n in sorted(by_worker.items(), key=lambda kv: str(kv[0]))}}


run_on_dask = flow(name="prepare-partitions", log_prints=False)(_run_on_dask)


@flow(name="prepare", log_prints=False)
def prepare(
    catalog_path: str,
    store: str | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    report: bool = True,
    dashboard_address: str | None = None,
) -> dict[str, Any]:
    """Prepare the dataset described by ``catalog_path`` into its Zarr store.

    With ``report`` (and a local store), the figures of ``audioprep report`` are written
    beside the store (``<store>.report/vNNNNN/``) and published as a markdown artifact.
    """
    loaded = load_catalog(catalog_path, store=store)
    ex = loaded.catalog.execution
    scheduler = scheduler or ex.scheduler_address()
    cluster = None if scheduler else ex.cluster
    runner = task_runner(workers or ex.workers, scheduler, ex.threads_per_worker, dashboard_address, ex.worker_memory_limit, cluster=cluster)
    import dask

    with dask.config.set(embedded_cluster_config() if not scheduler and getattr(cluster, "kind", "local") == "local" else {}):
        summary = run_on_dask.with_options(task_runner=runner)(catalog_path, store, planner.new_run_id())
    if not summary.get("up_to_date"):
        create_markdown_artifact(markdown_summary(summary), key="audioprep-summary", description="audioprep run summary")
        if report and not is_remote(summary["store"]):
            md = report_task(summary["store"], summary["version"])
            summary["report"] = report_dir(summary["store"], summary["version"])
            create_markdown_artifact(md, key="audioprep-report", description="figures of the new store version")
        rows = reject_table_rows(summary)
        if rows:
            create_table_artifact(rows, key="audioprep-rejects", description="files rejected by this run")
    return summary


if __name__ == "__main__":
    import sys

    from flows.runtime import local_runtime

    with local_runtime() as rt:
        print(prepare(sys.argv[1], scheduler=rt["scheduler"]))
