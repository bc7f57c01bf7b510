"""The whole pipeline in one process (no Prefect, no Dask): store content, rejects,
incremental runs and resume. The same steps run under the flow in test_flow_e2e.py."""

from __future__ import annotations

import io
import shutil

import librosa
import numpy as np
import pytest
import soundfile as sf
import zarr

from pipeline import open_dataset
from pipeline.config.catalog import load_catalog
from pipeline.errors import StoreLockedError
from pipeline.io.discovery import probe_headers
from pipeline.run import steps
from pipeline.run.commit import prepare_store
from pipeline.run.partition import process_partition
from pipeline.run.planner import build_plan
from pipeline.store.location import StoreLocation
from pipeline.store.lock import acquire_lock, break_lock
from tests.conftest import base_catalog, write_catalog


def librosa_log_mel(path, sr=16000, n_fft=400, hop=160, n_mels=40):
    y, sr0 = sf.read(path, dtype="float32", always_2d=True)
    y = librosa.to_mono(y.T)
    y = librosa.resample(y, orig_sr=sr0, target_sr=sr, res_type="soxr_hq")
    S = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
    return librosa.power_to_db(S, ref=1.0, top_db=80.0)


@pytest.fixture
def corpus_copy(tiny_corpus, tmp_path):
    dst = tmp_path / "audio"
    shutil.copytree(tiny_corpus, dst)
    return dst


def run(cat_path, **kw):
    return steps.run_catalog(load_catalog(cat_path), **kw)


def test_store_matches_librosa_and_split_rules(tiny_corpus, tmp_path):
    store = tmp_path / "s.zarr"
    cat = write_catalog(tmp_path / "c.yaml", base_catalog(tiny_corpus, store))
    summary = run(cat)
    assert summary["examples"] == 32 and summary["rejected"] == 0
    ds = open_dataset(str(store))
    assert len(ds) == 32
    # features equal librosa called directly on the same file
    for i in (0, 7, 31):
        item = ds[i]
        ref = librosa_log_mel(str(tiny_corpus / item["metadata"]["path"]))
        got = item["features"]["log_mel"]
        assert got.dtype == np.float32 and got.shape == ref.T.shape
        np.testing.assert_allclose(got, ref.T, rtol=1e-4, atol=1e-3)
        assert item["features"]["mfcc"].shape == (got.shape[0], 13)
        assert item["label"] == item["metadata"]["path"].split("/")[0]
    # no group in two splits, every split non-empty
    t = ds.table
    groups = {}
    for g, s in zip(t["group"], t["split"]):
        groups.setdefault(g, set()).add(s)
    assert all(len(v) == 1 for v in groups.values())
    assert {len(open_dataset(str(store), split=s)) for s in ("train", "val", "test")} == {16, 8}
    # offsets/lengths index the concatenated frames exactly
    g = zarr.open_group(str(store), mode="r")
    arr = g["features/log_mel"]
    assert arr.metadata.dimension_names == ("frame", "log_mel_bin")
    o, n = int(t["offset"][3]), int(t["length"][3])
    np.testing.assert_array_equal(arr[o : o + n], ds[3]["features"]["log_mel"])
    attrs = g.attrs["audioprep"]
    assert attrs["format_version"] == 1 and attrs["package_versions"]["zarr"].startswith("3.")
    assert attrs["catalog"]["dataset"] == "tiny"


def test_xarray_opens_the_feature_group(tiny_corpus, tmp_path):
    xr = pytest.importorskip("xarray")
    store = tmp_path / "s.zarr"
    run(write_catalog(tmp_path / "c.yaml", base_catalog(tiny_corpus, store)))
    ds = xr.open_zarr(str(store), group="features", consolidated=False)
    assert ds["log_mel"].dims == ("frame", "log_mel_bin")
    ex = xr.open_zarr(str(store), group="tables/v00001/examples", consolidated=False)
    assert ex.sizes["example"] == 32


def test_fixed_length_mode_is_dense(tiny_corpus, tmp_path):
    store = tmp_path / "s.zarr"
    cat = base_catalog(tiny_corpus, store, audio={"sample_rate": 16000, "clip": {"mode": "fixed", "seconds": 1.0, "crop": "center"}})
    run(write_catalog(tmp_path / "c.yaml", cat))
    ds = open_dataset(str(store), split="train")
    x = ds[0]["features"]["log_mel"]
    assert x.shape == (101, 40)
    arr = zarr.open_group(str(store), mode="r")["features/log_mel"]
    assert arr.ndim == 3 and arr.shape[1:] == (101, 40)
    batches = list(ds.iter_batches(5, shuffle=False))
    assert sum(len(b["ids"]) for b in batches) == len(ds)
    assert batches[0]["features"]["log_mel"].shape == (5, 101, 40)


def test_reader_batches_cover_every_example_once(tiny_corpus, tmp_path):
    store = tmp_path / "s.zarr"
    run(write_catalog(tmp_path / "c.yaml", base_catalog(tiny_corpus, store)))
    ds = open_dataset(str(store), split="train")
    seen = []
    for b in ds.iter_batches(3, shuffle=True, seed=1):
        for j, id_ in enumerate(b["ids"]):
            k = list(ds.table["id"]).index(id_)
            ref = ds[k]["features"]["log_mel"]
            np.testing.assert_array_equal(b["features"]["log_mel"][j, : b["lengths"][j]], ref)
            assert b["label_index"][j] == ds.labels.index(ds[k]["label"])
        seen += b["ids"]
    assert sorted(seen) == sorted(ds.table["id"])
    a = [b["ids"] for b in ds.iter_batches(3, shuffle=True, seed=1)]
    assert a == [b["ids"] for b in ds.iter_batches(3, shuffle=True, seed=1)]
    assert a != [b["ids"] for b in ds.iter_batches(3, shuffle=False)]


def test_dataset_pickles_for_spawned_workers(tiny_corpus, tmp_path):
    import pickle

    store = tmp_path / "s.zarr"
    run(write_catalog(tmp_path / "c.yaml", base_catalog(tiny_corpus, store)))
    ds = open_dataset(str(store), split="test")
    ds2 = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(ds2[1]["features"]["mfcc"], ds[1]["features"]["mfcc"])


def _wav_bytes(y, sr, subtype="PCM_16", fmt="WAV"):
    b = io.BytesIO()
    sf.write(b, y, sr, subtype=subtype, format=fmt)
    return b.getvalue()


def test_bad_files_are_quarantined_and_the_run_goes_on(corpus_copy, tmp_path):
    bad = corpus_copy / "tone"
    sr = 16000
    good = (0.3 * np.sin(2 * np.pi * 300 * np.arange(sr) / sr)).astype(np.float32)
    (bad / "zero.wav").write_bytes(b"")
    (bad / "text.wav").write_text("hello, I am not audio\n" * 20)
    whole = _wav_bytes(good, sr)
    (bad / "header_only.wav").write_bytes(whole[:44])
    (bad / "truncated.wav").write_bytes(whole[: 44 + 2 * 4000])
    nan = good.copy()
    nan[100] = np.nan
    (bad / "nan.wav").write_bytes(_wav_bytes(nan, sr, "FLOAT"))
    (bad / "short.wav").write_bytes(_wav_bytes(good[:100], sr))
    (bad / "silence.wav").write_bytes(_wav_bytes(np.zeros(sr, np.float32), sr))
    (bad / "three_ch.wav").write_bytes(_wav_bytes(np.stack([good] * 3, 1), sr))
    (bad / "long.wav").write_bytes(_wav_bytes(np.tile(good, 5), sr))
    (bad / "flac_named.wav").write_bytes(_wav_bytes(good, sr, fmt="FLAC"))
    (bad / "spk00_naïve name é.wav").write_bytes(_wav_bytes(good, sr))
    cat = base_catalog(corpus_copy, tmp_path / "s.zarr", audio={"sample_rate": sr, "max_seconds": 4.0, "max_channels": 2})
    summary = run(write_catalog(tmp_path / "c.yaml", cat))
    ds = open_dataset(str(tmp_path / "s.zarr"))
    paths = set(ds.table["path"])
    for ok in ("tone/truncated.wav", "tone/flac_named.wav", "tone/spk00_naïve name é.wav", "tone/silence.wav"):
        assert ok in paths, ok
    flags = dict(zip(ds.table["path"], ds.table["flags"]))
    assert flags["tone/silence.wav"] == "silent"
    rejects = {r["path"]: r for r in _rejects(tmp_path / "s.zarr")}
    assert set(rejects) == {f"tone/{n}" for n in ("zero.wav", "text.wav", "header_only.wav", "nan.wav", "short.wav", "three_ch.wav", "long.wav")}
    assert rejects["tone/nan.wav"]["stage"] == "samples"
    assert rejects["tone/long.wav"]["stage"] == "limits"
    assert rejects["tone/three_ch.wav"]["stage"] == "limits"
    assert rejects["tone/short.wav"]["stage"] == "limits"
    assert summary["rejected"] == 7 and summary["examples"] == 32 + 4
    trunc = ds[list(ds.table["path"]).index("tone/truncated.wav")]
    assert trunc["metadata"]["duration_seconds"] == pytest.approx(0.25)


def _rejects(store):
    from pipeline.report.export import table_columns

    cols = table_columns(str(store), "rejects")
    return [dict(zip(cols, vals)) for vals in zip(*cols.values())]


def test_incremental_run_processes_only_new_and_changed_and_marks_removed(corpus_copy, tmp_path):
    store = tmp_path / "s.zarr"
    cat = write_catalog(tmp_path / "c.yaml", base_catalog(corpus_copy, store))
    first = run(cat)
    ds1 = open_dataset(str(store))
    split1 = dict(zip(ds1.table["id"], ds1.table["split"]))
    again = run(cat)
    assert again.get("up_to_date") and again["processed_audio_seconds"] == 0
    # add one file, change one, remove one
    files = sorted(corpus_copy.rglob("*.wav"))
    shutil.copy(files[0], files[0].parent / "spk00_added_9.wav")
    y, sr = sf.read(files[1], dtype="float32")
    sf.write(files[1], y[: len(y) // 2], sr)
    files[2].unlink()
    third = run(cat)
    assert third["version"] == 2 and third["new_examples"] == 2 and third["removed"] == 1 and third["replaced"] == 1
    assert third["processed_audio_seconds"] < first["processed_audio_seconds"] / 4
    ds3 = open_dataset(str(store))
    assert len(ds3) == 32
    split3 = dict(zip(ds3.table["id"], ds3.table["split"]))
    assert all(split3[i] == s for i, s in split1.items() if i in split3)
    table = zarr.open_group(str(store))["tables/v00002/examples"]
    state = dict(zip(table["path"][:], table["status"][:]))
    assert state[str(files[2].relative_to(corpus_copy))] == "removed"
    # version 1 is still readable as it was
    assert len(open_dataset(str(store), version=1)) == 32
    assert set(open_dataset(str(store), version=1).table["id"]) == set(ds1.table["id"])


def test_resume_after_a_crash_finishes_only_remaining_partitions(tiny_corpus, tmp_path):
    store = tmp_path / "s.zarr"
    loaded = load_catalog(write_catalog(tmp_path / "c.yaml", base_catalog(tiny_corpus, store)))
    loc = steps.store_location(loaded)
    refs, banks = steps.discover(loaded)
    heads = {h.example_id: h for h in probe_headers(refs, {})}
    plan = build_plan(loaded, refs, heads, banks, location=loc, run_id="crashed")
    acquire_lock(loc, "crashed")
    prepare_store(plan)
    process_partition(plan.partitions[0], plan.ctx)  # then the driver "dies": no commit
    # a new run (same process: the lock owner pid is alive, so take it over explicitly)
    break_lock(loc)
    done = []
    summary = steps.run_catalog(loaded, on_partition=done.append)
    assert [d["skipped"] for d in done] == [True] + [False] * (len(plan.partitions) - 1)
    ref_store = tmp_path / "ref.zarr"
    steps.run_catalog(loaded, store=str(ref_store))
    a, b = open_dataset(str(store)), open_dataset(str(ref_store))
    assert list(a.table["id"]) == list(b.table["id"]) and summary["examples"] == 32
    for i in range(len(a)):
        np.testing.assert_array_equal(a[i]["features"]["log_mel"], b[i]["features"]["log_mel"])


def test_second_concurrent_run_is_refused(tiny_corpus, tmp_path):
    store = tmp_path / "s.zarr"
    loc = StoreLocation(str(store))
    store.mkdir()
    loc.write_json("_lock.json", {"host": "another-host", "pid": 1, "run_id": "other", "since": "2026-01-01"})
    loaded = load_catalog(write_catalog(tmp_path / "c.yaml", base_catalog(tiny_corpus, store)))
    with pytest.raises(StoreLockedError, match="audioprep unlock"):
        steps.run_catalog(loaded)
    break_lock(loc)
    assert steps.run_catalog(loaded)["examples"] == 32
    assert not loc.exists("_lock.json")


def test_long_files_split_into_consecutive_examples(tmp_path):
    src = tmp_path / "audio" / "speech"
    src.mkdir(parents=True)
    sr = 16000
    rng = np.random.default_rng(0)
    y = (0.2 * rng.standard_normal(10 * sr)).astype(np.float32)
    sf.write(src / "spk1_long.flac", y, sr)
    sf.write(src / "spk2_short.flac", y[: 2 * sr], sr)
    store = tmp_path / "s.zarr"
    cat = base_catalog(tmp_path / "audio", store, audio={"sample_rate": sr, "max_seconds": 4.0, "long_files": "split"})
    cat["splits"] = {"train": 1.0, "val": 0.0, "test": 0.0}
    p = write_catalog(tmp_path / "c.yaml", cat)
    s = run(p)
    assert s["examples"] == 4 and s["rejected"] == 0
    ds = open_dataset(str(store))
    t = ds.table
    long_rows = sorted((float(t["start_seconds"][i]), i) for i in range(len(ds)) if t["path"][i] == "speech/spk1_long.flac")
    assert [st for st, _ in long_rows] == [0.0, 4.0, 8.0]
    y16 = sf.read(src / "spk1_long.flac", dtype="float32")[0]
    for st, i in long_rows:
        seg = y16[int(st * sr) : int(st * sr) + 4 * sr]
        S = librosa.power_to_db(librosa.feature.melspectrogram(y=seg, sr=sr, n_fft=400, hop_length=160, n_mels=40), ref=1.0, top_db=80.0)
        np.testing.assert_allclose(ds[i]["features"]["log_mel"], S.T, rtol=1e-4, atol=1e-3)
        assert ds[i]["metadata"]["file_id"] == ds.table["id"][long_rows[0][1]].split("@")[0]
    assert run(p).get("up_to_date")  # split files are recognised as unchanged
    # rejecting is the default
    cat["audio"]["long_files"] = "reject"
    cat["output"]["store"] = str(tmp_path / "r.zarr")
    s = run(write_catalog(tmp_path / "c2.yaml", cat))
    assert s["examples"] == 1 and s["rejected"] == 1


def test_store_keeps_the_shard_size_it_was_created_with(corpus_copy, tmp_path, monkeypatch):
    """A release that sizes new stores' shards differently goes on appending to an existing
    store with its own sizes: same fingerprint, no refusal, whole shards of the stored size."""
    import pipeline.store.layout as layout_mod

    store = tmp_path / "s.zarr"
    cat = write_catalog(tmp_path / "c.yaml", base_catalog(corpus_copy, store, execution={"partition_seconds": 600}))
    with monkeypatch.context() as m:  # the sizing of "another release"
        m.setattr(layout_mod, "SHARD_TARGET_BYTES", 2 << 20)
        assert run(cat)["examples"] == 32
    from pipeline.run.planner import make_run_layout

    made_now = make_run_layout(load_catalog(str(cat)))
    g = zarr.open_group(str(store), mode="r")
    stored = g.attrs["audioprep"]["layout"]
    assert (stored["chunk"], stored["shard"]) == (4096, 12_288) and made_now.shard == 57_344
    assert g["features/log_mel"].shards[0] == 12_288

    first = next(corpus_copy.rglob("*.wav"))
    shutil.copy(first, first.with_name("zz_" + first.name))
    summary = run(cat)
    assert summary["examples"] == 33
    g = zarr.open_group(str(store), mode="r")
    assert g.attrs["audioprep"]["layout"] == stored and g["features/log_mel"].shards[0] == 12_288
    ds = open_dataset(str(store))
    assert len(ds) == 33
    new = next(i for i in range(33) if ds[i]["metadata"]["path"].endswith("zz_" + first.name))
    old = next(i for i in range(33) if ds[i]["metadata"]["path"] == str(first.relative_to(corpus_copy)))
    np.testing.assert_array_equal(ds[new]["features"]["log_mel"], ds[old]["features"]["log_mel"])
