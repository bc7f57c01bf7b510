"""The float32 phase vocoder matches librosa's and inverts cleanly."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from pipeline.augment import _stft

# librosa 1.0 rewrote phase_vocoder: no two zero frames after the last one (the magnitude is
# extrapolated from the last two frames, the last phase increment is 0) and its n_fft and
# hop_length parameters are deprecated and unused. Ours keeps the 0.10 / 0.11 algorithm, so a
# store's augmented copies do not depend on the librosa installed. Output frames that read
# only input frames 0 .. n - 1 (step < n - 1) are the same algorithm in both: those must match.
LIBROSA_1 = int(librosa.__version__.split(".")[0]) >= 1


def _librosa_phase_vocoder(spec: np.ndarray, rate: float) -> np.ndarray:
    if LIBROSA_1:
        return librosa.phase_vocoder(spec, rate=rate)
    return librosa.phase_vocoder(spec, rate=rate, n_fft=2048, hop_length=512)


def _interior_frames(n_frames: int, rate: float) -> int:
    """Output frames computed the same way by every librosa: all of them before 1.0."""
    steps = np.arange(0, n_frames, rate, dtype=np.float64)
    return int(np.count_nonzero(steps < n_frames - 1)) if LIBROSA_1 else len(steps)


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
    # samples outside the window of any boundary frame (librosa >= 1.0), else all of them
    n = _interior_frames(1 + len(y) // 512, rate) * 512 - 1024 if LIBROSA_1 else len(ref)
    assert n > 0.8 * len(ref)
    assert np.max(np.abs(ours[:n] - ref[:n])) < 0.05


@pytest.mark.parametrize("semitones", [-3.0, 2.5])
def test_pitch_shift_matches_librosa(y, semitones):
    from pipeline.augment.pitch_shift import pitch_shift

    ours = pitch_shift(y, 16000, semitones)
    ref = librosa.effects.pitch_shift(y, sr=16000, n_steps=semitones, res_type="soxr_hq")
    assert ours.dtype == np.float32 and ours.shape == ref.shape == y.shape
    assert np.corrcoef(ours, ref)[0, 1] > 0.999


@pytest.mark.parametrize("rate", [0.7, 1.3])
def test_phase_vocoder_matches_librosa(y, rate):
    spec = librosa.stft(y)
    ours = _stft.phase_vocoder(_stft.stft(y), rate)
    ref = _librosa_phase_vocoder(spec, rate).T
    assert ours.shape == ref.shape and ours.dtype == np.complex64
    k = _interior_frames(spec.shape[1], rate)
    assert k >= len(ref) - 2
    ours, ref = ours[:k], ref[:k]
    np.testing.assert_allclose(np.abs(ours), np.abs(ref), atol=1e-3)
    # phases agree up to float32 accumulation over the frames
    w = np.abs(ref) > 1e-2
    dphi = np.angle(ours[w] * np.conj(ref[w]))
    assert np.quantile(np.abs(dphi), 0.99) < 0.05
