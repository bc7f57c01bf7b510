"""The rule grammar of ``quality.reject_if`` / ``flag_if`` and the catalog's quality sections."""

from __future__ import annotations

import math

import pytest

from pipeline.config.catalog import parse_catalog
from pipeline.errors import CatalogError
from pipeline.quality.rules import RuleError, parse_rule
from tests.conftest import base_catalog


@pytest.mark.parametrize(
    ("rule", "values", "expected"),
    [
        ("clipping_fraction > 0.01 or snr_db < 5", {"clipping_fraction": 0.02, "snr_db": 20}, True),
        ("clipping_fraction > 0.01 or snr_db < 5", {"clipping_fraction": 0.0, "snr_db": 20}, False),
        ("bandwidth_hz < 0.45 * sample_rate", {"bandwidth_hz": 4000, "sample_rate": 16000}, True),
        ("bandwidth_hz < 0.45 * sample_rate", {"bandwidth_hz": 7900, "sample_rate": 16000}, False),
        ("not (snr_db < 5) and duration_seconds >= 1.5e0", {"snr_db": 6, "duration_seconds": 1.5}, True),
        ("1 + 2 * 3 == 7 and (1 + 2) * 3 == 9 and 8 / 4 / 2 == 1 and 2 - 3 - 4 == -5", {}, True),
        ("-snr_db > -5", {"snr_db": 4}, True),
        ("snr_db > 5 or peak_dbfs > -1 and rms_dbfs > -3", {"snr_db": 10, "peak_dbfs": -10, "rms_dbfs": -10}, True),  # and binds tighter
        ("snr_db < 5", {"snr_db": math.nan}, False),  # not measured: a comparison is false
        ("not snr_db < 5", {"snr_db": math.nan}, True),
        ("snr_db / 0 > 1", {"snr_db": 3}, False),
        ("snr_db != 3", {"snr_db": 3}, False),
    ],
)
def test_rules_evaluate(rule, values, expected):
    assert parse_rule(rule)(values) is expected


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("snr < 5", "unknown column `snr` at column 1 of `snr < 5`; did you mean `snr_db`?"),
        ("snr_db <", "expected a number, a column name or `(` at column 9"),
        ("snr_db + 1", "is a number, not a condition"),
        ("snr_db < 5 and 3", "`and` at column 12 of `snr_db < 5 and 3` needs a comparison (true/false) on each side"),
        ("(snr_db < 5", "expected `)` at column 12"),
        ("snr_db < 5)", "expected `and`, `or` or the end of the rule at column 11"),
        ("__import__('os').system('x') == 0", "unexpected character \"'\" at column 12"),
        ("snr_db < 5 < 6", "expected `and`, `or` or the end of the rule at column 12"),
        ("(snr_db < 5) + 1 > 0", "`+` at column 14 of `(snr_db < 5) + 1 > 0` needs a number on each side"),
        ("", "non-empty"),
        ("(" * 60 + "snr_db < 5" + ")" * 60, "nests deeper than 50 levels"),
    ],
)
def test_bad_rules_name_the_column_at_fault(rule, message):
    with pytest.raises(RuleError) as exc:
        parse_rule(rule)
    assert message in str(exc.value)


def test_catalog_validates_rules_with_key_paths(tmp_path):
    cat = base_catalog(tmp_path, tmp_path / "s.zarr", quality={"reject_if": "snr_db < 5 or clip > 0.1", "flag_if": "bandwidth_hz <"},
                       duplicates={"policy": "sometimes", "similarity": 0.3})
    with pytest.raises(CatalogError) as exc:
        parse_catalog(cat)
    keys = {p.key: p.message for p in exc.value.problems}
    assert "unknown column `clip`" in keys["quality.reject_if"]
    assert "expected a number" in keys["quality.flag_if"]
    assert "duplicates.policy" in keys and "duplicates.similarity" in keys
    cat = base_catalog(tmp_path, tmp_path / "s.zarr", quality={"vad": {"speech_dbfs": -70, "silence_dbfs": -50}, "treshold": 1})
    with pytest.raises(CatalogError) as exc:
        parse_catalog(cat)
    text = str(exc.value)
    assert "quality.vad: silence_dbfs (-50) must not be above speech_dbfs (-70)" in text
    assert "quality.treshold" in text and "docs/quality.md" in text


def test_quality_defaults_keep_the_store_fingerprint(tmp_path):
    from pipeline.run.planner import fingerprint, make_run_layout, settings_changed

    plain = parse_catalog(base_catalog(tmp_path, tmp_path / "s.zarr"))
    explicit = parse_catalog(base_catalog(tmp_path, tmp_path / "s.zarr", quality={"vad": {"speech_dbfs": -45}},
                                          duplicates={"policy": "drop_copies", "similarity": 0.9}))
    ruled = parse_catalog(base_catalog(tmp_path, tmp_path / "s.zarr", quality={"reject_if": "snr_db < 5"}))
    fp = [fingerprint(c, make_run_layout(c)) for c in (plain, explicit, ruled)]
    assert fp[0] == fp[1] != fp[2]
    assert settings_changed(plain.redacted, ruled.redacted) == ["quality.reject_if: (default) -> snr_db < 5"]


def test_rules_need_the_metrics(tmp_path):
    cat = base_catalog(tmp_path, tmp_path / "s.zarr", quality={"measure": False, "reject_if": "snr_db < 5"})
    with pytest.raises(CatalogError) as exc:
        parse_catalog(cat)
    assert "quality: reject_if / flag_if read the metrics: remove them, or set measure: true" in str(exc.value)
