"""Frame counts and time alignment are the same for every frame-level feature; one STFT per clip."""

from __future__ import annotations

import warnings

import librosa
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipeline.features.analysis as analysis
from pipeline.errors import ConfigError
from pipeline.features import REGISTRY, FeaturesConfig, build_feature_set

SR = 16000
# Every feature whose frame t depends only on the samples under frame t's window.
LOCAL = {
    "spectrogram": {},
    "mel": {"n_mels": 16},
    "log_mel": {"n_mels": 16, "top_db": None},
    "mfcc": {"n_mels": 16, "n_mfcc": 8, "top_db": None},
    "chroma": {},
    "spectral_centroid": {},
    "spectral_bandwidth": {},
    "spectral_rolloff": {},
    "spectral_flatness": {},
    "zero_crossing_rate": {},
    "rms": {},
}

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def local_features(n_fft: int, hop: int, center: bool):
    cfg = FeaturesConfig.model_validate({"stft": {"n_fft": n_fft, "hop_length": hop, "center": center}, **LOCAL})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty mel filters for tiny n_fft
        return build_feature_set(cfg, SR)


@SETTINGS
@given(
    n_samples=st.integers(1, 6000),
    hop=st.integers(16, 700),
    n_fft=st.sampled_from([64, 255, 400, 512, 1024]),
    center=st.booleans(),
)
def test_frame_counts_agree_for_every_feature_and_librosa(n_samples, hop, n_fft, center):
    fs = local_features(n_fft, hop, center)
    y = np.random.default_rng(n_samples).standard_normal(n_samples).astype(np.float32)
    if not center and n_samples < n_fft:
        with pytest.raises(ConfigError, match="features.stft.n_fft"):
            fs.n_frames(n_samples)
        with pytest.raises(ConfigError):
            fs.compute(y)
        return
    n = fs.n_frames(n_samples)
    expected = 1 + n_samples // hop if center and n_fft % 2 == 0 else None
    if expected is not None:
        assert n == expected
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa: n_fft too large for a short signal
        assert librosa.stft(y, n_fft=n_fft, hop_length=hop, center=center).shape[1] == n
        assert librosa.feature.rms(y=y, frame_length=n_fft, hop_length=hop, center=center).shape[1] == n
        zcr = librosa.feature.zero_crossing_rate(y, frame_length=n_fft, hop_length=hop, center=center)
        assert zcr.shape[1] == n
    out = fs.compute(y)
    assert {name: x.shape for name, x in out.items()} == {
        name: (n, *shape) for name, shape in fs.frame_shapes().items()
    }
    assert all(x.dtype == np.float32 for x in out.values())
    assert fs.frame_times(n).shape == (n,)


@SETTINGS
@given(
    n_samples=st.integers(2000, 6000),
    hop=st.integers(40, 400),
    n_fft=st.sampled_from([256, 400, 511]),
    center=st.booleans(),
    where=st.floats(0.0, 1.0),
)
def test_frame_t_of_every_feature_sees_the_same_samples(n_samples, hop, n_fft, center, where):
    """Changing samples outside frame t's window changes no feature at frame t."""
    fs = local_features(n_fft, hop, center)
    rng = np.random.default_rng(n_samples + hop)
    y = rng.standard_normal(n_samples).astype(np.float32)
    n = fs.n_frames(n_samples)
    t = min(int(where * n), n - 1)
    start = t * hop - (n_fft // 2 if center else 0)  # first sample under frame t
    inside = np.zeros(n_samples, dtype=bool)
    inside[max(start, 0) : max(start + n_fft, 0)] = True
    y2 = np.where(inside, y, rng.standard_normal(n_samples).astype(np.float32) * 3)
    a, b = fs.compute(y), fs.compute(y2)
    for name in fs.names:
        np.testing.assert_allclose(a[name][t], b[name][t], rtol=1e-5, atol=1e-6, err_msg=name)
    if (~inside).sum() > n_fft:  # and frames that do see the change differ
        assert any(not np.allclose(a[name], b[name]) for name in fs.names)
    centre_sample = t * hop + (0 if center else n_fft // 2)
    assert fs.frame_times(n)[t] == pytest.approx(centre_sample / SR)


def test_one_stft_per_clip_whatever_features(monkeypatch):
    calls = []
    real = analysis._stft

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    def no_librosa_stft(*args, **kwargs):
        raise AssertionError("librosa.stft must not be called: features share one STFT")

    monkeypatch.setattr(analysis, "_stft", counting)
    monkeypatch.setattr(librosa.core.spectrum, "stft", no_librosa_stft)
    y = np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    every = {name: {} for name in REGISTRY} | {"chroma": {"tuning": "estimate"}, "mfcc": {"deltas": True}}
    configs = [every, {"log_mel": {}}, {"rms": {}, "mfcc": {}}, {"spectral_contrast": {}, "spectral_rolloff": {}}]
    for raw in configs:
        fs = build_feature_set(FeaturesConfig.model_validate(raw), SR)
        calls.clear()
        out = fs.compute(y)
        assert len(out) == len(fs.names)
        assert len(calls) == 1, (raw, len(calls))


def test_short_clips_with_deltas_explain_the_fix():
    fs = build_feature_set(FeaturesConfig.model_validate({"mfcc": {"deltas": True}}), SR)
    with pytest.raises(ConfigError, match="delta_width"):
        fs.compute(np.ones(800, np.float32))  # 6 frames < delta_width 9
    nearest = build_feature_set(FeaturesConfig.model_validate({"mfcc": {"deltas": True, "delta_mode": "nearest"}}), SR)
    assert nearest.compute(np.ones(800, np.float32))["mfcc"].shape == (6, 60)
