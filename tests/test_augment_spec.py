"""SpecAugment masks: exactly the drawn bands are set, nothing else, inputs untouched."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.augment import freq_mask, time_mask


def feats_of(n_frames: int, n_mels: int = 40, n_mfcc: int = 13, seed: int = 0) -> dict[str, np.ndarray]:
    r = np.random.default_rng(seed)
    # values in [1, 2): no zeros, so every zero in the output was set by a mask
    return {
        "log_mel": r.uniform(1, 2, (n_frames, n_mels)).astype(np.float32),
        "mfcc": r.uniform(1, 2, (n_frames, n_mfcc)).astype(np.float32),
        "rms": r.uniform(1, 2, (n_frames, 1)).astype(np.float32),
        "duration": np.array([1.5], np.float32),  # per-example, not frame-level
    }


@settings(max_examples=40, deadline=None)
@given(
    n_frames=st.integers(1, 120),
    n_mels=st.integers(2, 64),
    count=st.integers(0, 4),
    max_width=st.integers(0, 80),
    seed=st.integers(0, 2**32 - 1),
)
def test_freq_mask_zeroes_exactly_drawn_bands(n_frames, n_mels, count, max_width, seed):
    feats = feats_of(n_frames, n_mels, seed=seed)
    before = {k: v.copy() for k, v in feats.items()}
    params = freq_mask.FreqMaskParams(count=count, max_width_bins=max_width)
    out, drawn = freq_mask.apply(feats, np.random.default_rng(seed), params)
    for k in feats:  # inputs not mutated
        assert np.array_equal(feats[k], before[k])
    assert {m["feature"] for m in drawn["masks"]} <= {"log_mel", "mfcc"}  # default: 2-D, > 1 bin
    assert len(drawn["masks"]) == 2 * count
    for name in ("log_mel", "mfcc"):
        expected = feats[name].copy()
        for m in drawn["masks"]:
            if m["feature"] == name:
                assert 0 <= m["width_bins"] <= min(max_width, expected.shape[1])
                assert 0 <= m["start_bin"] <= expected.shape[1] - m["width_bins"]
                expected[:, m["start_bin"] : m["start_bin"] + m["width_bins"]] = 0
        assert np.array_equal(out[name], expected)
    assert out["rms"] is feats["rms"] and out["duration"] is feats["duration"]


def test_freq_mask_only_named_features_and_mean_fill():
    feats = feats_of(50)
    params = freq_mask.FreqMaskParams(count=1, max_width_bins=40, features=("mfcc",), fill="mean")
    out, drawn = freq_mask.apply(feats, np.random.default_rng(4), params)
    (m,) = drawn["masks"]
    assert m["feature"] == "mfcc" and m["width_bins"] > 0
    band = out["mfcc"][:, m["start_bin"] : m["start_bin"] + m["width_bins"]]
    assert np.all(band == np.float32(feats["mfcc"].mean(dtype=np.float64)))
    assert out["log_mel"] is feats["log_mel"]


def test_freq_mask_unknown_feature_is_key_error():
    with pytest.raises(KeyError, match="log_mel"):
        freq_mask.apply({"mfcc": np.ones((3, 4), np.float32)}, np.random.default_rng(0), freq_mask.FreqMaskParams(features=("log_mel",)))


@settings(max_examples=40, deadline=None)
@given(
    n_frames=st.integers(0, 150),
    count=st.integers(0, 4),
    max_width=st.integers(0, 200),
    fraction=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_time_mask_zeroes_exactly_drawn_frames_in_every_frame_feature(n_frames, count, max_width, fraction, seed):
    feats = feats_of(n_frames, seed=seed)
    before = {k: v.copy() for k, v in feats.items()}
    params = time_mask.TimeMaskParams(count=count, max_width_frames=max_width, max_width_fraction=fraction)
    out, drawn = time_mask.apply(feats, np.random.default_rng(seed), params)
    for k in feats:
        assert np.array_equal(feats[k], before[k])
    assert drawn["features"] == ["log_mel", "mfcc", "rms"]
    assert len(drawn["masks"]) == (count if n_frames else 0)
    cap = min(max_width, int(np.floor(fraction * n_frames)))
    for name in drawn["features"]:
        expected = feats[name].copy()
        for m in drawn["masks"]:
            assert 0 <= m["width_frames"] <= cap
            assert 0 <= m["start_frame"] <= n_frames - m["width_frames"]
            expected[m["start_frame"] : m["start_frame"] + m["width_frames"]] = 0
        assert np.array_equal(out[name], expected)
    assert out["duration"] is feats["duration"]


def test_time_mask_known_draw():
    feats = {"log_mel": np.ones((10, 3), np.float32)}
    out, drawn = time_mask.apply(feats, np.random.default_rng(0), time_mask.TimeMaskParams(count=1, max_width_frames=4))
    (m,) = drawn["masks"]
    zero_rows = np.flatnonzero(~out["log_mel"].any(axis=1)).tolist()
    assert zero_rows == list(range(m["start_frame"], m["start_frame"] + m["width_frames"]))
