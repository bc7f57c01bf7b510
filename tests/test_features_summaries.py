"""Per-clip summaries: named, stable columns with exact statistics."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from pipeline.features import FeaturesConfig, build_feature_set

# librosa warns about empty mel filters for 128 mels at n_fft=400 (mfcc defaults); expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Empty filters:UserWarning")


def test_columns_are_named_and_ordered_feature_stat_component():
    raw = {"chroma": {}, "spectral_centroid": {}, "mfcc": {"n_mfcc": 13, "deltas": True, "delta_order": 1}, "summaries": ["mean", "std"]}
    fs = build_feature_set(FeaturesConfig.model_validate(raw), 22050)
    cols = fs.summary_columns()
    assert fs.names == ("mfcc", "chroma", "spectral_centroid")  # registry order, not YAML order
    assert len(cols) == len(set(cols)) == 2 * (26 + 12 + 1)
    assert cols[:2] == ["mfcc_00_mean", "mfcc_01_mean"]
    assert cols[13] == "mfcc_d1_00_mean" and cols[26] == "mfcc_00_std"
    assert "chroma_A_std" in cols and "chroma_C#_mean" in cols
    assert cols[-2:] == ["spectral_centroid_mean", "spectral_centroid_std"]
    swapped = {"summaries": ["mean", "std"], "spectral_centroid": {}, "mfcc": raw["mfcc"], "chroma": {}}
    assert build_feature_set(FeaturesConfig.model_validate(swapped), 22050).summary_columns() == cols


def test_values_are_the_statistics_over_frames():
    fs = build_feature_set(
        FeaturesConfig.model_validate({"mfcc": {}, "rms": {}, "summaries": ["mean", "std", "min", "max"]}), 16000
    )
    y = np.random.default_rng(3).standard_normal(16000).astype(np.float32) * 0.1
    feats = fs.compute(y)
    row = fs.summarize(feats)
    assert row.dtype == np.float32 and row.shape == (len(fs.summary_columns()),) == ((20 + 1) * 4,)
    got = dict(zip(fs.summary_columns(), row))
    m = feats["mfcc"].astype(np.float64)
    assert_allclose([got[f"mfcc_{i:02d}_mean"] for i in range(20)], m.mean(axis=0), rtol=1e-6)
    assert_allclose(got["mfcc_03_std"], m[:, 3].std(), rtol=1e-6)
    assert got["rms_min"] == feats["rms"].min() and got["rms_max"] == feats["rms"].max()


def test_no_summaries_means_no_columns():
    fs = build_feature_set(FeaturesConfig(), 16000)
    assert fs.summary_columns() == []
    assert fs.summarize(fs.compute(np.zeros(1600, np.float32))).shape == (0,)


def test_wide_features_get_wide_indices():
    fs = build_feature_set(FeaturesConfig.model_validate({"spectrogram": {}, "summaries": ["max"]}), 16000)
    cols = fs.summary_columns()
    assert cols[0] == "spectrogram_000_max" and cols[-1] == "spectrogram_200_max"
