"""File names and links discovery must not lose: symbolic links, newlines, non-UTF-8 bytes."""

import hashlib
import io
import os
import pathlib
import warnings

import numpy as np
import pytest
import soundfile as sf

from pipeline.config.catalog import parse_catalog
from pipeline.config.checks import CatalogWarning, check_sources, inspect_sources
from pipeline.io.discovery import example_id, list_source, probe_headers
from tests.conftest import base_catalog


def wav_bytes() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(1600, dtype="float32"), 16000, format="WAV")
    return buf.getvalue()


def catalog_for(root: pathlib.Path, tmp_path: pathlib.Path, **source) -> dict:
    cat = base_catalog(root, tmp_path / "s.zarr")
    cat["sources"][0].update({"pattern": "**/*.wav", "group": {"from": "none"}, **source})
    return cat


@pytest.fixture
def linked(tmp_path):
    """root/ holds only links: to a file outside, to a folder outside, to a file inside, and a broken one."""
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "a.wav").write_bytes(wav_bytes())
    (outside / "sub" / "b.wav").write_bytes(wav_bytes())
    root = tmp_path / "root"
    (root / "cls").mkdir(parents=True)
    (root / "inner").mkdir()
    (root / "inner" / "c.wav.data").write_bytes(wav_bytes())
    (root / "cls" / "a.wav").symlink_to(outside / "a.wav")
    (root / "dirlink").symlink_to(outside / "sub")
    (root / "cls" / "c.wav").symlink_to(root / "inner" / "c.wav.data")
    (root / "cls" / "broken.wav").symlink_to(tmp_path / "nowhere.wav")
    (root / "loop").symlink_to(root)
    return root


def test_symlinks_are_followed_by_default(linked, tmp_path):
    cat = catalog_for(linked, tmp_path)
    refs = list_source(parse_catalog(cat).catalog.sources[0])
    assert [r.rel_path for r in refs] == ["cls/a.wav", "cls/c.wav", "dirlink/b.wav"]
    assert refs[0].url == str(linked / "cls" / "a.wav") and refs[0].label == "cls"
    assert refs[0].size_bytes == len(wav_bytes())
    assert refs.skipped_symlinks == 2  # the broken link and the loop back to the root
    assert [h.error for h in probe_headers(refs, {})] == ["", "", ""]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CatalogWarning)
        assert check_sources(parse_catalog(cat)) == []


def test_symlinks_inside_root_and_skip(linked, tmp_path):
    inside = list_source(parse_catalog(catalog_for(linked, tmp_path, symlinks="inside_root")).catalog.sources[0])
    assert [r.rel_path for r in inside] == ["cls/c.wav"]
    assert inside.skipped_symlinks == 4
    cat = catalog_for(linked, tmp_path, symlinks="skip")
    skipped = list_source(parse_catalog(cat).catalog.sources[0])
    assert list(skipped) == [] and skipped.skipped_symlinks == 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CatalogWarning)
        msg = {p.key: p.message for p in check_sources(parse_catalog(cat))}["sources.0.pattern"]
    assert "5 symbolic link(s) skipped" in msg


def test_skipped_links_are_a_warning_with_count(linked, tmp_path):
    report = inspect_sources(parse_catalog(catalog_for(linked, tmp_path, symlinks="inside_root")))
    assert report.errors == []
    assert report.sources[0].skipped_symlinks == 4
    assert "4 symbolic link(s) skipped" in {p.key: p.message for p in report.warnings}["sources.0.symlinks"]


def test_bad_symlinks_mode_is_a_catalog_error(tmp_path):
    cat = catalog_for(tmp_path, tmp_path, symlinks="sometimes")
    with pytest.raises(Exception, match="sources.0.symlinks"):
        parse_catalog(cat)


def test_newline_in_a_folder_name_does_not_hide_files(tmp_path):
    root = tmp_path / "audio"
    (root / "new\nline").mkdir(parents=True)
    (root / "new\nline" / "x.wav").write_bytes(wav_bytes())
    (root / "plain").mkdir()
    (root / "plain" / "y.wav").write_bytes(wav_bytes())
    refs = list_source(parse_catalog(catalog_for(root, tmp_path)).catalog.sources[0])
    assert [r.rel_path for r in refs] == ["new\nline/x.wav", "plain/y.wav"]
    assert refs[0].label == "new\nline"


def test_non_utf8_file_names_are_listed_probed_and_validated(tmp_path):
    root = tmp_path / "audio"
    (root / "cls").mkdir(parents=True)
    raw = os.fsencode(root / "cls") + b"/latin1_\xe9.wav"
    with open(raw, "wb") as f:
        f.write(wav_bytes())
    cat = catalog_for(root, tmp_path)
    refs = list_source(parse_catalog(cat).catalog.sources[0])
    assert len(refs) == 1
    ref = refs[0]
    assert ref.rel_path == "cls/latin1_\udce9.wav"
    assert os.fsencode(ref.url) == raw  # reversible: the str gives back the bytes on disk
    assert ref.example_id == example_id("demo", "cls/latin1_\udce9.wav")
    assert ref.example_id != example_id("demo", "cls/latin1_é.wav")  # é in UTF-8 is another name
    # UTF-8 names keep the ids they had (blake2b of the UTF-8 bytes)
    assert example_id("demo", "cls/latin1_é.wav") == hashlib.blake2b("demo\x00cls/latin1_é.wav".encode(), digest_size=10).hexdigest()
    (header,) = probe_headers(refs, {})
    assert header.error == "" and header.frames == 1600
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CatalogWarning)
        assert check_sources(parse_catalog(cat)) == []


def test_non_utf8_names_are_stored_reversibly(tmp_path):
    """The table shows a non-UTF-8 name as \\xNN text and keeps its bytes (path_bytes), so the
    name comes back exactly; a UTF-8 name that merely looks like an escape is not confused with it."""
    from pipeline.config.catalog import load_catalog
    from pipeline.run import steps
    from pipeline.store.location import StoreLocation
    from pipeline.store.state import read_state
    from pipeline.store.tables import original_path
    from tests.conftest import write_catalog

    root = tmp_path / "audio"
    (root / "cls").mkdir(parents=True)
    raw_ok, raw_bad = os.fsencode(root / "cls") + b"/spk01_latin1_\xe9.wav", os.fsencode(root / "cls") + b"/spk02_bad_\xff.wav"
    with open(raw_ok, "wb") as f:
        f.write(wav_bytes())
    with open(raw_bad, "wb") as f:
        f.write(b"RIFF\x00\x00not audio at all" * 4)
    (root / "cls" / "spk03_latin1_\\xe9.wav").write_bytes(wav_bytes())  # literal backslash, x, e, 9
    loaded = load_catalog(write_catalog(tmp_path / "c.yaml", catalog_for(root, tmp_path)))
    steps.run_catalog(loaded)
    state = read_state(StoreLocation(str(tmp_path / "s.zarr")))
    assert sorted(r["path"] for r in state.table) == ["cls/spk01_latin1_\\xe9.wav", "cls/spk03_latin1_\\xe9.wav"]  # shown alike
    by_bytes = {original_path(r): r for r in state.table}
    assert set(by_bytes) == {b"cls/spk01_latin1_\xe9.wav", b"cls/spk03_latin1_\\xe9.wav"}
    assert by_bytes[b"cls/spk03_latin1_\\xe9.wav"]["path_bytes"] == ""
    assert os.path.exists(os.fsdecode(os.fsencode(root) + b"/" + original_path(by_bytes[b"cls/spk01_latin1_\xe9.wav"])))
    (reject,) = state.rejects
    assert reject["path"] == "cls/spk02_bad_\\xff.wav" and original_path(reject) == b"cls/spk02_bad_\xff.wav"
