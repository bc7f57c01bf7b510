import json

import pytest

from pipeline.config.catalog import parse_catalog
from pipeline.errors import SourceError
from pipeline.io.discovery import example_id, list_source, probe_headers
from pipeline.io.fs import glob_to_regex
from tests.conftest import base_catalog


def test_glob_braces_and_double_star():
    r = glob_to_regex("**/*.{wav,flac}")
    assert r.match("a.wav") and r.match("x/y/b.FLAC") and not r.match("c.mp3")
    assert glob_to_regex("*.wav").match("a.wav") and not glob_to_regex("*.wav").match("d/a.wav")


def test_listing_labels_groups_ids(tiny_corpus, tmp_path):
    c = parse_catalog(base_catalog(tiny_corpus, tmp_path / "s.zarr")).catalog
    refs = list_source(c.sources[0])
    assert len(refs) == 32
    r = refs[0]
    assert r.label == r.rel_path.split("/")[0]
    assert r.group == "demo/" + r.rel_path.split("/")[1].split("_")[0]
    assert r.example_id == example_id("demo", r.rel_path)
    assert len({x.example_id for x in refs}) == 32
    assert all(x.content_key.startswith(f"{x.size_bytes}:") for x in refs)


def test_probe_reads_headers_and_records_failures(tiny_corpus, tmp_path):
    c = parse_catalog(base_catalog(tiny_corpus, tmp_path / "s.zarr")).catalog
    refs = list_source(c.sources[0])
    bad = tmp_path / "bad"
    (bad / "x").mkdir(parents=True)
    (bad / "x" / "text.wav").write_text("not audio at all")
    cat = base_catalog(bad, tmp_path / "s.zarr")
    bad_refs = list_source(parse_catalog(cat).catalog.sources[0])
    heads = probe_headers(refs[:3] + bad_refs, {})
    assert [h.error == "" for h in heads] == [True, True, True, False]
    assert heads[0].sample_rate in (16000, 22050) and heads[0].frames > 0


def test_manifest_paths_cannot_escape_root(tiny_corpus, tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("path,label\n../etc/passwd,x\n")
    cat = base_catalog(tiny_corpus, tmp_path / "s.zarr")
    cat["sources"][0]["manifest"] = str(m)
    cat["sources"][0]["label"] = {"from": "manifest"}
    with pytest.raises(SourceError, match="stay inside"):
        list_source(parse_catalog(cat).catalog.sources[0])


def test_manifest_labels_and_split(tiny_corpus, tmp_path):
    cat = base_catalog(tiny_corpus, tmp_path / "s.zarr")
    refs = list_source(parse_catalog(cat).catalog.sources[0])
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"path": refs[0].rel_path, "label": "special", "split": "test"}) + "\n")
    cat["sources"][0]["manifest"] = str(m)
    cat["sources"][0]["label"] = {"from": "manifest"}
    refs2 = list_source(parse_catalog(cat).catalog.sources[0])
    assert refs2[0].label == "special" and refs2[0].split == "test"
    assert refs2[1].label == ""


def test_local_path_is_fsspecs_path_for_paths_and_file_urls(tmp_path):
    from pipeline.io.fs import filesystem, local_path

    for url in (str(tmp_path / "a b.flac"), f"file://{tmp_path}/a b.flac"):
        assert local_path(url) == filesystem(url)[1] == str(tmp_path / "a b.flac")
