"""The steps of a run as plain functions, so flows only wire them and tests call them directly.

``run_catalog`` chains them with any ``map``-like executor (the builtin ``map`` for a
single process); the Prefect flow in ``flows/prepare.py`` runs the same steps as tasks on
Dask.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from pipeline.config.catalog import LoadedCatalog
from pipeline.errors import SourceError
from pipeline.io.discovery import FileRef, Header, SourceListing, list_source, probe_headers
from pipeline.io.fs import is_remote
from pipeline.run.commit import commit_run, prepare_store
from pipeline.run.partition import process_partition
from pipeline.run.planner import RunPlan, build_plan, new_run_id, refs_needing_probe
from pipeline.store.location import StoreLocation
from pipeline.store.lock import hold_lock
from pipeline.store.state import read_state


def store_location(loaded: LoadedCatalog, store: str | None = None) -> StoreLocation:
    out = loaded.catalog.output
    return StoreLocation(store or out.store, dict(out.storage_options))


def discover(loaded: LoadedCatalog) -> tuple[list[FileRef], list[FileRef]]:
    """List every source. Returns (example files, augmentation bank files).

    Raises SourceError naming the source key when a root is missing or matches nothing.
    """
    examples = SourceListing()  # its skipped_symlinks: the links of every source not followed
    banks: list[FileRef] = []
    problems = []
    for i, src in enumerate(loaded.catalog.sources):
        try:
            refs = list_source(src, index=i)
        except SourceError as exc:
            problems.append(f"sources.{i} ({src.name}): {exc}")
            continue
        examples.skipped_symlinks += refs.skipped_symlinks
        if not refs:
            problems.append(f"sources.{i}.pattern: `{src.pattern}` matches no file under {src.url}; check the pattern and the folder")
            continue
        (examples if src.role == "examples" else banks).extend(refs)
    if problems:
        raise SourceError("\n".join(problems))
    return examples, banks


def probe_batches(refs: list[FileRef], batch_files: int) -> list[list[FileRef]]:
    return [refs[i : i + batch_files] for i in range(0, len(refs), batch_files)]


def probe_in_flow(refs: list[FileRef], max_files: int) -> bool:
    """Whether to read these headers in the flow's process: few enough, and all local.

    A local header costs about 0.1 ms to read; a Dask task costs tens of milliseconds of
    orchestration, and an embedded cluster's workers may still be starting. Remote headers
    are network round trips, which the workers overlap.
    """
    return 0 < len(refs) <= max_files and not any(is_remote(r.url) for r in refs)


def source_options(loaded: LoadedCatalog) -> dict[str, dict[str, Any]]:
    return {s.name: dict(s.storage_options) for s in loaded.catalog.sources}


def run_catalog(
    loaded: LoadedCatalog,
    *,
    store: str | None = None,
    map_fn: Callable[..., Iterable[Any]] = map,
    run_id: str | None = None,
    on_partition: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every step in this process (or through ``map_fn``); return the run summary."""
    t0 = time.perf_counter()
    loc = store_location(loaded, store)
    run_id = run_id or new_run_id()
    refs, banks = discover(loaded)
    opts = source_options(loaded)
    with hold_lock(loc, run_id):
        # the committed state is read once, under the lock, for both probing and planning
        previous = read_state(loc)
        headers: dict[str, Header] = {}
        to_probe = refs_needing_probe(refs, previous)
        for batch in map_fn(lambda b: probe_headers(b, opts), probe_batches(to_probe, loaded.catalog.execution.probe_batch_files)):
            headers.update((h.example_id, h) for h in batch)
        plan = build_plan(loaded, refs, headers, banks, location=loc, run_id=run_id, previous=previous)
        if plan.up_to_date:
            return up_to_date_summary(plan, time.perf_counter() - t0)
        prepare_store(plan)
        for result in map_fn(lambda p: process_partition(p, plan.ctx), plan.partitions):
            if on_partition:
                on_partition(result)
        return commit_run(plan, wall_seconds=time.perf_counter() - t0)


def up_to_date_summary(plan: RunPlan, wall_seconds: float) -> dict[str, Any]:
    prev = plan.previous
    last = prev.meta["versions"][-1] if prev and prev.meta.get("versions") else {}
    return {
        **last,
        "up_to_date": True,
        "wall_seconds": wall_seconds,
        "store": plan.store_url,
        "processed_audio_seconds": 0.0,
        "partitions": 0,
        "reject_rows": [],
    }
