"""Catalog inputs that used to hang, blow up memory, or give silently wrong data."""

import pathlib
import warnings

import pytest
from typer.testing import CliRunner

from pipeline.config.catalog import DEFAULT_PATTERN, MAX_YAML_ALIASES, load_catalog, parse_catalog
from pipeline.config.checks import CatalogWarning, check_sources, inspect_sources
from pipeline.errors import CatalogError, SourceError
from pipeline.io.discovery import SourceKeyError, list_source
from pipeline.io.fs import glob_to_regex
from tests.conftest import base_catalog, write_catalog


def one_source(tmp_path: pathlib.Path, names: list[str], **source) -> dict:
    root = tmp_path / "audio"
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_bytes(b"RIFF")
    cat = base_catalog(root, tmp_path / "s.zarr")
    cat["sources"][0].update(source)
    return cat


def problems(cat: dict) -> dict[str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CatalogWarning)
        return {p.key: p.message for p in check_sources(parse_catalog(cat))}


def warned(cat: dict) -> dict[str, str]:
    return {p.key: p.message for p in inspect_sources(parse_catalog(cat)).warnings}


# --- 1. catastrophic regexes -------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_catastrophic_group_regex_fails_with_key_path_and_file_name(tmp_path):
    name = "spk/" + "a" * 40 + ".wav"
    cat = one_source(tmp_path, [name], group={"from": "regex", "pattern": r"(?P<group>(a|aa)+)b"})
    found = problems(cat)
    assert set(found) == {"sources.0.group.pattern"}
    assert "a" * 40 + ".wav" in found["sources.0.group.pattern"]
    assert "(?P<group>(a|aa)+)b" in found["sources.0.group.pattern"]
    with pytest.raises(SourceKeyError) as ei:
        list_source(parse_catalog(cat).catalog.sources[0], index=0)
    assert ei.value.key == "sources.0.group.pattern"


@pytest.mark.timeout(60)
def test_the_issues_nested_repeat_regex_no_longer_hangs(tmp_path):
    cat = one_source(tmp_path, ["spk/" + "a" * 40 + ".wav"], group={"from": "regex", "pattern": r"(?P<group>(a+)+)b"})
    # no "b" in the name: the group is not found, which is a warning with its count
    assert problems(cat) == {}
    assert "1 of 1 file name(s)" in warned(cat)["sources.0.group.pattern"]


def test_regex_syntax_is_still_checked_at_load_and_shown_as_written(tiny_corpus, tmp_path):
    cat = base_catalog(tiny_corpus, tmp_path / "s.zarr")
    cat["sources"][0]["label"] = {"from": "regex", "pattern": r"(?P<label>\d+"}
    with pytest.raises(CatalogError) as ei:
        parse_catalog(cat)
    msg = {p.key: p.message for p in ei.value.problems}["sources.0.label"]
    assert r"`(?P<label>\d+`" in msg and r"\\d" not in msg


# --- 2. YAML bombs ------------------------------------------------------------------------------


def test_yaml_alias_bomb_is_refused_before_expansion(tmp_path):
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    p = tmp_path / "bomb.yaml"
    p.write_text("\n".join(lines) + "\n")  # 72 aliases standing for 9**9 strings
    assert len(p.read_bytes()) < 700
    with pytest.raises(CatalogError) as ei:
        load_catalog(p)
    assert ei.value.path == str(p) and str(p) in str(ei.value)
    assert [x.key for x in ei.value.problems] == ["(yaml)"]
    assert "aliases" in ei.value.problems[0].message


def test_yaml_with_too_many_aliases_is_refused(tmp_path):
    p = tmp_path / "many.yaml"
    p.write_text("x: &x 1\nys:\n" + "".join("  - *x\n" for _ in range(MAX_YAML_ALIASES + 1)))
    with pytest.raises(CatalogError) as ei:
        load_catalog(p)
    assert f"more than {MAX_YAML_ALIASES} YAML aliases" in ei.value.problems[0].message


def test_deeply_nested_yaml_is_refused(tmp_path):
    p = tmp_path / "deep.yaml"
    p.write_text("dataset: " + "[" * 200 + "]" * 200 + "\n")
    with pytest.raises(CatalogError) as ei:
        load_catalog(p)
    assert "nested deeper than 64" in ei.value.problems[0].message


def test_a_few_aliases_still_work(tiny_corpus, tmp_path):
    cat = base_catalog(tiny_corpus, tmp_path / "s.zarr")
    p = write_catalog(tmp_path / "c.yaml", cat)
    p.write_text(p.read_text() + "x-anchor: &opts {}\n")
    text = p.read_text().replace("x-anchor: &opts {}\n", "")
    text = text.replace("  storage_options: {}", "  storage_options: *opts")
    p.write_text("x: &opts {}\n" + text)
    with pytest.raises(CatalogError) as ei:  # the extra key "x" is reported, nothing else
        load_catalog(p)
    assert [x.key for x in ei.value.problems] == ["x"]


# --- 3. silent wrong data -----------------------------------------------------------------------


def test_group_regex_matching_some_names_warns_with_count(tmp_path):
    cat = one_source(tmp_path, ["c/spk1_a.wav", "c/spk1_b.wav", "c/other.wav"])
    assert problems(cat) == {}
    assert "1 of 3 file name(s)" in warned(cat)["sources.0.group.pattern"]
    with pytest.warns(CatalogWarning, match="sources.0.group.pattern"):
        check_sources(parse_catalog(cat))


def test_label_regex_matching_nothing_is_an_error_and_partial_is_a_warning(tmp_path):
    cat = one_source(tmp_path, ["c/x_1.wav", "c/y_2.wav"], label={"from": "regex", "pattern": r"(?P<label>dog|cat)_"}, group={"from": "none"})
    msg = problems(cat)["sources.0.label.pattern"]
    assert "2 of 2" in msg and "every label would be empty" in msg
    cat2 = one_source(tmp_path / "2", ["c/dog_1.wav", "c/y_2.wav"], label={"from": "regex", "pattern": r"(?P<label>dog|cat)_"}, group={"from": "none"})
    assert problems(cat2) == {}
    assert "1 of 2" in warned(cat2)["sources.0.label.pattern"]


def manifest_source(tmp_path, text: str, suffix: str = "csv") -> dict:
    cat = one_source(tmp_path, ["c/spk1_a.wav", "c/spk1_b.wav", "c/spk2_c.wav"])
    m = tmp_path / f"m.{suffix}"
    m.write_text(text)
    cat["sources"][0].update(manifest=str(m), label={"from": "manifest"})
    return cat


def test_manifest_split_values_must_be_split_names(tmp_path):
    cat = manifest_source(tmp_path, "path,label,split\nc/spk1_a.wav,x,training\nc/spk1_b.wav,x,TEST\nc/spk2_c.wav,y,val\n")
    msg = problems(cat)["sources.0.manifest"]
    assert "'training'" in msg and "'TEST'" in msg and "row 1" in msg and "row 2" in msg and "'val'" not in msg
    with pytest.raises(SourceError, match="training"):
        list_source(parse_catalog(cat).catalog.sources[0])


def test_duplicate_manifest_rows_are_listed(tmp_path):
    cat = manifest_source(tmp_path, "path,label\nc/spk1_a.wav,x\nc/spk1_b.wav,x\n./c/spk1_a.wav,y\n")
    msg = problems(cat)["sources.0.manifest"]
    assert "rows 1 and 3" in msg and "c/spk1_a.wav" in msg


def test_files_missing_from_the_manifest_warn_with_count(tmp_path):
    cat = manifest_source(tmp_path, '{"path": "c/spk1_a.wav", "label": "x"}\n', suffix="jsonl")
    assert problems(cat) == {}
    assert "2 of 3 file(s) have no row" in warned(cat)["sources.0.manifest"]


def test_validate_refuses_manifest_paths_outside_the_root(tmp_path):
    for bad in ("../etc/passwd", "/etc/passwd"):
        cat = manifest_source(tmp_path / bad.replace("/", "_"), f"path,label\n{bad},x\n")
        msg = problems(cat)["sources.0.manifest"]
        assert "stay inside" in msg and bad in msg


# --- 6. the user's path -------------------------------------------------------------------------


def test_unknown_keys_suggest_the_closest_and_their_doc_page(tiny_corpus, tmp_path):
    cat = base_catalog(tiny_corpus, tmp_path / "s.zarr")
    cat["spilts"] = cat.pop("splits")
    cat["sources"][0]["lable"] = cat["sources"][0].pop("label")
    cat["features"]["log_mel"]["n_mell"] = 40
    with pytest.raises(CatalogError) as ei:
        parse_catalog(cat)
    got = {p.key: p.message for p in ei.value.problems}
    assert "did you mean `splits`" in got["spilts"] and "docs/catalog.md" in got["spilts"]
    assert "did you mean `label`" in got["sources.0.lable"] and "docs/catalog.md" in got["sources.0.lable"]
    assert "did you mean `n_mels`" in got["features.log_mel.n_mell"] and "docs/features.md" in got["features.log_mel.n_mell"]


def test_a_folder_given_as_the_catalog_is_named_a_folder(tmp_path):
    (tmp_path / "demo.zarr").mkdir()
    with pytest.raises(CatalogError) as ei:
        load_catalog(tmp_path / "demo.zarr")
    assert "is a folder" in str(ei.value) and "not found" not in str(ei.value)


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "oga", "opus", "mp3", "aiff", "aif", "au", "caf", "w64", "rf64", "WAV"])
def test_default_pattern_covers_what_libsndfile_reads(ext):
    assert glob_to_regex(DEFAULT_PATTERN).match(f"dir/x.{ext}")


def test_validate_prints_matched_and_left_out_audio(tmp_path):
    from audioprep.cli import app

    cat = one_source(tmp_path, ["c/spk1_a.wav", "c/spk1_b.flac", "c/spk2_c.opus", "c/spk2_d.aiff", "c/notes.txt"], pattern="**/*.wav")
    p = write_catalog(tmp_path / "c.yaml", cat)
    res = CliRunner().invoke(app, ["validate", str(p)])
    out = " ".join(res.output.split())  # rich wraps long lines
    assert res.exit_code == 0, out
    assert "sources.0 (demo): 1 file(s) matched, 3 audio-looking file(s) not matched" in out
    assert ".aiff: 1" in out and ".flac: 1" in out and ".opus: 1" in out and ".txt" not in out
    assert "widen" in out


def test_validate_names_a_folder_given_as_catalog(tmp_path):
    from audioprep.cli import app

    res = CliRunner().invoke(app, ["validate", str(tmp_path)])
    assert res.exit_code == 2 and "is a folder" in " ".join(res.output.split())
