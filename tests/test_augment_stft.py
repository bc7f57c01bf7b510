"""The float32 phase vocoder matches librosa's and inverts cleanly."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from pipeline.augment import _stft


@pytest.fixture(scope="module")
def y() -> np.ndarray:
    sr = 16000
    t = np.arange(sr) / sr
    return (0.3 * np.sin(2 * np.pi * 330 * t) + 0.05 * np.random.default_rng(0).standard_normal(sr)).astype(np.float32)


def test_stft_matches_librosa(y):
    np.testing.assert_allclose(_stft.stft(y).T, librosa.stft(y), atol=1e-3)


def test_istft_inverts_stft(y):
    np.testing.assert_allclose(_stft.istft(_stft.stft(y), len(y)), y, atol=1e-5)


@pytest.mark.parametrize("rate", [0.8, 1.25])
def test_stretch_matches_librosa_time_stretch(y, rate):
    ours = _stft.stretch(y, rate)
    ref = librosa.effects.time_stretch(y, rate=rate)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert np.corrcoef(ours, ref)[0, 1] > 0.999
    assert np.max(np.abs(ours - ref)) < 0.05


@pytest.mark.parametrize("semitones", [-3.0, 2.5])
def test_pitch_shift_matches_librosa(y, semitones):
    from pipeline.augment.pitch_shift import pitch_shift

    ours = pitch_shift(y, 16000, semitones)
    ref = librosa.effects.pitch_shift(y, sr=16000, n_steps=semitones, res_type="soxr_hq")
    assert ours.dtype == np.float32 and ours.shape == ref.shape == y.shape
    assert np.corrcoef(ours, ref)[0, 1] > 0.999


@pytest.mark.parametrize("rate", [0.7, 1.3])
def test_phase_vocoder_matches_librosa(y, rate):
    ours = _stft.phase_vocoder(_stft.stft(y), rate)
    ref = librosa.phase_vocoder(librosa.stft(y), rate=rate, n_fft=2048, hop_length=512)
    assert ours.shape == ref.T.shape and ours.dtype == np.complex64
    np.testing.assert_allclose(np.abs(ours), np.abs(ref.T), atol=1e-3)
    # phases agree up to float32 accumulation over the frames
    w = np.abs(ref.T) > 1e-2
    dphi = np.angle(ours[w] * np.conj(ref.T[w]))
    assert np.quantile(np.abs(dphi), 0.99) < 0.05
