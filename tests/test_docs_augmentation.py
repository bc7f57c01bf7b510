"""docs/augmentation.md and the demo catalog agree with the code on SpecAugment's fill."""

from __future__ import annotations

import pathlib
import re

import yaml

from pipeline.augment import AugmentConfig
from pipeline.augment.freq_mask import FreqMaskParams
from pipeline.augment.time_mask import TimeMaskParams
from pipeline.config.catalog import load_catalog

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "augmentation.md").read_text()


def test_the_documented_augment_section_validates_and_fills_with_band_means():
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", DOC, re.S) if b.startswith("augment:"))
    config = AugmentConfig.model_validate(yaml.safe_load(block)["augment"])
    assert [(s.name, s.fill) for s in config.spec] == [("freq_mask", "band_mean"), ("time_mask", "band_mean")]


def test_documented_defaults_are_the_code_defaults():
    assert FreqMaskParams().fill == TimeMaskParams().fill == "band_mean"
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(freq_mask|time_mask)` \|.*$", DOC, re.M)}
    assert "`fill`: `band_mean` \\| `mean` \\| `zero` \\| a number (`band_mean`)" in rows["freq_mask"]
    assert "`fill` (`band_mean`)" in rows["time_mask"]
    assert "| `band_mean` (default) |" in DOC


def test_the_demo_catalog_masks_with_a_neutral_fill():
    spec = load_catalog(ROOT / "catalog.yaml").catalog.augment.spec
    assert {s.name for s in spec} == {"freq_mask", "time_mask"}
    assert all(s.fill == "band_mean" for s in spec)
