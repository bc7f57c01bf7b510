"""Transcripts and tags at discovery: sidecars, per-folder transcript files, manifest columns,
normalization, multi-label tags, and what happens when a transcript is missing."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from pydantic import ValidationError

from pipeline.config.catalog import Source
from pipeline.errors import SourceError
from pipeline.io.discovery import list_source
from pipeline.io.transcripts import normalize_text, parse_tags
from tests.s3util import BUCKET, put, resolved_options, s3_endpoint  # noqa: F401


def _flac() -> bytes:
    b = io.BytesIO()
    sf.write(b, np.zeros(1600, np.float32), 16000, format="FLAC")
    return b.getvalue()


def _source(root, **kw) -> Source:
    return Source(name="s", url=str(root), pattern="**/*.{flac,wav}", label={"from": "none"}, **kw)


def test_normalization_and_tags_parsing():
    assert normalize_text("  “Don’t”  STOP—now…  ", ["strip_punct", "lower"]) == "dont stopnow"
    assert normalize_text("ﬁne Ⅻ", ["nfkc"]) == "fine XII"
    assert normalize_text("A  b\n c", []) == "A b c"  # whitespace always collapsed
    assert parse_tags("dog;bark; dog ;", ";") == ["dog", "bark"]
    assert parse_tags('["dog", "bark;loud"]', ";") == ["dog", "bark;loud"]
    assert parse_tags("", ";") == []
    with pytest.raises(ValueError, match="not a JSON list"):
        parse_tags('["dog", ', ";")


def test_sidecar_and_transcript_file_and_missing_ones(tmp_path):
    chap = tmp_path / "libri" / "103" / "1240"
    chap.mkdir(parents=True)
    for n in range(3):
        (chap / f"103-1240-000{n}.flac").write_bytes(_flac())
    (chap / "103-1240.trans.txt").write_text("103-1240-0000 CHAPTER ONE\n\n103-1240-0001 MISSUS RACHEL LYNDE\n")
    listing = list_source(_source(tmp_path / "libri", text={"from": "transcript_file", "pattern": "*.trans.txt", "normalize": ["lower"]}))
    got = {r.rel_path.rsplit("/", 1)[1]: (r.text, r.text_missing) for r in listing}
    assert got["103-1240-0000.flac"] == ("chapter one", "") and got["103-1240-0001.flac"] == ("missus rachel lynde", "")
    assert got["103-1240-0002.flac"][0] == "" and "no line for '103-1240-0002' in a *.trans.txt file" in got["103-1240-0002.flac"][1]
    assert listing.missing_text == 1

    side = tmp_path / "side"
    side.mkdir()
    for name, text in [("a", "Hello there."), ("b", None), ("c", "ünïcode ✓")]:
        (side / f"{name}.wav").write_bytes(_flac())
        if text is not None:
            (side / f"{name}.lab").write_text(text, encoding="utf-8")
    (side / "a.txt").write_text("not this one")
    rows = {r.rel_path: r for r in list_source(_source(side, text={"from": "sidecar", "suffix": ".lab", "required": False}))}
    assert (rows["a.wav"].text, rows["b.wav"].text, rows["c.wav"].text) == ("Hello there.", "", "ünïcode ✓")
    assert not any(r.text_missing for r in rows.values())  # not required: kept with ""
    (side / "a.lab").write_bytes(b"caf\xe9")
    with pytest.raises(SourceError, match=r"sources\[s\].text: a.lab is not UTF-8 text"):
        list_source(_source(side, text={"from": "sidecar", "suffix": ".lab"}))


def test_manifest_text_and_tags(tmp_path):
    root = tmp_path / "events"
    root.mkdir()
    for n in ("x", "y", "z"):
        (root / f"{n}.wav").write_bytes(_flac())
    (tmp_path / "m.csv").write_text('path,text,tags\nx.wav,a dog barks,dog;bark\ny.wav,,"[""car"", ""horn""]"\nz.wav,quiet,\n')
    src = _source(root, manifest=str(tmp_path / "m.csv"), text={"from": "manifest"}, tags={"from": "manifest"})
    rows = {r.rel_path: r for r in list_source(src)}
    assert (rows["x.wav"].text, rows["x.wav"].tags) == ("a dog barks", '["dog", "bark"]')
    assert rows["y.wav"].tags == '["car", "horn"]' and "an empty or absent `text` in the manifest" in rows["y.wav"].text_missing
    assert rows["z.wav"].tags == "[]"


def test_catalog_rules_are_checked_with_their_keys():
    with pytest.raises(ValidationError, match="from: sidecar needs `suffix`"):
        Source(name="s", url="/x", text={"from": "sidecar"})
    with pytest.raises(ValidationError, match="from: transcript_file needs `pattern`"):
        Source(name="s", url="/x", text={"from": "transcript_file"})
    with pytest.raises(ValidationError, match="text: from: manifest needs `manifest:`"):
        Source(name="s", url="/x", text={"from": "manifest"})
    with pytest.raises(ValidationError, match="Input should be 'nfkc', 'lower' or 'strip_punct'"):
        Source(name="s", url="/x", text={"from": "sidecar", "suffix": ".txt", "normalize": ["upper"]})


def test_sidecars_on_object_storage(s3_endpoint):  # noqa: F811
    for name, text in [("d/a.flac", None), ("d/a.txt", b"first"), ("d/b.flac", None), ("d/b.txt", b"second")]:
        put(s3_endpoint, BUCKET, f"side/{name}", text if text is not None else _flac())
    src = Source(name="s", url=f"s3://{BUCKET}/side", pattern="**/*.flac", label={"from": "none"},
                 storage_options=resolved_options(s3_endpoint), text={"from": "sidecar", "suffix": ".txt"})
    assert [(r.rel_path, r.text) for r in list_source(src)] == [("d/a.flac", "first"), ("d/b.flac", "second")]


def test_a_run_rejects_missing_transcripts_and_flags_implausible_rates(tmp_path):
    from pipeline.config.catalog import load_catalog
    from pipeline.run import steps
    from pipeline.store.location import StoreLocation
    from pipeline.store.state import read_state
    from tests.conftest import base_catalog, write_catalog

    root = tmp_path / "audio" / "cls"
    root.mkdir(parents=True)
    t = np.arange(16000) / 16000
    for k in range(4):
        sf.write(root / f"spk0{k}_a.wav", (0.2 * np.sin(2 * np.pi * (200 + 50 * k) * t)).astype(np.float32), 16000)
    (root / "spk00_a.txt").write_text("ok then")  # 7 chars in 1 s
    (root / "spk01_a.txt").write_text("x" * 200)  # 200 chars per second: not this audio's
    (root / "spk02_a.txt").write_text("fine as well")
    cat = base_catalog(tmp_path / "audio", tmp_path / "s.zarr", splits={"train": 1.0, "val": 0.0, "test": 0.0})
    cat["sources"][0].update({"pattern": "**/*.wav", "text": {"from": "sidecar", "suffix": ".txt"}})
    summary = steps.run_catalog(load_catalog(write_catalog(tmp_path / "c.yaml", cat)))
    state = read_state(StoreLocation(str(tmp_path / "s.zarr")))
    rows = {r["path"]: r for r in state.table}
    assert set(rows) == {"cls/spk00_a.wav", "cls/spk01_a.wav", "cls/spk02_a.wav"} and summary["rejected"] == 1
    # (pure sines also carry the quality flag `narrowband`)
    assert "text_rate" in rows["cls/spk01_a.wav"]["flags"].split(",") and "text_rate" not in rows["cls/spk00_a.wav"]["flags"].split(",")
    (rej,) = state.rejects
    assert (rej["path"], rej["stage"], rej["error_class"]) == ("cls/spk03_a.wav", "labels", "MissingTranscript")
    assert "no cls/spk03_a.txt beside it" in rej["message"]
    assert state.meta["text_vocab"] == sorted(set("ok then" + "x" + "fine as well"))


def test_tags_reach_the_reader_as_multi_hot_vectors(tmp_path):
    import json as _json

    from pipeline import open_dataset
    from pipeline.config.catalog import load_catalog
    from pipeline.run import steps
    from tests.conftest import base_catalog, write_catalog

    root = tmp_path / "audio"
    root.mkdir()
    rng = np.random.default_rng(0)
    names = ["dog", "bark", "car", "rain"]
    rows = []
    for k in range(12):
        sf.write(root / f"clip{k:02d}.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
        rows.append((f"clip{k:02d}.wav", ";".join(names[j] for j in range(4) if (k >> j) & 1 or j == k % 4)))
    (tmp_path / "m.csv").write_text("path,tags\n" + "".join(f"{p},{t}\n" for p, t in rows))
    cat = base_catalog(root, tmp_path / "s.zarr", splits={"train": 0.5, "val": 0.25, "test": 0.25, "stratify": "tags"})
    cat["sources"][0].update({"pattern": "*.wav", "label": {"from": "none"}, "group": {"from": "none"},
                              "manifest": str(tmp_path / "m.csv"), "tags": {"from": "manifest"}})
    steps.run_catalog(load_catalog(write_catalog(tmp_path / "c.yaml", cat)))
    ds = open_dataset(str(tmp_path / "s.zarr"))
    assert ds.tag_vocab == sorted(names)
    truth = dict(rows)
    for i in range(len(ds)):
        ex = ds[i]
        want = set(truth[str(ds.table["path"][i])].split(";"))
        assert {ds.tag_vocab[j] for j in np.flatnonzero(ex["tags"])} == want
        assert set(_json.loads(str(ds.table["tags"][i]))) == want
    batch = next(iter(ds.iter_batches(5, shuffle=False)))
    assert batch["tags"].shape == (5, 4) and batch["tags"].dtype == np.float32
    # every tag lands in every split (iterative stratification over 12 clips)
    for split in ("train", "val", "test"):
        part = open_dataset(str(tmp_path / "s.zarr"), split=split)
        assert all(any(part[i]["tags"][j] for i in range(len(part))) for j in range(4)), split
