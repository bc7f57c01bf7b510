"""The lock as a lease: liveness by the store's own clock, never by a pid another namespace
owns; exclusive create and takeover on S3 (moto honours If-None-Match); fencing at commit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

from pipeline.errors import LockLostError, StoreLockedError
from pipeline.store.location import StoreLocation
from pipeline.store.lock import LOCK_PATH, acquire_lock, check_unlocked, hold_lock, lock_owner, release_lock, verify_held
from pipeline.store.verify import unlock_store
from tests.s3util import BUCKET, all_objects, resolved_options, s3_endpoint  # noqa: F401


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _write_lock(store, lock, *, age_seconds: float = 0.0) -> None:
    path = store / LOCK_PATH
    path.write_text(json.dumps(lock))
    if age_seconds:
        t = time.time() - age_seconds
        os.utime(path, (t, t))


def test_a_container_sharing_the_hostname_cannot_take_a_live_lock(tmp_path):
    """Same hostname, other pid namespace: the owner's pid means nothing here, so the lease decides."""
    store = tmp_path / "s.zarr"
    store.mkdir()
    loc = StoreLocation(str(store))
    other = {**lock_owner(), "pid": _dead_pid(), "pid_ns": "pid:[4026531999]", "run_id": "in-container", "lease_seconds": 30.0}
    _write_lock(store, other)
    with pytest.raises(StoreLockedError, match="locked by run in-container"):
        acquire_lock(loc, "mine")
    with pytest.raises(Exception, match="not unlocked"):
        unlock_store(loc)
    assert json.loads((store / LOCK_PATH).read_text())["run_id"] == "in-container"
    # the same lock, unrefreshed for longer than its lease: taken over
    _write_lock(store, other, age_seconds=31)
    me = acquire_lock(loc, "mine")
    assert me["took_over_from"] == "in-container"
    assert json.loads((store / LOCK_PATH).read_text())["token"] == me["token"]


def test_another_hosts_lock_lives_while_fresh_and_lapses_after_its_lease(tmp_path):
    store = tmp_path / "s.zarr"
    store.mkdir()
    loc = StoreLocation(str(store))
    remote = {"host": "node-17", "pid": 1, "run_id": "far-away", "lease_seconds": 30.0}
    _write_lock(store, remote, age_seconds=29)
    with pytest.raises(StoreLockedError, match="lapses 30 s after its owner stops"):
        check_unlocked(loc)
    _write_lock(store, remote, age_seconds=31)
    assert check_unlocked(loc) == remote  # stale: the next run takes it over
    assert unlock_store(loc) == remote  # and unlock needs no --force


def test_the_owner_keeps_its_lease_fresh(tmp_path):
    store = tmp_path / "s.zarr"
    loc = StoreLocation(str(store))
    with hold_lock(loc, "holder", lease_seconds=0.8) as lease:
        first = json.loads((store / LOCK_PATH).read_text())
        for _ in range(6):  # 2.4 s: three leases long, refreshed every 0.2 s
            time.sleep(0.4)
            with pytest.raises(StoreLockedError):
                acquire_lock(loc, "intruder")
        beats = json.loads((store / LOCK_PATH).read_text())["beat"]
        assert beats >= 5 and first["beat"] == 0
        lease.verify()
    assert not (store / LOCK_PATH).exists()


_PAUSED_OWNER = textwrap.dedent(
    """
    import pathlib, sys, time
    from pipeline.errors import LockLostError
    from pipeline.store.location import StoreLocation
    from pipeline.store.lock import hold_lock
    store, flag = sys.argv[1], pathlib.Path(sys.argv[2])
    with hold_lock(StoreLocation(store), "paused-run", lease_seconds=1.0) as lease:
        print("held", flush=True)
        while not flag.exists():
            time.sleep(0.05)
        try:
            lease.verify()
            print("still-held", flush=True)
        except LockLostError as exc:
            print("LOST", exc, flush=True)
    """
)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and util-linux unshare for a pid namespace")
def test_a_paused_owner_in_a_container_loses_its_lease_and_cannot_commit(tmp_path):
    """The owner runs in its own pid namespace (a container on this host). SIGSTOP it past its
    lease: another run takes over; the resumed owner finds out before it commits (fencing)."""
    store, flag = tmp_path / "s.zarr", tmp_path / "go"
    loc = StoreLocation(str(store))
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(["unshare", "--pid", "--fork", sys.executable, "-c", _PAUSED_OWNER, str(store), str(flag)],
                            stdout=subprocess.PIPE, text=True, env=env)
    owner = None
    try:
        assert proc.stdout.readline().strip() == "held"
        owner = psutil.Process(proc.pid).children()[0]
        held = json.loads((store / LOCK_PATH).read_text())
        assert held["run_id"] == "paused-run" and held["pid"] != owner.pid  # a pid of another namespace
        with pytest.raises(StoreLockedError):
            acquire_lock(loc, "successor")  # its lease is fresh
        owner.suspend()  # SIGSTOP: no more refreshes
        time.sleep(1.4)
        me = acquire_lock(loc, "successor")
        assert me["took_over_from"] == "paused-run"
        flag.touch()
        owner.resume()
        out, _ = proc.communicate(timeout=30)
        assert out.startswith("LOST store ") and "run paused-run no longer holds the store's lock (run successor" in out
        assert json.loads((store / LOCK_PATH).read_text())["token"] == me["token"]  # the owner's exit left it alone
        verify_held(loc, me)
        with pytest.raises(LockLostError, match="Nothing was committed"):
            verify_held(loc, "paused-run")
    finally:
        if owner is not None and owner.is_running():
            owner.resume()
        if proc.poll() is None:
            proc.kill()


def _race(loc: StoreLocation, names: list[str]) -> list[str]:
    barrier, won, lock = threading.Barrier(len(names)), [], threading.Lock()

    def go(name: str) -> None:
        barrier.wait()
        try:
            acquire_lock(loc, name)
            with lock:
                won.append(name)
        except StoreLockedError:
            pass

    threads = [threading.Thread(target=go, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return won


def test_s3_acquire_and_takeover_are_exclusive(s3_endpoint):  # noqa: F811
    for trial in range(5):
        loc = StoreLocation(f"s3://{BUCKET}/lease-{trial}.zarr", resolved_options(s3_endpoint))
        won = _race(loc, ["a", "b", "c"])
        assert len(won) == 1, (trial, won)
        assert loc.read_json(LOCK_PATH)["run_id"] == won[0]
        # a stale lock of another host (its lease long lapsed by the store's clock): one successor only
        loc.write_json(LOCK_PATH, {"host": "gone", "pid": 1, "run_id": "gone", "token": f"t{trial}", "lease_seconds": 0.001})
        time.sleep(1.1)  # S3 timestamps have whole seconds
        won = _race(loc, ["x", "y", "z"])
        assert len(won) == 1, (trial, won)
        held = loc.read_json(LOCK_PATH)
        assert held["run_id"] == won[0] and held["took_over_from"] == "gone"
        release_lock(loc, won[0])
    keys = all_objects(s3_endpoint, BUCKET, "lease-")
    assert not keys, sorted(keys)  # no probe, takeover marker or lock left behind
