"""The store's run lock: an exclusive create, a lease its owner keeps fresh, and a fencing check.

One object, ``_lock.json``, says which run may write the store. Three rules keep two runs
from ever writing it at once, on a local disk and on an object store alike:

- **Exclusive create.** A lock is created only where none exists: a hard link of a complete
  file on a local disk, an ``If-None-Match: *`` put on S3. Of two runs that acquire at once,
  exactly one wins.
- **A lease, judged by the store's own clock.** The owner rewrites the lock every
  ``lease_seconds / 4`` (:class:`LockLease`). Another run judges it by its age: the time
  between the lock's last write and a probe it writes itself, both stamped by the store
  (file mtimes, S3 ``LastModified``). No host compares its clock with another's, so a skewed
  clock neither breaks a live lock nor keeps a dead one. A lock whose pid is dead on this
  very host (same boot, same pid namespace) is stale at once: a killed run resumes without
  waiting. A container that shares the hostname has another pid namespace, so its pids are
  never trusted.
- **Fencing.** A run that lost its lease (paused past it, and another run took over) finds
  out before it commits: :func:`verify_held` compares the lock's run id and token with its
  own and refuses the commit.

A stale lock is taken over by exactly one run: locally by an atomic rename, on S3 by an
exclusive create of a takeover marker named after the stale lock's token.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from pipeline.errors import LockLostError, StoreLockedError
from pipeline.io.fs import join
from pipeline.store.location import StoreLocation

LOCK_PATH = "_lock.json"
#: How long a lock lives without a refresh before another run may take it over.
LEASE_SECONDS = 30.0


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _namespace() -> dict[str, Any]:
    """What makes a pid meaningful: this boot of this kernel, and this pid namespace."""
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = None
    return {"boot_id": _read("/proc/sys/kernel/random/boot_id"), "pid_ns": pid_ns}


def lock_owner() -> dict[str, Any]:
    """Who this process is, as a lock records it."""
    return {"host": socket.gethostname(), "pid": os.getpid(), **_namespace()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


def _pid_checkable(lock: dict[str, Any]) -> bool:
    """True when the lock's pid names a process this host can look up."""
    me = lock_owner()
    # a lock written before boot and namespace were recorded is judged by pid on its host, as before
    return lock.get("host") == me["host"] and all(lock.get(k) in (None, me[k]) for k in ("boot_id", "pid_ns"))


# --- the store's clock --------------------------------------------------------------------


def _mtime(loc: StoreLocation, rel: str) -> float | None:
    fs, root = loc.fs_root()
    path = join(root, rel)
    if not loc.remote:
        try:
            return os.stat(path).st_mtime
        except FileNotFoundError:
            return None
    try:
        fs.invalidate_cache(path)
        info = fs.info(path)
    except FileNotFoundError:
        return None
    stamp = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
    if isinstance(stamp, _dt.datetime):
        return stamp.timestamp()
    return float(stamp) if stamp is not None else None


def store_now(loc: StoreLocation) -> float:
    """The store's clock now: the timestamp the store gives a probe object written now."""
    rel = f"{LOCK_PATH}.probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    fs, root = loc.fs_root()
    path = join(root, rel)
    if not loc.remote:
        os.makedirs(root, exist_ok=True)
        with open(path, "wb"):
            pass
    else:
        fs.pipe_file(path, b"")
    try:
        stamp = _mtime(loc, rel)
    finally:
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(path)
    return stamp if stamp is not None else time.time()


def lock_age_seconds(loc: StoreLocation) -> float | None:
    """Seconds since the lock was last written, by the store's clock (None: no lock)."""
    written = _mtime(loc, LOCK_PATH)
    return None if written is None else max(0.0, store_now(loc) - written)


def lock_is_live(loc: StoreLocation, lock: dict[str, Any]) -> bool:
    """Whether ``lock`` (as read from ``loc``) still binds: its owner alive, or its lease unexpired."""
    if _pid_checkable(lock):
        return _pid_alive(int(lock.get("pid", -1)))
    age = lock_age_seconds(loc)
    if age is None:
        return False
    return age <= float(lock.get("lease_seconds") or LEASE_SECONDS)


def _locked_error(loc: StoreLocation, lock: dict[str, Any]) -> StoreLockedError:
    lease = float(lock.get("lease_seconds") or LEASE_SECONDS)
    return StoreLockedError(
        f"store {loc.url} is locked by run {lock.get('run_id')} (host {lock.get('host')}, pid {lock.get('pid')}, "
        f"since {lock.get('since')}). Wait for it to finish: its lease is refreshed every {lease / 4:.0f} s and "
        f"lapses {lease:.0f} s after its owner stops. If that run is dead, break the lock with "
        f"`audioprep unlock {loc.url} --force`."
    )


def check_unlocked(loc: StoreLocation) -> dict[str, Any] | None:
    """Raise :class:`StoreLockedError` when a live run holds the lock; return a stale lock's
    contents (which a new run takes over), else None."""
    current = loc.read_json(LOCK_PATH)
    if not current:
        return None
    if lock_is_live(loc, current):
        raise _locked_error(loc, current)
    return current


# --- exclusive create and takeover -------------------------------------------------------------


def _create_exclusive(loc: StoreLocation, rel: str, obj: dict[str, Any]) -> bool:
    """Create ``rel`` only if it does not exist; False when it does."""
    if not loc.remote:
        return loc.create_json(rel, obj)
    fs, root = loc.fs_root()
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    try:
        fs.pipe_file(join(root, rel), data, mode="create")  # If-None-Match: *
    except FileExistsError:
        return False
    return True


def _take_over(loc: StoreLocation, stale: dict[str, Any]) -> bool:
    """Remove a stale lock so that exactly one of the runs judging it stale may create anew."""
    if not loc.remote:
        return _set_aside(loc, stale)
    marker = f"{LOCK_PATH}.takeover-{stale.get('token') or stale.get('run_id')}"
    if not _create_exclusive(loc, marker, {"by_pid": os.getpid(), "host": socket.gethostname()}):
        return False  # another run is taking this lock over
    try:
        if loc.read_json(LOCK_PATH) != stale:
            return False
        loc.delete(LOCK_PATH)
        return True
    finally:
        loc.delete(marker)


def _set_aside(loc: StoreLocation, stale: dict[str, Any]) -> bool:
    """Move a stale local lock out of the way; False when it is no longer the one judged stale."""
    _, root = loc.fs_root()
    path, aside = join(root, LOCK_PATH), join(root, f"{LOCK_PATH}.stale-{os.getpid()}")
    try:
        os.rename(path, aside)  # atomic: of two runs taking it over, one moves it
    except FileNotFoundError:
        return False
    with open(aside, "rb") as f:
        moved = json.loads(f.read() or b"null")
    if moved != stale:  # a live run's lock replaced it meanwhile: put it back (unless yet another exists)
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
        os.remove(aside)
        return False
    os.remove(aside)
    return True


def acquire_lock(loc: StoreLocation, run_id: str, *, lease_seconds: float = LEASE_SECONDS) -> dict[str, Any]:
    """Take the store's run lock, or raise :class:`StoreLockedError` naming its owner.

    A stale lock (its owner dead on this host, or its lease lapsed by the store's clock) is
    taken over: that is what lets a resumed run continue. Returns the lock as written; its
    ``token`` is what :func:`verify_held` checks.
    """
    me = {**lock_owner(), "run_id": run_id, "token": uuid.uuid4().hex, "since": _now(), "lease_seconds": float(lease_seconds), "beat": 0}
    for _ in range(5):
        current = check_unlocked(loc)
        if current:
            me["took_over_from"] = current.get("run_id")
            if not _take_over(loc, current):
                continue  # another run took the stale lock over first: judge its lock instead
        if _create_exclusive(loc, LOCK_PATH, me):
            return me
    raise StoreLockedError(f"store {loc.url}: another run took the lock at the same time; try again later")


def verify_held(loc: StoreLocation, lock: dict[str, Any] | str) -> None:
    """Raise :class:`LockLostError` unless the store's lock is still ``lock`` (same run, same token).

    ``lock`` may be a run id alone, for callers that only know the run (the commit step).
    """
    run_id = lock if isinstance(lock, str) else lock.get("run_id")
    token = None if isinstance(lock, str) else lock.get("token")
    current = loc.read_json(LOCK_PATH)
    if current and current.get("run_id") == run_id and (token is None or current.get("token") == token):
        return
    holder = f"run {current.get('run_id')} (host {current.get('host')}) holds it now" if current else "nobody holds it now"
    raise LockLostError(
        f"store {loc.url}: run {run_id} no longer holds the store's lock ({holder}): its lease lapsed "
        f"(was the process paused, or the lock broken with `unlock --force`?). Nothing was committed; rerun to resume."
    )


def release_lock(loc: StoreLocation, run_id: str) -> None:
    """Remove the lock if ``run_id`` holds it (anyone else's lock stays)."""
    current = loc.read_json(LOCK_PATH)
    if current and current.get("run_id") == run_id:
        loc.delete(LOCK_PATH)


def break_lock(loc: StoreLocation) -> dict[str, Any] | None:
    """Remove the lock whoever holds it; returns what it said."""
    current = loc.read_json(LOCK_PATH)
    loc.delete(LOCK_PATH)
    return current


# --- the lease ------------------------------------------------------------------------------------


class LockLease:
    """Hold the store's lock for a ``with`` block, refreshing its lease from a thread.

    The refresh rewrites the lock (a new ``beat``), which renews its timestamp on the
    store's clock. It stops refreshing, and remembers it, once the lock is no longer
    this run's; :meth:`verify` (and the commit's fencing check) then refuse.
    """

    def __init__(self, loc: StoreLocation, run_id: str, *, lease_seconds: float = LEASE_SECONDS) -> None:
        self.loc, self.run_id, self.lease_seconds = loc, run_id, float(lease_seconds)
        self.lock: dict[str, Any] | None = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LockLease:
        self.lock = acquire_lock(self.loc, self.run_id, lease_seconds=self.lease_seconds)
        self._thread = threading.Thread(target=self._beat, name="audioprep-lock-lease", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        interval = self.lease_seconds / 4
        while not self._stop.wait(interval):
            try:
                verify_held(self.loc, self.lock)
                self.lock = {**self.lock, "beat": int(self.lock.get("beat", 0)) + 1}
                self.loc.write_json(LOCK_PATH, self.lock)
            except LockLostError as exc:
                self.lost = str(exc)
                return
            except OSError:
                continue  # a failed refresh is retried; the lease outlives a few misses

    def verify(self) -> None:
        if self.lost:
            raise LockLostError(self.lost)
        verify_held(self.loc, self.lock)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        release_lock(self.loc, self.run_id)


@contextlib.contextmanager
def hold_lock(loc: StoreLocation, run_id: str, *, lease_seconds: float = LEASE_SECONDS) -> Iterator[LockLease]:
    """``with hold_lock(loc, run_id) as lease:`` the lock, held and refreshed for the block."""
    with LockLease(loc, run_id, lease_seconds=lease_seconds) as lease:
        yield lease


__all__ = [
    "LEASE_SECONDS", "LOCK_PATH", "LockLease", "acquire_lock", "break_lock", "check_unlocked", "hold_lock",
    "lock_age_seconds", "lock_is_live", "lock_owner", "release_lock", "store_now", "verify_held",
]
