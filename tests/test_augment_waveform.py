"""Defining properties of each waveform transform, on synthetic signals with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.augment import (
    background_noise,
    gain,
    gaussian_noise,
    pitch_shift,
    reverb,
    speed,
    time_shift,
    time_stretch,
)
from pipeline.augment._mix import power

SR = 16000


def sine(freq_hz: float, seconds: float, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def peak_hz(y: np.ndarray, sr: int = SR) -> float:
    """Frequency of the largest FFT peak (Hann window, 4x zero padding, parabolic refinement)."""
    n = 4 * len(y)
    mag = np.abs(np.fft.rfft(y * np.hanning(len(y)), n=n))
    k = int(np.argmax(mag[1:-1])) + 1
    a, b, c = np.log(mag[k - 1 : k + 2] + 1e-12)
    k_frac = k + 0.5 * (a - c) / (a - 2 * b + c)
    return k_frac * sr / n


def snr_db(clean: np.ndarray, mix: np.ndarray) -> float:
    return 10 * np.log10(power(clean) / power(mix.astype(np.float64) - clean))


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- time_shift


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 300), k=st.integers(-400, 400))
def test_shift_wrap_is_np_roll(n, k):
    y = np.arange(1, n + 1, dtype=np.float32)
    assert np.array_equal(time_shift.shift(y, k, "wrap"), np.roll(y, k))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 300), k=st.integers(-400, 400))
def test_shift_silence_zero_fills(n, k):
    y = np.arange(1, n + 1, dtype=np.float32)  # no zeros in y: every zero out is fill
    out = time_shift.shift(y, k, "silence")
    expected = np.zeros(n, np.float32)
    for i in range(n):
        if 0 <= i - k < n:
            expected[i] = y[i - k]
    assert out.dtype == np.float32 and np.array_equal(out, expected)


def test_time_shift_apply_reports_samples_and_moves_by_them():
    y = sine(300, 1.0)
    params = time_shift.TimeShiftParams(max_shift_seconds=0.3, mode="silence")
    out, drawn = time_shift.apply(y, SR, rng(3), params)
    k = drawn["shift_samples"]
    assert k != 0 and abs(k) <= int(0.3 * SR)
    assert drawn["shift_seconds"] == k / SR
    assert np.array_equal(out, time_shift.shift(y, k, "silence"))
    assert not np.shares_memory(out, y)


# ---------------------------------------------------------------- pitch_shift


@pytest.mark.parametrize("semitones, ratio", [(12, 2.0), (-12, 0.5), (7, 2 ** (7 / 12))])
def test_pitch_shift_scales_fundamental_keeps_duration(semitones, ratio):
    y = sine(220, 1.5)
    out = pitch_shift.pitch_shift(y, SR, semitones)
    assert out.dtype == np.float32 and out.shape == y.shape
    core = slice(SR // 4, -SR // 4)  # avoid the phase vocoder's edge frames
    assert peak_hz(out[core]) == pytest.approx(220 * ratio, rel=0.02)
    # energy stays in the middle too: it is a pitch change, not a time change
    assert power(out[core]) == pytest.approx(power(y[core]), rel=0.3)


def test_pitch_shift_apply_draws_in_range():
    params = pitch_shift.PitchShiftParams(min_semitones=-1, max_semitones=3)
    out, drawn = pitch_shift.apply(sine(220, 0.5), SR, rng(1), params)
    assert -1 <= drawn["semitones"] <= 3 and out.shape == (SR // 2,)


# ---------------------------------------------------------------- time_stretch


def test_time_stretch_rate_1_25_gives_0_8_duration_same_pitch():
    # Tone burst from 0.5 s to 1.5 s inside 2 s: its energy centroid moves from 1.0 s to 0.8 s.
    y = sine(440, 2.0)
    y[: SR // 2] = 0
    y[3 * SR // 2 :] = 0
    out = time_stretch.time_stretch(y, 1.25)
    hop = time_stretch._stft.N_FFT // 4
    assert len(out) == round(len(y) / 1.25) == int(0.8 * len(y))
    e = out.astype(np.float64) ** 2
    centroid = np.sum(np.arange(len(out)) * e) / np.sum(e)
    assert abs(centroid - 0.8 * SR) <= hop
    # burst length: samples above -20 dB of the peak envelope span 0.8 s (+- 1 hop at each edge)
    env = np.convolve(e, np.ones(hop) / hop, mode="same")
    above = np.flatnonzero(env > 0.01 * env.max())
    assert abs((above[-1] - above[0]) - 0.8 * SR) <= 2 * hop
    burst = out[int(0.5 * SR) : int(1.1 * SR)]
    assert peak_hz(burst) == pytest.approx(440, rel=0.02)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 5000), rate=st.floats(0.5, 2.0))
def test_time_stretch_length_and_finite(n, rate):
    y = rng(n).standard_normal(n).astype(np.float32)
    out = time_stretch.time_stretch(y, rate)
    assert out.dtype == np.float32 and len(out) == round(n / rate)
    assert np.all(np.isfinite(out))


# ---------------------------------------------------------------- speed


def test_speed_1_1_shortens_and_raises_pitch():
    y = sine(300, 2.0)
    out = speed.change_speed(y, SR, 1.1)
    assert out.dtype == np.float32
    assert abs(len(out) - len(y) / 1.1) <= 1
    assert peak_hz(out[1000:-1000]) == pytest.approx(330, rel=0.005)


def test_speed_draws_from_factors_or_range():
    y = sine(300, 0.2)
    p = speed.SpeedParams(factors=[0.8, 1.25])
    seen = {speed.apply(y, SR, rng(s), p)[1]["factor"] for s in range(20)}
    assert seen == {0.8, 1.25}
    out, drawn = speed.apply(y, SR, rng(0), speed.SpeedParams(min_factor=0.95, max_factor=1.05))
    assert 0.95 <= drawn["factor"] <= 1.05 and abs(len(out) - len(y) / drawn["factor"]) <= 1
    assert speed.SpeedParams().factors == (0.9, 1.0, 1.1)
    assert speed.SpeedParams.model_validate({"name": "speed"}).model_dump()["factors"] == (0.9, 1.0, 1.1)


# ---------------------------------------------------------------- gain


def test_gain_plus_6_db_scales_rms():
    y = sine(300, 0.5)
    out = gain.apply_gain_db(y, 6.0)
    assert np.sqrt(power(out) / power(y)) == pytest.approx(10 ** (6 / 20), rel=1e-6)
    out2, drawn = gain.apply(y, SR, rng(0), gain.GainParams(min_gain_db=-3, max_gain_db=-1))
    assert -3 <= drawn["gain_db"] <= -1
    assert 20 * np.log10(np.sqrt(power(out2) / power(y))) == pytest.approx(drawn["gain_db"], abs=1e-5)


# ---------------------------------------------------------------- noise


def test_gaussian_noise_at_10_db_measures_10_db():
    y = sine(300, 10.0, amp=0.3)
    params = gaussian_noise.GaussianNoiseParams(min_snr_db=10, max_snr_db=10)
    out, drawn = gaussian_noise.apply(y, SR, rng(0), params)
    assert drawn == {"name": "gaussian_noise", "snr_db": 10.0}
    assert snr_db(y, out) == pytest.approx(10.0, abs=0.5)
    assert snr_db(y, out) == pytest.approx(10.0, abs=1e-3)  # scaled to the exact SNR
    resid = out.astype(np.float64) - y
    assert abs(resid.mean()) < 0.01 * resid.std()
    assert abs(np.mean(resid**4) / np.var(resid) ** 2 - 3.0) < 0.1  # Gaussian kurtosis


def test_gaussian_noise_leaves_silence_silent():
    out, _ = gaussian_noise.apply(np.zeros(1000, np.float32), SR, rng(0), gaussian_noise.GaussianNoiseParams())
    assert not np.any(out)


@pytest.mark.parametrize("clip_seconds", [0.3, 5.0])  # looped / cropped
@pytest.mark.parametrize("target_db", [5.0, 17.5])
def test_background_noise_at_snr_measures_snr(clip_seconds, target_db):
    y = sine(300, 2.0, amp=0.2)
    noise_clip = rng(5).uniform(-1, 1, int(clip_seconds * SR)).astype(np.float32)
    params = background_noise.BackgroundNoiseParams(source="noise", min_snr_db=target_db, max_snr_db=target_db)
    out, drawn = background_noise.apply(y, SR, rng(1), params, [noise_clip])
    assert out.shape == y.shape and out.dtype == np.float32
    assert snr_db(y, out) == pytest.approx(target_db, abs=1e-3)
    expected_noise = background_noise.loop_to_length(noise_clip, len(y), drawn["offset_samples"])
    np.testing.assert_allclose(out - y, drawn["gain"] * expected_noise, atol=1e-6)
    # the noise read starts at the drawn offset and wraps around the clip
    o, m = drawn["offset_samples"], len(noise_clip)
    assert expected_noise[0] == noise_clip[o] and expected_noise[m - o] == noise_clip[0]


def test_background_noise_picks_among_clips():
    y = sine(300, 0.1)
    clips = [rng(i).standard_normal(100 + i).astype(np.float32) for i in range(4)]
    p = background_noise.BackgroundNoiseParams(source="n")
    picked = {background_noise.apply(y, SR, rng(s), p, clips)[1]["clip_index"] for s in range(40)}
    assert picked == {0, 1, 2, 3}


# ---------------------------------------------------------------- reverb


def test_reverb_equals_fftconvolve_with_normalised_ir():
    y = rng(0).standard_normal(SR).astype(np.float32)
    ir = np.zeros(3000, np.float32)
    ir[200] = 0.5  # pre-delay before the direct path, trimmed
    ir[201:] = (0.1 * np.exp(-np.arange(2799) / 400) * rng(1).standard_normal(2799)).astype(np.float32)
    out, drawn = reverb.apply(y, SR, rng(2), reverb.ReverbParams(source="rirs"), [ir])
    h = ir[200:] / np.sqrt(np.sum(ir[200:].astype(np.float64) ** 2))
    assert drawn["ir_samples"] == len(h) == 2800
    expected = scipy.signal.fftconvolve(y, h.astype(np.float32))[: len(y)]
    assert out.shape == y.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-5)
    h_norm = reverb.normalise_ir(ir)
    assert np.sum(h_norm.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-6)
    assert np.argmax(np.abs(h_norm)) == 0


def test_reverb_without_trim_keeps_pre_delay():
    y = np.zeros(1000, np.float32)
    y[0] = 1.0
    ir = np.zeros(100, np.float32)
    ir[40] = 2.0
    out, _ = reverb.apply(y, SR, rng(0), reverb.ReverbParams(source="r", trim_to_peak=False), [ir])
    assert out[40] == pytest.approx(1.0, abs=1e-6)
    assert np.flatnonzero(np.abs(out) > 1e-6).tolist() == [40]


def test_drawn_params_are_json():
    y = sine(300, 0.3)
    for mod, params, extra in [
        (time_shift, time_shift.TimeShiftParams(), ()),
        (pitch_shift, pitch_shift.PitchShiftParams(), ()),
        (time_stretch, time_stretch.TimeStretchParams(), ()),
        (speed, speed.SpeedParams(), ()),
        (gain, gain.GainParams(), ()),
        (gaussian_noise, gaussian_noise.GaussianNoiseParams(), ()),
        (background_noise, background_noise.BackgroundNoiseParams(source="n"), ([y[:100]],)),
        (reverb, reverb.ReverbParams(source="r"), ([y[:100]],)),
    ]:
        out, drawn = mod.apply(y, SR, rng(0), params, *extra)
        assert out.dtype == np.float32 and out.ndim == 1
        assert json.loads(json.dumps(drawn)) == drawn and drawn["name"] == params.name


@settings(max_examples=15, deadline=None)
@given(n=st.integers(0, 4000), semitones=st.floats(-12, 12))
def test_pitch_shift_keeps_length_any_input(n, semitones):
    y = rng(n).standard_normal(n).astype(np.float32)
    out = pitch_shift.pitch_shift(y, SR, semitones)
    assert out.dtype == np.float32 and out.shape == (n,) and np.all(np.isfinite(out))
