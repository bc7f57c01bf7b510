"""pipeline.open_xarray and the Parquet export of the example table: both lead back to the
same features the reader returns."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr

from pipeline import open_dataset, open_xarray
from pipeline.config.catalog import load_catalog
from pipeline.errors import StoreError
from pipeline.report.export import export_table
from pipeline.run.steps import run_catalog
from pipeline.store.state import table_path
from tests.conftest import base_catalog, write_catalog


@pytest.fixture(scope="module")
def dense_store(tiny_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("dense")
    cat = base_catalog(tiny_corpus, root / "d.zarr", audio={"sample_rate": 16000, "clip": {"mode": "fixed", "seconds": 0.5}})
    run_catalog(load_catalog(str(write_catalog(root / "c.yaml", cat))))
    return root / "d.zarr"


def test_open_xarray_ragged_names_dims_and_carries_the_table(reader_store):
    xds = open_xarray(str(reader_store))
    ds = open_dataset(str(reader_store), normalize=False)
    assert xds["log_mel"].dims == ("frame", "log_mel_bin") and xds["mfcc"].dims == ("frame", "mfcc_bin")
    assert xds.sizes["example"] == len(ds) == 120
    for col in ("id", "label", "split", "offset", "length", "duration_seconds", "label_index", "frames", "example_row"):
        assert col in xds.coords and xds.coords[col].dims == ("example",)
    assert list(xds.coords["id"].values) == [str(x) for x in ds.table["id"]]
    for i in (0, 57, 119):
        o, n = int(xds.offset[i]), int(xds.length[i])
        np.testing.assert_array_equal(xds["log_mel"][o : o + n].values, ds[i]["features"]["log_mel"])
        assert int(xds.label_index[i]) == ds[i]["label_index"]
    info = json.loads(xds.attrs["audioprep"])
    assert info["version"] == 1 and info["layout"] == "ragged" and info["arrays"]["log_mel"]["dims"] == ["frame", "log_mel_bin"]


def test_open_xarray_dense_has_one_row_per_example(dense_store):
    xds = open_xarray(str(dense_store), split="train", features=["log_mel"])
    ds = open_dataset(str(dense_store), "train", normalize=False)
    assert list(xds.data_vars) == ["log_mel"]
    assert xds["log_mel"].dims == ("example", "frame", "log_mel_bin")
    assert xds.sizes["example"] == len(ds) and set(xds.split.values) == {"train"}
    for i in range(len(ds)):
        np.testing.assert_array_equal(xds["log_mel"][i].values, ds[i]["features"]["log_mel"])


def test_open_xarray_errors_name_the_problem(reader_store):
    with pytest.raises(StoreError, match="no version 4"):
        open_xarray(str(reader_store), version=4)
    with pytest.raises(StoreError, match="nope"):
        open_xarray(str(reader_store), features=["nope"])


def test_parquet_export_carries_every_column_and_joins_back_to_the_arrays(reader_store, tmp_path):
    out = export_table(str(reader_store), table="examples", fmt="parquet", out=str(tmp_path / "ex.parquet"))
    t = pq.read_table(out)
    group = zarr.open_group(str(reader_store), mode="r")
    stored = set(group[table_path(1, "examples")].array_keys())
    assert stored <= set(t.column_names)  # whatever columns the table has
    assert {"label_index", "frames", "example_row"} <= set(t.column_names)
    info = json.loads(t.schema.metadata[b"audioprep"])
    assert info["store"] == str(reader_store) and info["version"] == 1 and info["layout"] == "ragged"
    assert info["labels"] == open_dataset(str(reader_store)).labels
    # join back as a Polars / datasets user would: open the arrays the metadata names, slice by offset/length
    rows = t.to_pylist()
    ds = open_dataset(str(reader_store), normalize=False)
    by_id = {str(x): i for i, x in enumerate(ds.table["id"])}
    arr = group[info["arrays"]["log_mel"]["path"]]
    for r in rows[::17]:
        x = arr[r["offset"] : r["offset"] + r["length"]]
        item = ds[by_id[r["id"]]]
        np.testing.assert_array_equal(x, item["features"]["log_mel"])
        assert r["label_index"] == item["label_index"] and r["frames"] == x.shape[0]


def test_cli_export_parquet_examples(reader_store, tmp_path):
    exe = pathlib.Path(sys.executable).parent / "audioprep"
    out = tmp_path / "e.parquet"
    r = subprocess.run([str(exe), "export", str(reader_store), "--table", "examples", "--format", "parquet", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert pq.read_table(out).num_rows == 120
