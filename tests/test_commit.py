"""Provenance: every committed version records the library versions that computed it."""

from __future__ import annotations

import platform
from importlib import metadata

import librosa
import numpy as np
import soundfile
import soxr
import zarr

from pipeline import __version__
from pipeline.config.catalog import load_catalog
from pipeline.run import steps
from pipeline.run.commit import PACKAGES, package_versions
from tests.conftest import base_catalog, write_catalog

# the libraries whose defaults and numerics decide the stored features
COMPUTING = ("librosa", "numpy", "scipy", "numba", "zarr", "numcodecs", "soxr", "soundfile")


def test_package_versions_name_the_installed_libraries():
    v = package_versions()
    assert v["audioprep"] == __version__ and v["python"] == platform.python_version()
    assert set(COMPUTING) <= set(PACKAGES)
    for name in PACKAGES:
        assert v[name] == metadata.version(name)
    assert v["librosa"] == librosa.__version__
    assert v["numpy"] == np.__version__
    assert v["zarr"] == zarr.__version__
    assert v["soundfile"] == soundfile.__version__
    assert v["soxr"] == soxr.__version__


def test_each_committed_version_records_its_library_versions(tiny_corpus, tmp_path):
    store = tmp_path / "s.zarr"
    cat = write_catalog(tmp_path / "c.yaml", base_catalog(tiny_corpus, store))
    summary = steps.run_catalog(load_catalog(cat))
    assert summary["version"] == 1
    meta = zarr.open_group(str(store), mode="r").attrs["audioprep"]
    expected = package_versions()
    (record,) = meta["versions"]
    assert record["package_versions"] == expected
    assert meta["package_versions"] == expected
    assert record["package_versions"]["librosa"] == librosa.__version__
