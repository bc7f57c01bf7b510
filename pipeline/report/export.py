"""Export the store's tables (summaries, examples, rejects) to Parquet or CSV."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

from pipeline.errors import ConfigError, StoreError
from pipeline.read.views import join_columns, join_metadata, version_labels
from pipeline.store.location import StoreLocation
from pipeline.store.state import ACTIVE, read_state

KEY_COLUMNS = ("id", "split", "label", "group", "path", "source", "parent", "copy", "duration_seconds")


def table_columns(url: str, table: str, *, version: int | None = None, storage_options: dict[str, Any] | None = None) -> dict[str, list]:
    state = read_state(StoreLocation(url, dict(storage_options or {})), version)
    if state is None or not state.version:
        raise StoreError(f"no committed audioprep store at {url}")
    if table == "rejects":
        rows = state.rejects
        return {k: [r[k] for r in rows] for k in (rows[0].keys() if rows else ["id", "source", "path", "stage", "error_class", "message"])}
    keep = [i for i, r in enumerate(state.table) if r["status"] in ACTIVE]
    base = ["id", "parent", "copy", "source", "path", "label", "group", "split", "duration_seconds"]
    if table == "examples":
        keys = list(state.table[0].keys()) if state.table else base
        lead = [k for k in KEY_COLUMNS if k in keys]  # the keys a reader joins on come first
        out = {k: [state.table[i][k] for i in keep] for k in lead + [k for k in keys if k not in lead]}
        # every column of the table, whatever it holds, plus where each row's features are
        out.update(join_columns(state.meta, out, version_labels(StoreLocation(url, dict(storage_options or {})), state.version)))
        out["example_row"] = keep
        return out
    if table == "summaries":
        if not state.summary_columns:
            raise StoreError(f"{url} has no summaries: add `features.summaries: [mean, std]` to the catalog")
        out = {k: [state.table[i][k] for i in keep] for k in base}
        values = state.summaries[np.asarray(keep, dtype=np.int64)] if keep else np.zeros((0, len(state.summary_columns)))
        for j, name in enumerate(state.summary_columns):
            out[name] = values[:, j].astype(float).tolist()
        return out
    raise ConfigError(f"--table {table!r}: choose summaries, examples or rejects")


def export_table(
    url: str, *, table: str, fmt: str, out: str | None = None, version: int | None = None, storage_options: dict[str, Any] | None = None
) -> str:
    cols = table_columns(url, table, version=version, storage_options=storage_options)
    path = pathlib.Path(out or f"{table}.{fmt}")
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        data = pa.table(cols)
        if table == "examples":  # how to join back to the arrays, in the file's own metadata
            state = read_state(StoreLocation(url, dict(storage_options or {})), version)
            info = join_metadata(url, state.meta, state.version, version_labels(StoreLocation(url, dict(storage_options or {})), state.version))
            data = data.replace_schema_metadata({**(data.schema.metadata or {}), b"audioprep": json.dumps(info).encode()})
        pq.write_table(data, path)
    elif fmt == "csv":
        import csv

        names = list(cols)
        n = len(cols[names[0]]) if names else 0
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(names)
            for i in range(n):
                w.writerow([cols[k][i] for k in names])
    else:
        raise ConfigError(f"--format {fmt!r}: choose parquet or csv")
    return str(path)
