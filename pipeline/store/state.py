"""The committed state of a store: its attributes and the current version's tables."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from pipeline.errors import StoreError
from pipeline.store.layout import FORMAT_VERSION
from pipeline.store.location import StoreLocation
from pipeline.store.tables import read_table, rows_of

ATTR_KEY = "audioprep"
ACTIVE = ("ok", "flagged")


def table_path(version: int, name: str) -> str:
    return f"tables/v{version:05d}/{name}"


def read_meta(loc: StoreLocation) -> dict[str, Any] | None:
    """The store's ``audioprep`` attributes, or None when there is no store yet."""
    if not loc.exists("zarr.json"):
        return None
    group = zarr.open_group(loc.zarr_store(read_only=True), mode="r")
    meta = dict(group.attrs.get(ATTR_KEY, {}))
    if not meta:
        raise StoreError(f"{loc.url} is a Zarr group but not an audioprep store (no '{ATTR_KEY}' attributes)")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise StoreError(f"{loc.url} has store format {meta.get('format_version')}; this audioprep reads up to {FORMAT_VERSION}: upgrade audioprep")
    return meta


def file_id(row: dict[str, Any]) -> str:
    """The example id of the file a row comes from (rows of split files and copies share it)."""
    return row.get("file_id") or row["parent"] or row["id"]


@dataclass
class StoreState:
    meta: dict[str, Any]
    version: int
    table: list[dict[str, Any]]
    rejects: list[dict[str, Any]]
    summaries: np.ndarray
    summary_columns: list[str] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        return self.meta.get("fingerprint", "")

    @property
    def allocated(self) -> int:
        return int(self.meta.get("allocated", 0))

    def originals(self) -> dict[str, dict[str, Any]]:
        """Active original rows keyed by the id of the file they come from."""
        return {file_id(r): r for r in self.table if r["copy"] == 0 and r["status"] in ACTIVE}

    def rejects_by_id(self) -> dict[str, dict[str, Any]]:
        return {r["id"]: r for r in self.rejects}

    def group_splits(self) -> dict[str, str]:
        # a duplicate cluster's member may sit in another split than its group: the group's
        # split is read from its other rows when it has any
        out = {r["group"]: r["split"] for r in self.table if r["copy"] == 0 and r.get("cluster")}
        out.update({r["group"]: r["split"] for r in self.table if r["copy"] == 0 and not r.get("cluster")})
        return out

    def split_label_counts(self, exclude: set[str]) -> Counter:
        return Counter((r["split"], r["label"]) for r in self.table if r["copy"] == 0 and r["status"] in ACTIVE and r["id"] not in exclude)

    def split_tag_counts(self, exclude: set[str]) -> Counter:
        """``(split, tag) -> examples`` of the active originals (multi-label stratification)."""
        out: Counter = Counter()
        for r in self.table:
            if r["copy"] == 0 and r["status"] in ACTIVE and r["id"] not in exclude and r.get("tags"):
                out.update((r["split"], t) for t in json.loads(r["tags"]))
        return out


def read_state(loc: StoreLocation, version: int | None = None) -> StoreState | None:
    meta = read_meta(loc)
    if meta is None or not meta.get("current_version"):
        return None if meta is None else StoreState(meta, 0, [], [], np.zeros((0, 0), np.float32))
    v = int(version or meta["current_version"])
    versions = [int(x["version"]) for x in meta.get("versions", [])]
    if v not in versions:
        raise StoreError(f"{loc.url} has no version {v}; its versions: {', '.join(map(str, versions))}")
    group = zarr.open_group(loc.zarr_store(read_only=True), mode="r")
    table = rows_of(read_table(group, table_path(v, "examples")))
    rejects = rows_of(read_table(group, table_path(v, "rejects")))
    summaries = np.zeros((len(table), 0), np.float32)
    cols: list[str] = []
    if table_path(v, "summaries") in group:
        sg = group[table_path(v, "summaries")]
        summaries = sg["values"][:]
        cols = list(sg.attrs.get("columns", []))
    return StoreState(meta, v, table, rejects, summaries, cols)
