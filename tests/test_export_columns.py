"""The examples table exports with the keys a reader joins on first."""

from __future__ import annotations

import csv

from pipeline.config.catalog import load_catalog
from pipeline.report.export import KEY_COLUMNS, export_table
from pipeline.run.steps import run_catalog
from tests.conftest import base_catalog, write_catalog


def test_examples_csv_starts_with_the_key_columns(tiny_corpus, tmp_path):
    store = tmp_path / "s.zarr"
    run_catalog(load_catalog(write_catalog(tmp_path / "c.yaml", base_catalog(tiny_corpus, store))))
    out = export_table(str(store), table="examples", fmt="csv", out=str(tmp_path / "ex.csv"))
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    assert header[: len(KEY_COLUMNS)] == list(KEY_COLUMNS)
    assert len(rows) == 33 and len(set(header)) == len(header)
