"""examples/train_classifier.py on a generated demo corpus, and the DataLoader advice of docs/training.md."""

from __future__ import annotations

import importlib.util
import multiprocessing
import pathlib
import re
import subprocess
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from conftest import base_catalog, write_catalog
from pipeline.config.catalog import load_catalog
from pipeline.demo import make_corpus
from pipeline.run.steps import run_catalog
from pipeline.store.reader import open_dataset

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load_example():
    spec = importlib.util.spec_from_file_location("train_classifier", ROOT / "examples" / "train_classifier.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("demo")
    make_corpus(tmp / "audio", speakers=6, files_per_speaker_and_class=4, seed=3)
    store = tmp / "store.zarr"
    cat = base_catalog(tmp / "audio", store, splits={"train": 0.5, "val": 0.17, "test": 0.33, "by": "group"})
    run_catalog(load_catalog(write_catalog(tmp / "catalog.yaml", cat)))
    return str(store)


@pytest.fixture(scope="module")
def per_example_store(tmp_path_factory) -> str:
    """The same corpus, the store recording ``features.normalization: per_example``."""
    tmp = tmp_path_factory.mktemp("per_example")
    make_corpus(tmp / "audio", speakers=6, files_per_speaker_and_class=4, seed=3)
    store = tmp / "store.zarr"
    cat = base_catalog(tmp / "audio", store, splits={"train": 0.5, "val": 0.17, "test": 0.33, "by": "group"})
    cat["features"] = {**cat["features"], "normalization": "per_example"}
    run_catalog(load_catalog(write_catalog(tmp / "catalog.yaml", cat)))
    return str(store)


def test_example_beats_chance_on_unseen_speakers(demo_store):
    train, test = open_dataset(demo_store, "train"), open_dataset(demo_store, "test")
    assert not set(train.table["group"]) & set(test.table["group"]), "test speakers must be unseen in train"
    assert len(set(test.table["label"])) == 4
    accuracy = _load_example().main(demo_store, verbose=False)
    assert accuracy >= 0.6, f"accuracy {accuracy:.2f} does not clearly beat chance (0.25)"


def test_example_beats_chance_when_the_store_normalizes_per_example(per_example_store, demo_store):
    """Pooled over time, per-example-normalised features are 0 and 1 in every clip: the
    example must pool the stored values instead (pooling the normalised ones scores 0.62
    on this corpus, 1.0 with the stored values; chance is 0.25)."""
    ds = open_dataset(per_example_store, "test", features=["log_mel"])
    assert ds.normalization == "per_example"
    x = ds[0]["features"]["log_mel"]
    assert np.abs(x.mean(axis=0)).max() < 1e-4  # what the reader hands out: nothing left to pool
    example = _load_example()
    accuracy = example.main(per_example_store, verbose=False)
    assert accuracy >= 0.9, f"accuracy {accuracy:.2f} on a per_example store (chance 0.25)"
    assert accuracy == example.main(demo_store, verbose=False)  # the same corpus stored without normalization
    # pooling what the reader hands out with normalize=True is warned about
    from pipeline.store.reader import PooledStatisticsWarning

    with pytest.warns(PooledStatisticsWarning, match="per_example normalization"):
        example.clip_statistics(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PooledStatisticsWarning)
        example.clip_statistics(open_dataset(per_example_store, "test", features=["log_mel"], normalize=False))


def test_clip_statistics_match_per_item_reads(demo_store):
    example = _load_example()
    ds = open_dataset(demo_store, "test", features=["log_mel"])
    x, y = example.clip_statistics(ds, batch_size=7)
    assert x.shape == (len(ds), 2 * ds[0]["features"]["log_mel"].shape[1])
    by_id = {}
    for batch in ds.iter_batches(7, shuffle=False):
        by_id.update(zip(batch["ids"], range(len(by_id), len(by_id) + len(batch["ids"]))))
    item = ds[3]
    row = by_id[item["id"]]
    feats = item["features"]["log_mel"]
    assert y[row] == item["label_index"]
    assert abs(x[row, : feats.shape[1]] - feats.mean(axis=0)).max() < 1e-3
    assert abs(x[row, feats.shape[1] :] - feats.std(axis=0)).max() < 1e-3


def _frames(args):
    ds, i = args
    return ds[i]["id"], ds[i]["features"]["log_mel"].shape


def test_dataset_reads_in_spawn_workers_as_the_doc_says(demo_store):
    ds = open_dataset(demo_store, "val", features=["log_mel"])
    ds[0]  # the parent has read: its zarr I/O thread is running
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        got = list(pool.map(_frames, [(ds, i) for i in range(4)], timeout=60))
    assert got == [(ds[i]["id"], ds[i]["features"]["log_mel"].shape) for i in range(4)]


def test_doc_pytorch_snippet_runs_when_torch_is_installed(demo_store, monkeypatch):
    pytest.importorskip("torch", reason="torch not installed: the docs/training.md snippet is checked only with torch")
    text = (ROOT / "docs" / "training.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "DataLoader(" in b)
    code = code.replace('"data/demo.zarr"', repr(demo_store)).replace("num_workers=4", "num_workers=0").replace(
        'multiprocessing_context="spawn",', "").replace("persistent_workers=True,", "").replace("range(10)", "range(1)")
    namespace = {"__name__": "snippet"}
    exec(compile(code, "docs/training.md", "exec"), namespace)
    namespace["main"]()


def _console_after(text: str, command_part: str) -> tuple[str, list[str]]:
    """The ``$ ...`` line containing ``command_part`` in a console block of ``text`` and the output lines after it."""
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        lines = block.rstrip("\n").split("\n")
        for k, line in enumerate(lines):
            if line.startswith("$ ") and command_part in line:
                return line, lines[k + 1 :]
    raise AssertionError(f"no console block of docs/training.md runs {command_part}")


def test_doc_console_output_is_what_the_documented_command_prints(tmp_path):
    """docs/training.md's transcript is the example's output on the `make demo` store, line for line."""
    command, expected = _console_after((ROOT / "docs" / "training.md").read_text(), "examples/train_classifier.py")
    assert command.split()[-1] == "data/demo.zarr" and "..." not in expected
    # what `make demo` does: the corpus script with its defaults, then catalog.yaml
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_demo_corpus.py"), "--out", str(tmp_path / "demo-audio")], check=True, capture_output=True)
    text = (ROOT / "catalog.yaml").read_text()
    assert "store: data/demo.zarr" in text and "url: data/demo-audio" in text
    store = tmp_path / "demo.zarr"
    text = text.replace("store: data/demo.zarr", f"store: {store}").replace("url: data/demo-audio", f"url: {tmp_path / 'demo-audio'}")
    (tmp_path / "catalog.yaml").write_text(text)
    run_catalog(load_catalog(tmp_path / "catalog.yaml"))
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "train_classifier.py"), str(store)], check=True, capture_output=True, text=True, cwd=ROOT)
    got = [line.rstrip() for line in out.stdout.rstrip("\n").split("\n")]
    assert got == [line.rstrip() for line in expected], "docs/training.md is out of date; the command prints:\n" + "\n".join(got)
