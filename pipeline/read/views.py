"""Views of a store for other tools: an xarray Dataset, and what a Parquet export of the
example table needs to join back to the arrays (Hugging Face ``datasets``, Polars, pandas)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from pipeline.errors import StoreError
from pipeline.store.layout import Layout, feature_dims
from pipeline.store.location import StoreLocation
from pipeline.store.state import ACTIVE, read_meta, table_path
from pipeline.store.tables import read_table
from pipeline.store.verify import check_version


def public_url(url: str) -> str:
    """``url`` without user:password (never written anywhere)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[1], parts.path, parts.query, parts.fragment))


def version_labels(loc: StoreLocation, version: int) -> list[str]:
    """The label vocabulary of a version (``label_index`` is a position in it)."""
    return list(loc.open_group()[table_path(version, "examples")].attrs.get("labels", []))


def join_columns(meta: dict[str, Any], table: dict[str, Sequence[Any]], labels: Sequence[str]) -> dict[str, list]:
    """Columns that locate each exported example in the feature arrays: ``label_index``
    (position in the store's ``labels``, as the reader gives it) and ``frames``."""
    layout = meta["layout"]
    lookup = {lab: i for i, lab in enumerate(labels)}
    n = len(table["id"]) if "id" in table else 0
    frames = [int(layout["frames_per_row"])] * n if layout["mode"] == "dense" else [int(x) for x in table["length"]]
    return {"label_index": [lookup.get(str(x), -1) for x in table.get("label", [])] or [-1] * n, "frames": frames}


def join_metadata(url: str, meta: dict[str, Any], version: int, labels: Sequence[str]) -> dict[str, Any]:
    """How to go from a row of the exported example table to its features (JSON)."""
    layout = meta["layout"]
    arrays = {
        name: {"path": f"features/{name}", "dims": list(feature_dims(Layout.from_dict(layout), name)), "frame_shape": list(shape)}
        for name, shape in layout["feature_shapes"].items()
    }
    how = ("features[name][offset : offset + length] is the example's (frames, *bins) array" if layout["mode"] == "ragged"
           else "features[name][offset] is the example's (frames, *bins) array")
    return {"store": public_url(url), "version": int(version), "layout": layout["mode"], "dtype": layout.get("dtype", "float32"),
            "arrays": arrays, "labels": list(labels), "rows": how, "sample_rate": meta.get("sample_rate"),
            "hop_length": meta.get("hop_length"), "frame_rate_hz": meta.get("frame_rate_hz"),
            "normalization": meta.get("normalization", "none"), "open": "zarr.open_group(store, mode='r') or pipeline.open_xarray(store)"}


def open_xarray(url: str, version: int | None = None, *, split: str | None = None, features: Sequence[str] | None = None,
                storage_options: dict[str, Any] | None = None):
    """The features of a store version as an ``xarray.Dataset``, with the example table as coordinates.

    Needs the ``xarray`` extra (``pip install 'audioprep[xarray]'``). Arrays are lazy (dask);
    values are as stored (no normalization).

    - ragged layout: each feature is ``(frame, <name>_bin)`` over the whole array; the example
      table's columns are coordinates along ``example`` (``offset``, ``length`` say which frames).
    - dense layout: each feature is ``(example, frame, <name>_bin)``, one row per example of
      the version, with the table's columns as coordinates along ``example``.

    Parameters
    ----------
    url : store path or fsspec URL.
    version : a committed version; default the newest.
    split : only these examples (``train``, ``val``, ``test``); default all.
    features : only these features; default all.
    storage_options : fsspec options.
    """
    try:
        import xarray as xr
    except ImportError as exc:  # pragma: no cover - the extra is installed in the test envs
        raise ImportError("open_xarray needs xarray: pip install 'audioprep[xarray]'") from exc
    loc = StoreLocation(url, dict(storage_options or {}))
    meta = read_meta(loc)
    if meta is None or not meta.get("current_version"):
        raise StoreError(f"no committed audioprep store at {url}; run `audioprep run CATALOG` first")
    v = check_version(url, meta, version)
    group = loc.open_group()
    cols = read_table(group, table_path(v, "examples"))
    keep = np.isin(cols["status"], ACTIVE)
    if split is not None:
        keep &= cols["split"] == split
    rows = np.flatnonzero(keep)
    table = {k: c[rows] for k, c in cols.items()}
    labels = version_labels(loc, v)
    names = list(features or meta["layout"]["feature_shapes"])
    unknown = [f for f in names if f not in meta["layout"]["feature_shapes"]]
    if unknown:
        raise StoreError(f"features {unknown} are not in {url}; it has {list(meta['layout']['feature_shapes'])}")
    ds = xr.open_zarr(loc.zarr_store(read_only=True), group="features", consolidated=False)[names]
    coords = {k: ("example", np.asarray(c)) for k, c in table.items()}
    extra = join_columns(meta, table, labels)
    coords.update({k: ("example", np.asarray(c, np.int64)) for k, c in extra.items()})
    coords["example_row"] = ("example", rows.astype(np.int64))
    if meta["layout"]["mode"] == "dense":
        ds = ds.isel(row=table["offset"].astype(np.int64)).rename({"row": "example"})
    ds = ds.assign_coords(coords)
    ds.attrs = {"audioprep": json.dumps(join_metadata(url, meta, v, labels))}
    return ds
