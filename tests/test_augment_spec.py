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
    params = freq_mask.FreqMaskParams(count=count, max_width_bins=max_width, fill="zero")
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
    params = time_mask.TimeMaskParams(count=count, max_width_frames=max_width, max_width_fraction=fraction, fill="zero")
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
    out, drawn = time_mask.apply(feats, np.random.default_rng(0), time_mask.TimeMaskParams(count=1, max_width_frames=4, fill="zero"))
    (m,) = drawn["masks"]
    zero_rows = np.flatnonzero(~out["log_mel"].any(axis=1)).tolist()
    assert zero_rows == list(range(m["start_frame"], m["start_frame"] + m["width_frames"]))


# --- the default fill is neutral for the stored feature ----------------------------------
def _log_mel_of_a_chirp(seconds: float = 2.0) -> np.ndarray:
    """A real log-mel (dB, top_db 80, max 0 dB): a rising chirp in low noise, 16 kHz."""
    from pipeline.features import build_feature_set
    from pipeline.features.config import FeaturesConfig

    sr = 16000
    t = np.arange(int(seconds * sr)) / sr
    r = np.random.default_rng(7)
    y = (0.5 * np.sin(2 * np.pi * (200 * t + 900 * t**2)) + 0.01 * r.standard_normal(t.size)).astype(np.float32)
    config = FeaturesConfig.model_validate({"stft": {"n_fft": 400, "hop_length": 160}, "log_mel": {"n_mels": 40, "top_db": 80}})
    return build_feature_set(config, sr).compute(y)["log_mel"]


def test_time_mask_default_fill_is_each_bands_mean_and_neutral_after_normalization():
    from pipeline.features.normalize import RunningStats, per_example

    x = _log_mel_of_a_chirp()
    assert x.max() > -1.0 and x.mean() < -20.0  # dB: 0 is the loudest value, far above the mean
    params = time_mask.TimeMaskParams(count=1, max_width_frames=40)
    assert params.fill == "band_mean"
    out, drawn = time_mask.apply({"log_mel": x}, np.random.default_rng(3), params)
    (m,) = drawn["masks"]
    assert m["width_frames"] >= 10
    region = slice(m["start_frame"], m["start_frame"] + m["width_frames"])
    band_mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    np.testing.assert_array_equal(out["log_mel"][region], np.broadcast_to(band_mean, out["log_mel"][region].shape))
    assert abs(out["log_mel"][region].mean() - x.mean()) < 1e-3  # the region's mean: the example's own mean
    normalized = per_example(out["log_mel"])[region]
    assert abs(normalized.mean()) < 0.5  # in sigma of each band
    stats = RunningStats(x.shape[1]).update(x)  # global normalization with the unmasked clip's statistics
    assert abs(stats.apply(out["log_mel"])[region].mean()) < 0.5


def test_time_mask_zero_fill_on_db_features_is_a_bright_stripe():
    """Why zero is not the default: 0 dB is several sigma above a log-mel band's mean."""
    from pipeline.features.normalize import per_example

    x = _log_mel_of_a_chirp()
    out, drawn = time_mask.apply({"log_mel": x}, np.random.default_rng(3), time_mask.TimeMaskParams(count=1, max_width_frames=40, fill="zero"))
    (m,) = drawn["masks"]
    region = slice(m["start_frame"], m["start_frame"] + m["width_frames"])
    assert per_example(out["log_mel"])[region].mean() > 1.5


def test_freq_mask_default_fill_is_each_masked_bands_own_mean():
    from pipeline.features.normalize import RunningStats, per_example

    x = _log_mel_of_a_chirp()
    out, drawn = freq_mask.apply({"log_mel": x}, np.random.default_rng(5), freq_mask.FreqMaskParams(count=1, max_width_bins=12))
    (m,) = drawn["masks"]
    assert m["width_bins"] >= 3
    bands = slice(m["start_bin"], m["start_bin"] + m["width_bins"])
    own = x[:, bands].mean(axis=0, dtype=np.float64).astype(np.float32)
    np.testing.assert_array_equal(out["log_mel"][:, bands], np.broadcast_to(own, out["log_mel"][:, bands].shape))
    assert abs(out["log_mel"][:, bands].mean() - x[:, bands].mean()) < 1e-3
    np.testing.assert_array_equal(np.delete(out["log_mel"], np.arange(x.shape[1])[bands], axis=1), np.delete(x, np.arange(x.shape[1])[bands], axis=1))
    assert np.abs(per_example(out["log_mel"])[:, bands]).max() < 0.5
    stats = RunningStats(x.shape[1]).update(x)
    assert abs(stats.apply(out["log_mel"])[:, bands].mean()) < 0.5


def test_explicit_fill_values():
    x = _log_mel_of_a_chirp(0.5)
    out, drawn = freq_mask.apply({"log_mel": x}, np.random.default_rng(5), freq_mask.FreqMaskParams(count=1, max_width_bins=12, fill=-55.5))
    (m,) = drawn["masks"]
    assert m["width_bins"] > 0 and np.all(out["log_mel"][:, m["start_bin"] : m["start_bin"] + m["width_bins"]] == np.float32(-55.5))
    out, drawn = time_mask.apply({"log_mel": x}, np.random.default_rng(3), time_mask.TimeMaskParams(count=1, max_width_frames=10, fill=-80))
    (m,) = drawn["masks"]
    assert m["width_frames"] > 0 and np.all(out["log_mel"][m["start_frame"] : m["start_frame"] + m["width_frames"]] == np.float32(-80))
    with pytest.raises(ValueError, match="fill"):
        time_mask.TimeMaskParams(fill="loud")
    with pytest.raises(ValueError, match="fill"):
        freq_mask.FreqMaskParams(fill=float("nan"))
