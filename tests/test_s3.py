"""Sources and the store on S3, against a real S3 endpoint on loopback (moto's server).

Covers: a run from ``s3://`` sources into an ``s3://`` store equal to a local run, incremental
re-runs keyed by ETag, secrets kept out of every output, the local fetch cache, and batched
fetching equal to one-open-per-file fetching.
"""

from __future__ import annotations

import json
import logging
import pathlib
import types

import numpy as np
import pytest
import zarr

from pipeline import open_dataset
from pipeline.config.catalog import load_catalog
from pipeline.errors import AudioprepError, CatalogError, SourceError
from pipeline.io.discovery import list_source, probe_headers
from pipeline.io.fetch import fetch_many, fetch_sequential
from pipeline.run import steps
from pipeline.store.location import StoreLocation
from pipeline.store.state import read_meta
from tests.conftest import base_catalog, write_catalog
from tests.s3util import (  # noqa: F401 - s3_endpoint and s3_env are fixtures
    ACCESS_KEY,
    BUCKET,
    ODD_NAMES,
    SECRET,
    all_objects,
    corpus_with_odd_names,
    put,
    resolved_options,
    s3_client,
    s3_endpoint,
    s3_env,
    storage_options,
    tone,
    upload_tree,
    wav_bytes,
)


def s3_catalog(endpoint: str, audio_prefix: str, store: str, *, source_options=None, **overrides) -> dict:
    """The conftest catalog with its source and store moved to the bucket."""
    cat = base_catalog(pathlib.Path("unused"), pathlib.Path("unused"), **overrides)
    cat["sources"][0]["url"] = f"s3://{BUCKET}/{audio_prefix}"
    cat["sources"][0]["storage_options"] = source_options or storage_options(endpoint)
    cat["output"] = {"store": f"s3://{BUCKET}/{store}", "storage_options": storage_options(endpoint)}
    return cat


def run(tmp_path: pathlib.Path, cat: dict, name: str = "c.yaml") -> dict:
    return steps.run_catalog(load_catalog(write_catalog(tmp_path / name, cat)))


def s3_dataset(endpoint: str, store: str, split: str | None = None):
    return open_dataset(f"s3://{BUCKET}/{store}", split=split, storage_options=resolved_options(endpoint))


def etag(endpoint: str, key: str) -> str:
    return s3_client(endpoint).head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')


@pytest.fixture(scope="module")
def reference(s3_endpoint, tiny_corpus, tmp_path_factory):
    """The corpus (plus odd names) uploaded to ``audio/``; one S3 run and one local run of it."""
    tmp = tmp_path_factory.mktemp("s3ref")
    audio = corpus_with_odd_names(tiny_corpus, tmp / "audio")
    upload_tree(s3_endpoint, audio, BUCKET, "audio")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        s3_summary = run(tmp, s3_catalog(s3_endpoint, "audio", "store.zarr"), "s3.yaml")
    local_store = tmp / "local.zarr"
    local_summary = run(tmp, base_catalog(audio, local_store), "local.yaml")
    return types.SimpleNamespace(audio=audio, s3=s3_summary, local=local_summary, local_store=str(local_store))


def assert_same_dataset(a, b) -> None:
    assert list(a.table["id"]) == list(b.table["id"]) and len(a) > 0
    assert list(a.table["label"]) == list(b.table["label"])
    assert list(a.table["path"]) == list(b.table["path"])
    for i in range(len(a)):
        fa, fb = a[i]["features"], b[i]["features"]
        assert fa.keys() == fb.keys()
        for name in fa:
            np.testing.assert_array_equal(fa[name], fb[name])


# --- 1. sources and store on S3 ---------------------------------------------------------------


def test_s3_run_reads_back_equal_to_a_local_run(s3_endpoint, reference):
    n = 32 + len(ODD_NAMES)
    assert reference.s3["examples"] == reference.local["examples"] == n
    assert reference.s3["rejected"] == 0
    assert_same_dataset(s3_dataset(s3_endpoint, "store.zarr", "train"), open_dataset(reference.local_store, split="train"))
    full = s3_dataset(s3_endpoint, "store.zarr")
    local = open_dataset(reference.local_store)
    for col in ("id", "split", "label", "offset", "length", "duration_seconds"):
        assert list(full.table[col]) == list(local.table[col]), col
    # every feature array, whole, byte for byte
    remote_group = zarr.open_group(StoreLocation(f"s3://{BUCKET}/store.zarr", resolved_options(s3_endpoint)).zarr_store(read_only=True), mode="r")
    local_group = zarr.open_group(reference.local_store, mode="r")
    names = sorted(local_group["features"].array_keys())
    assert names and names == sorted(remote_group["features"].array_keys())
    for name in names:
        np.testing.assert_array_equal(remote_group[f"features/{name}"][:], local_group[f"features/{name}"][:])
    assert set(ODD_NAMES) <= set(full.table["path"])
    # content keys are size:ETag of the object as S3 reports it
    i = list(full.table["path"]).index(ODD_NAMES[0])
    key = f"audio/{ODD_NAMES[0]}"
    size = (reference.audio / ODD_NAMES[0]).stat().st_size
    assert full.table["content_key"][i] == f"{size}:{etag(s3_endpoint, key)}"
    # the store really is in the bucket: Zarr metadata, chunks, tables, manifests
    keys = set(all_objects(s3_endpoint, BUCKET, "store.zarr/"))
    assert "store.zarr/zarr.json" in keys and "store.zarr/_lock.json" not in keys
    assert any(k.startswith("store.zarr/features/log_mel/c/") for k in keys)
    assert any(k.startswith("store.zarr/_partitions/") and k.endswith(".json") for k in keys)


# --- 2. incremental re-runs -------------------------------------------------------------------


def test_incremental_rerun_on_s3_uses_etags(s3_endpoint, s3_env, tiny_corpus, tmp_path):
    files = sorted(p for p in tiny_corpus.rglob("*.wav"))[:6]
    for p in files:
        put(s3_endpoint, BUCKET, f"inc/{p.relative_to(tiny_corpus).as_posix()}", p.read_bytes())
    cat = s3_catalog(s3_endpoint, "inc", "inc.zarr")
    first = run(tmp_path, cat)
    assert first["examples"] == 6 and first["version"] == 1

    again = run(tmp_path, cat)
    assert again["up_to_date"] and again["processed_audio_seconds"] == 0

    put(s3_endpoint, BUCKET, "inc/tone/spk00_added é 9.wav", wav_bytes(tone(440.0, 0.9)))
    third = run(tmp_path, cat)
    assert third["version"] == 2 and third["new_examples"] == 1 and third["replaced"] == 0
    assert third["processed_audio_seconds"] == pytest.approx(0.9)
    assert "tone/spk00_added é 9.wav" in set(s3_dataset(s3_endpoint, "inc.zarr").table["path"])

    # same size, other bytes: only the ETag tells them apart
    rel = files[0].relative_to(tiny_corpus).as_posix()
    before = s3_dataset(s3_endpoint, "inc.zarr")
    old = before[list(before.table["path"]).index(rel)]["features"]["log_mel"]
    data = bytearray(files[0].read_bytes())
    start = data.index(b"data") + 8  # the samples of a mono PCM_16 WAV, played backwards
    data[start:] = np.frombuffer(bytes(data[start:]), dtype="<i2")[::-1].tobytes()
    assert len(data) == files[0].stat().st_size and bytes(data) != files[0].read_bytes()
    put(s3_endpoint, BUCKET, f"inc/{rel}", bytes(data))
    fourth = run(tmp_path, cat)
    assert fourth["version"] == 3 and fourth["replaced"] == 1 and fourth["new_examples"] == 1
    assert fourth["processed_audio_seconds"] < first["processed_audio_seconds"] / 3
    after = s3_dataset(s3_endpoint, "inc.zarr")
    row = list(after.table["path"]).index(rel)
    assert after.table["content_key"][row] == f"{len(data)}:{etag(s3_endpoint, f'inc/{rel}')}"
    assert len(after) == 7
    new = after[row]["features"]["log_mel"]
    assert new.shape == old.shape and not np.allclose(new, old)


def test_listing_sees_new_and_overwritten_objects_in_the_same_process(s3_endpoint, s3_env):
    opts = resolved_options(s3_endpoint)
    cat = s3_catalog(s3_endpoint, "lst", "unused.zarr", source_options=opts)
    cat["sources"][0]["pattern"] = "**/*.wav"
    from pipeline.config.catalog import parse_catalog

    src = parse_catalog(cat).catalog.sources[0]
    put(s3_endpoint, BUCKET, "lst/a/x.wav", wav_bytes(tone(200.0, 0.2)))
    first = list_source(src)
    assert [r.rel_path for r in first] == ["a/x.wav"]
    assert probe_headers(first, {src.name: opts})[0].frames == 3200
    put(s3_endpoint, BUCKET, "lst/a/x.wav", wav_bytes(tone(200.0, 0.5)))  # overwritten, longer
    put(s3_endpoint, BUCKET, "lst/a/y.wav", wav_bytes(tone(300.0, 0.3)))
    second = list_source(src)
    assert [r.rel_path for r in second] == ["a/x.wav", "a/y.wav"]
    assert second[0].content_key != first[0].content_key
    heads = probe_headers(second, {src.name: opts})
    assert [h.error for h in heads] == ["", ""] and [h.frames for h in heads] == [8000, 4800]


# --- 3. secrets -------------------------------------------------------------------------------


def test_secrets_never_reach_the_store_the_summary_logs_or_errors(s3_endpoint, s3_env, reference, tiny_corpus, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    secret = SECRET.encode()
    for p in sorted(tiny_corpus.rglob("*.flac"))[:4]:
        put(s3_endpoint, BUCKET, f"leak/{p.relative_to(tiny_corpus).as_posix()}", p.read_bytes())
    put(s3_endpoint, BUCKET, "leak/tone/text.wav", b"hello, I am not audio\n" * 20)
    put(s3_endpoint, BUCKET, "leak/tone/zero.wav", b"")
    # the source holds the literal secret; the output reads it from ${AWS_SECRET_ACCESS_KEY}
    literal = storage_options(s3_endpoint, key=ACCESS_KEY, secret=SECRET)
    cat = s3_catalog(s3_endpoint, "leak", "leak.zarr", source_options=literal)
    summary = run(tmp_path, cat)
    assert summary["examples"] == 4 and summary["rejected"] == 2
    assert {r["path"] for r in summary["reject_rows"]} == {"tone/text.wav", "tone/zero.wav"}

    errors = []
    bad_type = s3_catalog(s3_endpoint, "leak", "leak.zarr", execution={"workers": SECRET, "fetch_concurrency": "${AWS_SECRET_ACCESS_KEY}"})
    bad_type["sources"][0]["storage_options"]["secret_typo"] = {"nested": SECRET}
    bad_type["unknown_key"] = SECRET
    with pytest.raises(CatalogError) as exc:
        run(tmp_path, bad_type, "bad.yaml")
    errors.append(exc.value)
    with pytest.raises(SourceError) as exc:
        run(tmp_path, s3_catalog(s3_endpoint, "no-such-prefix", "leak.zarr", source_options=literal), "missing.yaml")
    errors.append(exc.value)
    nobucket = s3_catalog(s3_endpoint, "leak", "leak.zarr", source_options=literal)
    nobucket["sources"][0]["url"] = "s3://no-such-bucket/audio"
    with pytest.raises(SourceError) as exc:
        run(tmp_path, nobucket, "nobucket.yaml")
    errors.append(exc.value)
    with pytest.raises(AudioprepError) as exc:
        s3_dataset(s3_endpoint, "not-a-store.zarr")
    errors.append(exc.value)

    for err in errors:
        assert SECRET not in f"{err!s} {err!r}", type(err).__name__
    assert SECRET not in json.dumps(summary, default=str)
    out, err = capsys.readouterr()
    assert SECRET not in out and SECRET not in err and SECRET not in caplog.text
    for store in ("leak.zarr/", "store.zarr/"):
        objects = all_objects(s3_endpoint, BUCKET, store)
        assert any("/_partitions/" in k for k in objects) and f"{store}zarr.json" in objects
        leaked = [k for k, v in objects.items() if secret in v]
        assert leaked == []
    # literal secrets are masked in the recorded catalog, placeholders are kept
    meta = read_meta(StoreLocation(f"s3://{BUCKET}/leak.zarr", resolved_options(s3_endpoint)))
    recorded = meta["catalog"]
    assert recorded["sources"][0]["storage_options"]["secret"] == "***"
    assert recorded["sources"][0]["storage_options"]["key"] == "***"
    assert recorded["output"]["storage_options"]["secret"] == "${AWS_SECRET_ACCESS_KEY}"


# --- 4. local cache of remote audio -----------------------------------------------------------


def test_cached_source_runs_end_to_end(s3_endpoint, s3_env, reference, tmp_path):
    cache_dir = tmp_path / "fetch-cache"
    cat = s3_catalog(s3_endpoint, "audio", "cached.zarr")
    cat["sources"][0].update(cache="filecache", cache_dir=str(cache_dir))
    summary = run(tmp_path, cat)
    assert summary["examples"] == 32 + len(ODD_NAMES) and summary["rejected"] == 0
    assert len(list(cache_dir.iterdir())) == 32 + len(ODD_NAMES)
    assert_same_dataset(s3_dataset(s3_endpoint, "cached.zarr", "train"), open_dataset(reference.local_store, split="train"))


def test_fetch_cache_follows_the_content_key(s3_endpoint, tmp_path):
    opts = resolved_options(s3_endpoint)
    url = f"s3://{BUCKET}/cache/a b é [1].bin"
    put(s3_endpoint, BUCKET, "cache/a b é [1].bin", b"old")
    for mode, cache_dir in (("simplecache", None), ("filecache", str(tmp_path / "fc"))):
        assert fetch_many([url], opts, cache=mode, cache_dir=cache_dir) == {url: b"old"}
    put(s3_endpoint, BUCKET, "cache/a b é [1].bin", b"new!")
    for mode, cache_dir in (("simplecache", None), ("filecache", str(tmp_path / "fc"))):
        assert fetch_many([url], opts, cache=mode, cache_dir=cache_dir) == {url: b"new!"}
    # with the listed content key given, a hit is served from disk without asking S3
    keys = {url: "4:some-etag"}
    assert fetch_many([url], opts, cache="filecache", cache_dir=str(tmp_path / "k"), content_keys=keys) == {url: b"new!"}
    put(s3_endpoint, BUCKET, "cache/a b é [1].bin", b"newer")
    assert fetch_many([url], opts, cache="filecache", cache_dir=str(tmp_path / "k"), content_keys=keys) == {url: b"new!"}
    assert fetch_many([url], opts, cache="filecache", cache_dir=str(tmp_path / "k")) == {url: b"newer"}


# --- 5. batched fetch equals one open per file ------------------------------------------------


def test_fetch_many_equals_fetch_sequential(s3_endpoint):
    rng = np.random.default_rng(5)
    expected = {}
    for i in range(50):
        name = f"many/{i:02d} {'é' if i % 3 == 0 else ''}{'[x]' if i % 7 == 0 else ''}.bin"
        data = b"" if i == 4 else rng.bytes(int(rng.integers(1, 20000)))
        put(s3_endpoint, BUCKET, name, data)
        expected[f"s3://{BUCKET}/{name}"] = data
    urls = list(expected) + [f"s3://{BUCKET}/many/missing.bin"]
    opts = resolved_options(s3_endpoint)
    batched = fetch_many(urls, opts, concurrency=8)
    sequential = fetch_sequential(urls, opts)
    assert list(batched) == list(sequential) == urls
    assert {u: batched[u] for u in expected} == {u: sequential[u] for u in expected} == expected
    assert isinstance(batched[urls[-1]], FileNotFoundError) and isinstance(sequential[urls[-1]], FileNotFoundError)
    assert fetch_many(urls[:-1], opts, concurrency=1) == expected
