"""Where a store lives: a URL plus fsspec options, with JSON side files and the run lock.

Side files (partition manifests, the lock) are plain JSON objects next to the Zarr
metadata; nothing in a store is ever unpickled or executed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
from dataclasses import dataclass, field
from typing import Any

import zarr
import zarr.storage

from pipeline.errors import StoreError, StoreLockedError
from pipeline.io.fs import filesystem, is_remote, join

LOCK_PATH = "_lock.json"


@dataclass(frozen=True)
class StoreLocation:
    """A store URL (local path or fsspec URL) and its storage options."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    @property
    def remote(self) -> bool:
        return is_remote(self.url)

    def fs_root(self):
        fs, root = filesystem(self.url, self.storage_options)
        return fs, root.rstrip("/")

    def zarr_store(self, *, read_only: bool = False):
        if not self.remote:
            path = self.url[len("file://") :] if self.url.startswith("file://") else self.url
            return zarr.storage.LocalStore(path, read_only=read_only)
        return zarr.storage.FsspecStore.from_url(self.url, storage_options=self.storage_options or None, read_only=read_only)

    def open_group(self, *, mode: str = "r") -> zarr.Group:
        try:
            return zarr.open_group(self.zarr_store(read_only=mode == "r"), mode=mode)
        except FileNotFoundError:
            raise StoreError(f"no audioprep store at {self.url}; run `audioprep run CATALOG` first") from None

    # --- JSON side files -------------------------------------------------------------
    def write_json(self, rel: str, obj: Any) -> None:
        fs, root = self.fs_root()
        data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
        path = join(root, rel)
        if not self.remote:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # atomic: a reader sees the old or the new file, never half
        else:
            fs.pipe_file(path, data)  # object stores put whole objects atomically

    def create_json(self, rel: str, obj: Any) -> bool:
        """Write a local side file only if it does not exist yet (atomically); False if it does."""
        _, root = self.fs_root()
        path = join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if the file exists; readers never see it half written
            return True
        except FileExistsError:
            return False
        finally:
            os.remove(tmp)

    def read_json(self, rel: str) -> Any | None:
        fs, root = self.fs_root()
        try:
            return json.loads(fs.cat_file(join(root, rel)))
        except FileNotFoundError:
            return None

    def list_json(self, rel_dir: str) -> list[str]:
        fs, root = self.fs_root()
        try:
            fs.invalidate_cache()
            names = fs.ls(join(root, rel_dir), detail=False)
        except FileNotFoundError:
            return []
        return sorted(n.rsplit("/", 1)[-1] for n in names if n.endswith(".json"))

    def delete(self, rel: str) -> None:
        fs, root = self.fs_root()
        try:
            fs.rm_file(join(root, rel))
        except FileNotFoundError:
            pass

    def exists(self, rel: str = "") -> bool:
        fs, root = self.fs_root()
        fs.invalidate_cache()
        return fs.exists(join(root, rel) if rel else root)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def check_unlocked(loc: StoreLocation) -> dict[str, Any] | None:
    """Raise :class:`StoreLockedError` when a live run holds the store's lock; return a stale
    lock's contents (a dead process on this host: a resumed run takes it over), else None."""
    current = loc.read_json(LOCK_PATH)
    if current:
        me = lock_owner()
        same_host = current.get("host") == me["host"]
        if not (same_host and (current.get("pid") == me["pid"] or not _pid_alive(int(current.get("pid", -1))))):
            raise StoreLockedError(
                f"store {loc.url} is locked by run {current.get('run_id')} (host {current.get('host')}, "
                f"pid {current.get('pid')}, since {current.get('since')}). Wait for it to finish; if that run "
                f"is dead, break the lock with `audioprep unlock {loc.url} --force`."
            )
    return current


def acquire_lock(loc: StoreLocation, run_id: str) -> dict[str, Any]:
    """Take the store's run lock, or raise :class:`StoreLockedError` naming its owner.

    A lock left by a dead process on this host (a killed run) is taken over: that is what
    lets a resumed run continue. Any other lock must be broken explicitly
    (``audioprep unlock STORE``). On a local disk the lock is created exclusively (a hard
    link of a complete file), so of two runs that acquire at once exactly one wins.
    """
    me = {**lock_owner(), "run_id": run_id, "since": _now()}
    for _ in range(3):
        current = check_unlocked(loc)
        if current:
            me["took_over_from"] = current.get("run_id")
            if not loc.remote and not _set_aside(loc, current):
                continue  # another run took the stale lock over first: judge its lock instead
        if loc.remote:
            loc.write_json(LOCK_PATH, me)
            check = loc.read_json(LOCK_PATH)
            if check and check.get("run_id") == run_id:
                return me
        elif loc.create_json(LOCK_PATH, me):
            return me
    raise StoreLockedError(f"store {loc.url}: another run took the lock at the same time; try again later")


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


def release_lock(loc: StoreLocation, run_id: str) -> None:
    current = loc.read_json(LOCK_PATH)
    if current and current.get("run_id") == run_id:
        loc.delete(LOCK_PATH)


def break_lock(loc: StoreLocation) -> dict[str, Any] | None:
    """Remove the lock whoever holds it; returns what it said."""
    current = loc.read_json(LOCK_PATH)
    loc.delete(LOCK_PATH)
    return current
