import pytest

from pipeline.config.catalog import load_catalog, parse_catalog
from pipeline.config.checks import check_sources
from pipeline.config.interpolate import MASK, interpolate_env, redact
from pipeline.errors import CatalogError
from tests.conftest import base_catalog, write_catalog


def keys(exc: CatalogError) -> set[str]:
    return {p.key for p in exc.problems}


def test_valid_catalog_loads_with_defaults(tiny_corpus, tmp_path):
    loaded = load_catalog(write_catalog(tmp_path / "c.yaml", base_catalog(tiny_corpus, tmp_path / "s.zarr")))
    c = loaded.catalog
    assert c.audio.sample_rate == 16000
    assert c.splits.fractions() == {"train": 0.5, "val": 0.25, "test": 0.25}
    assert c.execution.partition_seconds == 8
    assert len(loaded.catalog_hash) == 16


def test_every_problem_is_reported_with_its_key_path(tiny_corpus, tmp_path):
    cat = base_catalog(tiny_corpus, tmp_path / "s.zarr")
    cat["bogus"] = 1
    cat["audio"]["sample_rte"] = 8000
    cat["splits"] = {"train": 0.5, "val": 0.1, "test": 0.1}
    cat["sources"][0]["label"] = {"from": "regex", "pattern": "(unclosed"}
    with pytest.raises(CatalogError) as ei:
        parse_catalog(cat)
    k = keys(ei.value)
    assert "bogus" in k
    assert "audio.sample_rte" in k
    assert "splits" in k
    assert any(x.startswith("sources.0.label") for x in k)
    assert len(ei.value.problems) >= 4
    assert "sum to 1" in str(ei.value)


def test_wrong_type_names_the_key(tiny_corpus, tmp_path):
    cat = base_catalog(tiny_corpus, tmp_path / "s.zarr")
    cat["execution"]["partition_seconds"] = "lots"
    with pytest.raises(CatalogError) as ei:
        parse_catalog(cat)
    assert keys(ei.value) == {"execution.partition_seconds"}


def test_env_interpolation_and_missing_variable():
    raw = {"a": "${AP_TEST_X}", "b": ["x-${AP_TEST_Y:-dflt}"], "c": "${AP_TEST_MISSING}"}
    out, problems = interpolate_env(raw, env={"AP_TEST_X": "1"})
    assert out["a"] == "1" and out["b"] == ["x-dflt"]
    assert [p.key for p in problems] == ["c"]


def test_redaction_masks_literal_secrets_keeps_placeholders():
    raw = {"output": {"storage_options": {"key": "AKIAXXXX", "secret": "${S3_SECRET}", "client_kwargs": {"endpoint_url": "http://x"}}}}
    red = redact(raw)
    so = red["output"]["storage_options"]
    assert so["key"] == MASK
    assert so["secret"] == "${S3_SECRET}"
    assert so["client_kwargs"]["endpoint_url"] == "http://x"


def test_check_sources_reports_missing_path_and_empty_pattern(tiny_corpus, tmp_path):
    cat = base_catalog(tiny_corpus, tmp_path / "s.zarr")
    cat["sources"].append({"name": "gone", "url": str(tmp_path / "nope")})
    cat["sources"].append({"name": "empty", "url": str(tiny_corpus), "pattern": "**/*.mp3"})
    loaded = parse_catalog(cat)
    problems = {p.key: p.message for p in check_sources(loaded)}
    assert set(problems) == {"sources.1.url", "sources.2.pattern"}
    assert "does not exist" in problems["sources.1.url"]


def test_relative_paths_resolve_against_catalog_folder(tiny_corpus, tmp_path):
    cat = base_catalog(tiny_corpus, "out/s.zarr")
    loaded = load_catalog(write_catalog(tmp_path / "c.yaml", cat))
    assert loaded.catalog.output.store == str((tmp_path / "out/s.zarr").resolve())


def test_yaml_syntax_error_is_a_catalog_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("dataset: [unclosed\n")
    with pytest.raises(CatalogError) as ei:
        load_catalog(p)
    assert "line" in str(ei.value)
