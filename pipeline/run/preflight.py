"""What a run can answer before any Prefect API or Dask cluster starts.

A locked store or one written with other settings is refused in seconds, and a store that
already holds every listed file answers "up to date" without starting anything.
"""

from __future__ import annotations

import time
from typing import Any

from pipeline.config.catalog import LoadedCatalog
from pipeline.run import steps
from pipeline.run.planner import build_plan, check_fingerprint, fingerprint, make_run_layout, refs_needing_probe
from pipeline.store.lock import check_unlocked
from pipeline.store.state import read_state


def preflight(loaded: LoadedCatalog, store: str | None = None) -> dict[str, Any] | None:
    """Check the store before a run starts its runtime.

    Returns the up-to-date summary (as the flow returns it) when the store already holds
    every listed file with the catalog's settings; None when the run has work to do or a new
    store to write. Raises :class:`~pipeline.errors.StoreLockedError` when a live run holds
    the lock, :class:`~pipeline.errors.StoreError` when the store was written with other
    settings, :class:`~pipeline.errors.SourceError` when a source cannot be listed.

    The flow checks all of this again under the lock: this answers early, it does not guard.
    """
    t0 = time.perf_counter()
    location = steps.store_location(loaded, store)
    check_unlocked(location)
    previous = read_state(location)
    if previous is None:
        return None
    check_fingerprint(previous, fingerprint(loaded, make_run_layout(loaded, previous)), location, loaded)
    refs, banks = steps.discover(loaded)
    if refs_needing_probe(refs, previous):
        return None
    plan = build_plan(loaded, refs, {}, banks, location=location, previous=previous)
    if not plan.up_to_date:
        return None
    return steps.up_to_date_summary(plan, time.perf_counter() - t0)
