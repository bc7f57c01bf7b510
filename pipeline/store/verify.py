"""Checking and maintaining a store: damage reports, guarded deletion, lock breaking.

- :func:`read_rows` reads rows of a feature array and turns every failure into a
  :class:`StoreError` naming the store, the array, the shard key and the example ids; a
  missing shard object for rows that hold committed data is such a failure (zarr would
  return the fill value).
- :func:`verify_store` reads every committed shard of every feature array and every table.
- :func:`delete_store` deletes a store (``run --overwrite``): only what the layout names,
  under the store's lock, and nothing that is not an audioprep store.
- :func:`unlock_store` breaks a lock, refusing a live one unless forced.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from pipeline.errors import ConfigError, StoreError
from pipeline.io.fs import join
from pipeline.store.location import StoreLocation
from pipeline.store.lock import LOCK_PATH, acquire_lock, lock_is_live, release_lock
from pipeline.store.state import ATTR_KEY, read_meta, table_path

# --- where rows live --------------------------------------------------------------------


def shard_len(arr: zarr.Array) -> int:
    """Rows of axis 0 in one stored object (a shard, or a chunk of an unsharded array)."""
    return int((arr.shards or arr.chunks)[0])


def shard_key(arr: zarr.Array, index: int) -> str:
    """The object key, relative to the array, of shard ``index`` along axis 0."""
    coords = (int(index), *([0] * (len(arr.shape) - 1)))
    return arr.metadata.chunk_key_encoding.encode_chunk_key(coords)


def shard_object(arr: zarr.Array, index: int) -> str:
    """The object key, relative to the store root, of shard ``index``."""
    return f"{arr.path}/{shard_key(arr, index)}"


def shards_of(arr: zarr.Array, lo: int, hi: int) -> range:
    n = shard_len(arr)
    return range(lo // n, (hi - 1) // n + 1) if hi > lo else range(0)


def read_rows(
    loc: StoreLocation,
    arr: zarr.Array,
    lo: int,
    hi: int,
    ids_in: Callable[[int, int], Sequence[str]],
    *,
    checked: set[int] | None = None,
) -> np.ndarray:
    """``arr[lo:hi]``, or a :class:`StoreError` naming store, array, shard and examples.

    ``ids_in(a, b)`` names the examples whose rows meet ``[a, b)``: those rows hold data,
    so a missing shard object under them is an error. ``checked``
    remembers the shards whose object was seen (one existence check per shard).
    """
    n = shard_len(arr)
    try:
        data = arr[lo:hi]
    except Exception as exc:  # noqa: BLE001 - named and re-raised below
        bad = []
        for s in shards_of(arr, lo, hi):
            a, b = max(lo, s * n), min(hi, (s + 1) * n)
            try:
                arr[a:b]
            except Exception as inner:  # noqa: BLE001
                bad.append((s, a, b, inner))
        s, a, b, inner = bad[0] if bad else (lo // n, lo, hi, exc)
        raise StoreError(_damage(loc, arr, s, a, b, ids_in(a, b), f"{type(inner).__name__}: {str(inner).rstrip('.')}")) from exc
    for s in shards_of(arr, lo, hi):
        if checked is not None and s in checked:
            continue
        a, b = max(lo, s * n), min(hi, (s + 1) * n)
        if not ids_in(a, b):
            continue  # rows read past the examples (a gap): no data is expected there
        if not loc.exists(shard_object(arr, s)):
            raise StoreError(_damage(loc, arr, s, a, b, ids_in(a, b), "the shard object is missing (its rows would read as fill values)"))
        if checked is not None:
            checked.add(s)
    return data


def _damage(loc: StoreLocation, arr: zarr.Array, s: int, a: int, b: int, ids: Sequence[str], what: str) -> str:
    shown = ", ".join(list(ids)[:10]) + (f", ... ({len(ids)} in all)" if len(ids) > 10 else "")
    return (
        f"store {loc.url}: array {arr.path}, shard {shard_object(arr, s)} (rows {a}-{b}), examples [{shown}]: {what}. "
        f"Run `audioprep verify {loc.url}` to list all damage; rebuild with `audioprep run CATALOG --overwrite`."
    )


# --- verify -----------------------------------------------------------------------------


@dataclass
class Damage:
    array: str
    shard: str
    example_ids: list[str]
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {"array": self.array, "shard": self.shard, "example_ids": list(self.example_ids), "error": self.error}


@dataclass
class VerifyResult:
    url: str
    version: int
    shards_read: int = 0
    tables_read: int = 0
    damage: list[Damage] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damage


def committed_versions(meta: dict[str, Any]) -> list[int]:
    return [int(v["version"]) for v in meta.get("versions", [])]


def check_version(url: str, meta: dict[str, Any], version: int | None) -> int:
    """The version to read (default the current one), or a StoreError listing those that exist."""
    versions = committed_versions(meta)
    if not meta.get("current_version") or not versions:
        raise StoreError(f"no committed version in {url}; run `audioprep run CATALOG` first")
    v = int(version or meta["current_version"])
    if v not in versions:
        raise StoreError(f"{url} has no version {v}; its versions: {', '.join(map(str, versions))}")
    return v


def verify_store(loc: StoreLocation, version: int | None = None) -> VerifyResult:
    """Read every committed shard of every feature array, and every table of every version.

    A shard is committed when rows of the version's example table (``offset``, ``length``)
    lie in it; its object must exist and decode (every inner chunk of a store written since
    checksums were added carries a CRC-32C).
    """
    meta = read_meta(loc)
    if meta is None:
        raise StoreError(f"no audioprep store at {loc.url}")
    v = check_version(loc.url, meta, version)
    group = zarr.open_group(loc.zarr_store(read_only=True), mode="r")
    result = VerifyResult(loc.url, v)
    examples = None
    for ver in committed_versions(meta):
        for name in ("examples", "rejects", "summaries"):
            path = table_path(ver, name)
            try:
                if path not in group:
                    if name != "summaries":
                        result.damage.append(Damage(path, "", [], "the table is missing"))
                    continue
                node = group[path]
                for col in sorted(node.array_keys()) if hasattr(node, "array_keys") else []:
                    a = node[col]
                    values = a[:] if a.shape[0] else None
                    result.tables_read += 1
                    if ver == v and name == "examples" and col in ("id", "offset", "length"):
                        examples = examples or {}
                        examples[col] = np.array(values.tolist() if values is not None else [], dtype=object if col == "id" else np.int64)
            except Exception as exc:  # noqa: BLE001 - every damage is listed, none stops the check
                result.damage.append(Damage(path, "", [], f"{type(exc).__name__}: {exc}"))
    if not examples or any(c not in examples for c in ("id", "offset", "length")):
        result.damage.append(Damage(table_path(v, "examples"), "", [], "cannot tell which rows hold data: the example table is unreadable"))
        return result
    dense = (meta.get("layout") or {}).get("mode") == "dense"
    ids, offs = examples["id"], examples["offset"].astype(np.int64)
    lens = np.ones_like(offs) if dense else examples["length"].astype(np.int64)
    holds = lens > 0
    ids, offs, lens = ids[holds], offs[holds], lens[holds]
    for name in sorted(group["features"].array_keys()):
        arr = group[f"features/{name}"]
        n = shard_len(arr)
        shard_ids: dict[int, list[str]] = {}
        for i, o, ln in zip(ids, offs, lens):
            for s in shards_of(arr, int(o), int(o + ln)):
                shard_ids.setdefault(s, []).append(str(i))
        for s in sorted(shard_ids):
            lo, hi = s * n, min((s + 1) * n, arr.shape[0])
            result.shards_read += 1
            try:
                read_rows(loc, arr, lo, hi, lambda a, b, ids=shard_ids[s]: ids)
            except StoreError as exc:
                cause = exc.__cause__
                what = f"{type(cause).__name__}: {cause}" if cause is not None else "the shard object is missing"
                result.damage.append(Damage(arr.path, shard_object(arr, s), shard_ids[s], what))
    return result


# --- delete (run --overwrite) -------------------------------------------------------------

#: What a store holds at its root. Anything else is not ours to delete.
ROOT_ENTRIES = ("zarr.json", "features", "tables", "_partitions", "_quality", LOCK_PATH)
_SIDE = re.compile(rf"^({re.escape(LOCK_PATH)}\.(stale-\d+|probe-\d+-\w+|takeover-\w+)|.*\.tmp-\d+)$")
_VERSION_DIR = re.compile(r"^v\d{5}$")


def _names(fs, path: str) -> list[str]:
    try:
        fs.invalidate_cache()
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
    except (FileNotFoundError, NotADirectoryError):
        return []


def unknown_entries(loc: StoreLocation, meta: dict[str, Any]) -> list[str]:
    """Entries of the store that its layout does not name (relative paths)."""
    fs, root = loc.fs_root()
    features = set((meta.get("layout") or {}).get("feature_shapes", {})) | set(meta.get("feature_names") or [])
    out = [n for n in _names(fs, root) if n not in ROOT_ENTRIES and not _SIDE.match(n)]
    out += [f"features/{n}" for n in _names(fs, join(root, "features")) if n != "zarr.json" and n not in features]
    out += [f"tables/{n}" for n in _names(fs, join(root, "tables")) if n != "zarr.json" and not _VERSION_DIR.match(n)]
    out += [f"_partitions/{n}" for n in _names(fs, join(root, "_partitions")) if not (n.endswith(".json") or _SIDE.match(n))]
    out += [f"_quality/{n}" for n in _names(fs, join(root, "_quality")) if not (n.endswith(".npz") or _SIDE.match(n))]  # duplicate index input
    return out


def delete_store(loc: StoreLocation) -> list[str]:
    """Delete the store at ``loc`` (and its ``<store>.report`` folder), returning what was deleted.

    A path that does not exist, or an empty folder, is fine (nothing to delete). Anything
    else must be an audioprep store holding only what its layout names: otherwise a
    :class:`StoreError` lists what is there, and nothing is deleted. The store's lock is
    taken first, so a live run's store is refused (:class:`StoreLockedError`).
    """
    fs, root = loc.fs_root()
    if not loc.exists() or not _names(fs, root):
        return []
    if not fs.isdir(root):
        raise StoreError(f"{loc.url} is a file, not an audioprep store: not deleted")
    try:
        meta = read_meta(loc)
    except StoreError as exc:
        raise StoreError(f"{exc}: not deleted") from None
    if meta is None:
        shown = ", ".join(_names(fs, root)[:10])
        raise StoreError(f"{loc.url} is not an audioprep store (no zarr.json; it holds {shown}): not deleted")
    unknown = unknown_entries(loc, meta)
    if unknown:
        raise StoreError(f"{loc.url} holds files an audioprep store does not: {', '.join(unknown[:20])}; move them away first: not deleted")
    run_id = f"overwrite-{socket.gethostname()}-{os.getpid()}"
    acquire_lock(loc, run_id)
    deleted = []
    try:
        for name in _names(fs, root):
            if name == LOCK_PATH:
                continue
            fs.rm(join(root, name), recursive=True)
            deleted.append(name)
    finally:
        release_lock(loc, run_id)
    if not loc.remote:
        report = f"{root}.report"
        if os.path.isdir(report):
            fs.rm(report, recursive=True)
            deleted.append(os.path.basename(report))
        if os.path.isdir(root) and not os.listdir(root):
            os.rmdir(root)
    return deleted


# --- unlock -----------------------------------------------------------------------------


def unlock_store(loc: StoreLocation, *, force: bool = False) -> dict[str, Any] | None:
    """Remove the store's lock and return what it said (None when there was none).

    A live lock (its owner alive on this host, or its lease unexpired by the store's clock;
    see :func:`pipeline.store.lock.lock_is_live`) is refused unless ``force``.
    """
    current = loc.read_json(LOCK_PATH)
    if not current:
        return None
    if lock_is_live(loc, current) and not force:
        where = "is alive on this host" if current.get("host") == socket.gethostname() else "keeps its lease fresh (another host)"
        raise StoreError(
            f"store {loc.url} is locked by run {current.get('run_id')} (host {current.get('host')}, pid {current.get('pid')}, "
            f"since {current.get('since')}), whose process {where}: not unlocked. If that run is dead, add --force."
        )
    loc.delete(LOCK_PATH)
    return current


# --- where a command finds the store ------------------------------------------------------------


def resolve_location(store: str | None, *, catalog: str | None = None, storage_options: str | None = None) -> StoreLocation:
    """The store of a command: ``STORE``, or the catalog's ``output.store``; options from the
    catalog's ``output.storage_options`` (``${VAR}`` resolved) or a JSON object."""
    options: dict[str, Any] = {}
    if catalog:
        from pipeline.config.catalog import load_catalog

        out = load_catalog(catalog).catalog.output
        store = store or out.store
        options = dict(out.storage_options or {})
    if storage_options:
        try:
            given = json.loads(storage_options)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--storage-options: not JSON ({exc.msg} at character {exc.pos})") from None
        if not isinstance(given, dict):
            raise ConfigError("--storage-options: a JSON object is expected, e.g. '{\"anon\": true}'")
        options.update(given)
    if not store:
        raise ConfigError("name the store (STORE) or a catalog whose output.store names it (--catalog)")
    return StoreLocation(store, options)


__all__ = [
    "ATTR_KEY", "Damage", "VerifyResult", "check_version", "delete_store", "read_rows",
    "resolve_location", "shard_key", "unlock_store", "unknown_entries", "verify_store",
]
