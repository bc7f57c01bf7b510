"""Column tables inside the store: one 1-D Zarr array per column, sharing one dimension.

Used for the example table, the rejects table and the per-example summaries. Tables are
written once per version under ``tables/vNNNNN/`` and never modified afterwards, so a
reader of a version never sees a half-written table.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr

from pipeline.errors import StoreError

TABLE_CHUNK = 65536

# the example table's columns and dtypes; docs/store-format.md lists their meaning
EXAMPLE_COLUMNS: dict[str, Any] = {
    "id": str,
    "file_id": str,
    "parent": str,
    "copy": "int16",
    "source": str,
    "path": str,
    "path_bytes": str,
    "label": str,
    "text": str,
    "tags": str,
    "group": str,
    "split": str,
    "status": str,
    "flags": str,
    "content_key": str,
    "duration_seconds": "float64",
    "start_seconds": "float64",
    "sample_rate_original": "int32",
    "channels": "int16",
    "decoder": str,
    "n_samples": "int64",
    "offset": "int64",
    "length": "int64",
    "partition": str,
    "augment": str,
    "version_added": "int32",
    # quality (docs/quality.md): measured on each original, copies carry their source's values;
    # NaN in rows committed before they were measured
    "peak_dbfs": "float64",
    "rms_dbfs": "float64",
    "loudness_lufs": "float64",
    "dc_offset": "float64",
    "clipping_fraction": "float64",
    "speech_fraction": "float64",
    "silence_fraction": "float64",
    "snr_db": "float64",
    "bandwidth_hz": "float64",
    "pcm_hash": str,
    "cluster": str,  # id of the representative of the example's duplicate cluster; empty if none
}

#: a value missing from a row reads as this (else "" for text, 0 for numbers)
MISSING: dict[str, Any] = {name: float("nan") for name in (
    "peak_dbfs", "rms_dbfs", "loudness_lufs", "dc_offset", "clipping_fraction", "speech_fraction", "silence_fraction", "snr_db", "bandwidth_hz",
)}

REJECT_COLUMNS: dict[str, Any] = {
    "id": str,
    "source": str,
    "path": str,
    "path_bytes": str,
    "content_key": str,
    "stage": str,
    "error_class": str,
    "message": str,
    "version_added": "int32",
}


def to_columns(rows: list[Mapping[str, Any]], schema: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, dtype in schema.items():
        missing = MISSING.get(name, "" if dtype is str else 0)
        values = [r.get(name, missing) for r in rows]
        if dtype is str:
            out[name] = np.array([str(v) for v in values], dtype=object)
        else:
            out[name] = np.asarray(values, dtype=dtype)
    return out


def write_table(group: zarr.Group, path: str, columns: Mapping[str, np.ndarray], dim: str, attrs: dict[str, Any] | None = None) -> None:
    """Write ``columns`` (equal lengths) as arrays under ``group[path]``."""
    g = group.require_group(path)
    if attrs:
        g.attrs.update(attrs)
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"table {path}: columns of different lengths {sorted(lengths)}")
    for name, values in columns.items():
        values = np.asarray(values) if not isinstance(values, np.ndarray) else values
        n = values.shape[0]
        chunks = (min(max(n, 1), TABLE_CHUNK), *values.shape[1:])
        if values.dtype == object or values.dtype.kind in "US":
            arr = g.create_array(name, shape=values.shape, dtype=str, chunks=chunks, dimension_names=(dim,), overwrite=True)
            if n:
                arr[:] = np.array([_storable(v) for v in values.tolist()], dtype=object)
        else:
            dims = (dim,) if values.ndim == 1 else (dim, *(f"{name}_col{i}" if i else "column" for i in range(values.ndim - 1)))
            arr = g.create_array(name, shape=values.shape, dtype=values.dtype, chunks=chunks, dimension_names=dims, overwrite=True, fill_value=0)
            if n:
                arr[:] = values


def read_table(group: zarr.Group, path: str, columns: list[str] | None = None) -> dict[str, np.ndarray]:
    g = group[path]
    names = columns or sorted(g.array_keys())
    out = {}
    for name in names:
        arr = g[name]
        is_str = arr.dtype.kind in "OUT"
        if not arr.shape[0]:
            out[name] = np.empty(arr.shape, dtype=object if is_str else arr.dtype)
            continue
        try:
            values = arr[:]
        except Exception as exc:  # noqa: BLE001 - a damaged column names itself
            raise StoreError(
                f"store {group.store}: table {path}, column {name}: {type(exc).__name__}: {str(exc).rstrip('.')}. "
                "Run `audioprep verify STORE` to list all damage."
            ) from exc
        # zarr returns numpy StringDType; object arrays of str work everywhere (isin, ==, pickling)
        out[name] = np.array(values.tolist(), dtype=object) if is_str else values
    return out


def rows_of(columns: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    names = list(columns)
    n = len(columns[names[0]]) if names else 0
    return [{k: _py(columns[k][i]) for k in names} for i in range(n)]


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def path_bytes_text(path: str) -> str:
    """The ``path_bytes`` column: "" for a UTF-8 name (``path`` is exact), else the name's
    original bytes in base64, since ``path`` shows them as ``\\xNN`` text."""
    try:
        path.encode("utf-8")
        return ""
    except UnicodeEncodeError:
        return base64.b64encode(path.encode("utf-8", "surrogateescape")).decode("ascii")


def original_path(row: Mapping[str, Any]) -> bytes:
    """The exact bytes of a row's relative path (example or reject table), whatever they are.

    ``os.fsdecode(original_path(row))`` opens the file on a local disk.
    """
    raw = row.get("path_bytes") or ""
    return base64.b64decode(raw) if raw else str(row["path"]).encode("utf-8")


def _storable(value):
    """A string zarr can encode as UTF-8: a file name's undecodable bytes (surrogate escapes
    from os.fsdecode) become ``\\xNN`` text; ids are derived from the real bytes."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return value
