"""Bad files inside a partition: a file changed during the run, truncated files, absurd
headers. Each becomes a kept-and-flagged row or a reject row naming the file; the partition
writes the rest and the run goes on."""

from __future__ import annotations

import io
import shutil

import numpy as np
import soundfile as sf

from pipeline import open_dataset
from pipeline.config.catalog import load_catalog
from pipeline.io.discovery import probe_headers
from pipeline.run import steps
from pipeline.run.commit import commit_run, prepare_store
from pipeline.run.partition import manifest_path, process_partition
from pipeline.run.planner import build_plan
from pipeline.store.location import StoreLocation
from pipeline.store.lock import acquire_lock
from tests.conftest import base_catalog, write_catalog


def _bytes(y, sr, fmt="WAV"):
    b = io.BytesIO()
    sf.write(b, y, sr, format=fmt, subtype="PCM_16")
    return b.getvalue()


def _zeros_flac(path, sr, channels, seconds):
    block = np.zeros((sr, channels), np.int16)
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=channels, format="FLAC", subtype="PCM_16") as f:
        for _ in range(seconds):
            f.write(block)


def _rejects(store):
    from pipeline.report.export import table_columns

    cols = table_columns(str(store), "rejects")
    return {r["path"]: r for r in (dict(zip(cols, vals)) for vals in zip(*cols.values()))}


def test_file_replaced_by_a_longer_one_during_the_run_is_rejected_and_the_partition_completes(tiny_corpus, tmp_path):
    src = tmp_path / "audio"
    shutil.copytree(tiny_corpus, src)
    store = tmp_path / "s.zarr"
    loaded = load_catalog(write_catalog(tmp_path / "c.yaml", base_catalog(src, store)))
    loc = StoreLocation(str(store))
    refs, banks = steps.discover(loaded)
    heads = {h.example_id: h for h in probe_headers(refs, {})}
    plan = build_plan(loaded, refs, heads, banks, location=loc, run_id="r1")
    acquire_lock(loc, "r1")  # as a run holds it: prepare and commit check it (fencing)
    prepare_store(plan)
    part = plan.partitions[0]
    victim = part.items[0]
    assert part.capacity < 60 * 100  # 60 s at hop 160 cannot fit the region planned
    # replaced after planning, before its partition reads it
    (src / victim.rel_path).write_bytes(_bytes(np.full(16_000 * 60, 0.1, np.float32), 16_000))
    for p in plan.partitions:
        process_partition(p, plan.ctx)
    manifest = loc.read_json(manifest_path(part.partition_id))
    assert len(manifest["rejects"]) == 1
    rej = manifest["rejects"][0]
    assert (rej["path"], rej["stage"], rej["error_class"]) == (victim.rel_path, "changed", "ChangedDuringRun")
    assert rej["message"].startswith(f"{victim.rel_path}: changed: decoded 960000 frames at 16000 Hz (60.0 s) but planning read {victim.frames} frames")
    assert [r["path"] for r in manifest["rows"]] == [it.rel_path for it in part.items[1:]]
    assert manifest["used"] <= part.capacity
    summary = commit_run(plan)
    assert summary["rejected"] == 1 and summary["new_examples"] == 31
    ds = open_dataset(str(store))
    assert len(ds) == 31 and victim.rel_path not in set(ds.table["path"])
    assert _rejects(store)[victim.rel_path]["error_class"] == "ChangedDuringRun"


def test_truncated_files_are_kept_and_flagged_and_absurd_headers_rejected(tiny_corpus, tmp_path):
    src = tmp_path / "audio"
    shutil.copytree(tiny_corpus, src)
    bad = src / "tone"
    y = np.random.default_rng(3).uniform(-0.5, 0.5, 160_000).astype(np.float32)
    wav = _bytes(y[:16_000], 16_000)
    (bad / "cut.wav").write_bytes(wav[: 44 + 2 * 8000])
    flac = _bytes(y, 16_000, "FLAC")
    (bad / "cut.flac").write_bytes(flac[: len(flac) // 2])
    _zeros_flac(bad / "rate.flac", 655_350, 8, 1)
    _zeros_flac(bad / "zip.flac", 16_000, 8, 300)
    store = tmp_path / "s.zarr"
    summary = steps.run_catalog(load_catalog(write_catalog(tmp_path / "c.yaml", base_catalog(src, store))))
    ds = open_dataset(str(store))
    flags = dict(zip(ds.table["path"], ds.table["flags"]))
    # both are white noise: a blind SNR estimate reads it all as noise floor (low_snr)
    assert flags["tone/cut.wav"] == "truncated,low_snr" and flags["tone/cut.flac"] == "truncated,low_snr"
    assert sum(1 for f in flags.values() if "truncated" in f.split(",")) == 2
    durations = dict(zip(ds.table["path"], ds.table["duration_seconds"]))
    assert durations["tone/cut.wav"] == 0.5 and durations["tone/cut.flac"] == 77_824 / 16_000
    rejects = _rejects(store)
    assert set(rejects) == {"tone/rate.flac", "tone/zip.flac"}
    assert (rejects["tone/rate.flac"]["stage"], rejects["tone/rate.flac"]["error_class"]) == ("limits", "SampleRateTooHigh")
    # (checked at decode; at planning too once the planner applies header_limits_problem)
    assert rejects["tone/rate.flac"]["message"].startswith("tone/rate.flac: ")
    assert "sample rate 655350 Hz > audio.max_source_sample_rate=384000" in rejects["tone/rate.flac"]["message"]
    assert (rejects["tone/zip.flac"]["stage"], rejects["tone/zip.flac"]["error_class"]) == ("limits", "ImplausibleHeader")
    assert rejects["tone/zip.flac"]["message"].startswith("tone/zip.flac: ")
    assert "header declares 76.8 MB of samples (300.0 s x 16000 Hz x 8 ch)" in rejects["tone/zip.flac"]["message"]
    assert summary["rejected"] == 2 and summary["examples"] == 34


def test_max_source_sample_rate_is_a_catalog_setting(tiny_corpus, tmp_path):
    from pipeline.config.catalog import Audio
    from pipeline.run.planner import fingerprinted_audio

    src = tmp_path / "audio"
    shutil.copytree(tiny_corpus, src)
    y = np.random.default_rng(4).uniform(-0.5, 0.5, 96_000).astype(np.float32)
    (src / "tone" / "hi.wav").write_bytes(_bytes(y, 96_000))
    store = tmp_path / "s.zarr"
    cat = base_catalog(src, store)
    cat["audio"] = {**cat["audio"], "max_source_sample_rate": 48_000}
    summary = steps.run_catalog(load_catalog(write_catalog(tmp_path / "c.yaml", cat)))
    rejects = _rejects(store)
    assert set(rejects) == {"tone/hi.wav"} and summary["examples"] == 32
    assert "sample rate 96000 Hz > audio.max_source_sample_rate=48000" in rejects["tone/hi.wav"]["message"]
    # at its default the key is not fingerprinted: stores written before it existed stay up to date
    assert "max_source_sample_rate" not in fingerprinted_audio(Audio())
    assert fingerprinted_audio(Audio(max_source_sample_rate=48_000))["max_source_sample_rate"] == 48_000
