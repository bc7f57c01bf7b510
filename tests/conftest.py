"""Shared fixtures: a tiny generated corpus and catalog builders. No fixture mocks a component."""

from __future__ import annotations

import copy
import os
import pathlib
import time

import pytest
import yaml

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

# Prefect configures its console log handler on the stderr of the moment it is imported. Imported
# here, that is the session's; imported first inside a test that captures output (capfd), the
# handler would keep that test's stream, closed afterwards, and every later record (botocore's
# DEBUG records under caplog.set_level(DEBUG): tens of thousands) would print a traceback.
import prefect.main  # noqa: E402, F401

from pipeline.demo import make_corpus  # noqa: E402


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> pathlib.Path:
    """32 files: 4 classes x 4 speakers x 2 files, WAV@16k and FLAC@22.05k, some stereo."""
    root = tmp_path_factory.mktemp("corpus") / "audio"
    make_corpus(root, speakers=4, files_per_speaker_and_class=2, min_seconds=0.5, max_seconds=1.2, seed=1)
    return root


def base_catalog(audio_dir: pathlib.Path, store: pathlib.Path, **overrides) -> dict:
    cat = {
        "dataset": "tiny",
        "seed": 0,
        "output": {"store": str(store)},
        "sources": [
            {
                "name": "demo",
                "url": str(audio_dir),
                "pattern": "**/*.{wav,flac}",
                "label": {"from": "parent_dir"},
                "group": {"from": "regex", "pattern": r"(?P<group>spk\d+)_"},
            }
        ],
        "audio": {"sample_rate": 16000},
        "features": {"stft": {"n_fft": 400, "hop_length": 160}, "log_mel": {"n_mels": 40}, "mfcc": {"n_mfcc": 13}},
        "splits": {"train": 0.5, "val": 0.25, "test": 0.25},
        "execution": {"partition_seconds": 8},
    }
    for k, v in overrides.items():
        cat[k] = v
    return copy.deepcopy(cat)


def write_catalog(path: pathlib.Path, cat: dict) -> pathlib.Path:
    path.write_text(yaml.safe_dump(cat, sort_keys=False))
    return path


@pytest.fixture
def catalog_factory(tmp_path):
    def make(audio_dir, **overrides):
        cat = base_catalog(audio_dir, tmp_path / "store.zarr", **overrides)
        return write_catalog(tmp_path / "catalog.yaml", cat), cat

    return make


@pytest.fixture(scope="session")
def reader_store(tmp_path_factory) -> pathlib.Path:
    """A ragged store of 120 clips of 0.3-2.5 s (log_mel 40, mfcc 13) in several shards, for the reader tests."""
    from pipeline.config.catalog import load_catalog
    from pipeline.run.steps import run_catalog

    root = tmp_path_factory.mktemp("reader")
    make_corpus(root / "audio", speakers=6, files_per_speaker_and_class=5, min_seconds=0.3, max_seconds=2.5, seed=3)
    cat = base_catalog(root / "audio", root / "store.zarr", splits={"train": 1.0, "val": 0.0, "test": 0.0}, execution={"partition_seconds": 90})
    run_catalog(load_catalog(str(write_catalog(root / "c.yaml", cat))))
    return root / "store.zarr"


def wait_for(pred, timeout: float, what: str) -> None:
    """Poll ``pred`` every 0.2 s until it is true; TimeoutError(``what``) after ``timeout`` seconds."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return
        time.sleep(0.2)
    raise TimeoutError(what)
