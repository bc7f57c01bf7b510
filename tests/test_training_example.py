"""examples/train_classifier.py on a generated demo corpus, and the DataLoader advice of docs/training.md."""

from __future__ import annotations

import importlib.util
import multiprocessing
import pathlib
import re
from concurrent.futures import ProcessPoolExecutor

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


def test_example_beats_chance_on_unseen_speakers(demo_store):
    train, test = open_dataset(demo_store, "train"), open_dataset(demo_store, "test")
    assert not set(train.table["group"]) & set(test.table["group"]), "test speakers must be unseen in train"
    assert len(set(test.table["label"])) == 4
    accuracy = _load_example().main(demo_store, verbose=False)
    assert accuracy >= 0.6, f"accuracy {accuracy:.2f} does not clearly beat chance (0.25)"


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
