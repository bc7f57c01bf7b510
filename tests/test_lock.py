"""The store's run lock: exclusive when two runs acquire at once, a dead run's lock taken over,
a live one refused, released only by its owner."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys

import pytest

from pipeline.errors import StoreLockedError
from pipeline.store.location import StoreLocation
from pipeline.store.lock import LOCK_PATH, acquire_lock, check_unlocked, lock_owner, release_lock


def _race(url: str, run_id: str, barrier, results) -> None:
    barrier.wait()
    try:
        acquire_lock(StoreLocation(url), run_id)
        results.put((run_id, "won"))
    except StoreLockedError:
        results.put((run_id, "refused"))


def test_two_runs_acquiring_at_once_never_both_win(tmp_path):
    ctx = mp.get_context("spawn")
    for trial in range(10):
        store = tmp_path / f"s{trial}.zarr"
        store.mkdir()
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_race, args=(str(store), f"run-{k}", barrier, results)) for k in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        outcomes = sorted(results.get(timeout=5)[1] for _ in procs)
        assert outcomes == ["refused", "won"], (trial, outcomes)
        holder = json.loads((store / LOCK_PATH).read_text())
        assert holder["run_id"] in ("run-0", "run-1")


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_dead_runs_lock_is_taken_over_and_a_live_one_refused(tmp_path):
    loc = StoreLocation(str(tmp_path / "s.zarr"))
    (tmp_path / "s.zarr").mkdir()
    stale = {**lock_owner(), "pid": _dead_pid(), "run_id": "dead-run", "since": "2026-01-01T00:00:00+00:00"}
    (tmp_path / "s.zarr" / LOCK_PATH).write_text(json.dumps(stale))
    me = acquire_lock(loc, "new-run")
    assert me["took_over_from"] == "dead-run"
    assert json.loads((tmp_path / "s.zarr" / LOCK_PATH).read_text())["run_id"] == "new-run"
    assert sorted(os.listdir(tmp_path / "s.zarr")) == [LOCK_PATH]  # nothing set aside is left behind
    # held by a live run on another host: refused, naming the holder
    with pytest.raises(StoreLockedError, match="locked by run new-run"):
        _acquire_as_other(loc)
    release_lock(loc, "someone-else")  # not the owner: the lock stays
    with pytest.raises(StoreLockedError, match="locked by run new-run"):
        check_unlocked(loc)  # live: its owner (this process) runs
    release_lock(loc, "new-run")
    assert check_unlocked(loc) is None


def _acquire_as_other(loc: StoreLocation) -> None:
    """A lock held by a live process on another host cannot be taken."""
    held = json.loads(open(os.path.join(loc.url, LOCK_PATH)).read())
    with open(os.path.join(loc.url, LOCK_PATH), "w") as f:
        json.dump({**held, "host": "another-host"}, f)
    try:
        acquire_lock(loc, "other-run")
    finally:
        with open(os.path.join(loc.url, LOCK_PATH), "w") as f:
            json.dump(held, f)
