"""Each quality metric against a signal with a known answer (issue 20)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from pipeline.quality.analyze import measure, quality_flags, rule_values
from pipeline.quality.config import QualityConfig
from pipeline.quality.loudness import LOUDNESS_FLOOR_LUFS, integrated_loudness, k_weighting
from pipeline.quality.metrics import (
    activity_fractions,
    bandwidth_hz,
    clipping_fraction,
    dc_offset,
    peak_dbfs,
    rms_dbfs,
    sample_summary,
    snr_db,
    spectral_frames,
)

SR = 16000


def test_k_weighting_matches_the_bs1770_tables_at_48k():
    (sb, sa), (hb, ha) = k_weighting(48000)
    np.testing.assert_allclose(sb, [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-8)
    np.testing.assert_allclose(sa, [1.0, -1.69065929318241, 0.73248077421585], atol=1e-8)
    np.testing.assert_allclose(hb, [1.0, -2.0, 1.0])
    np.testing.assert_allclose(ha, [1.0, -1.99004745483398, 0.99007225036621], atol=1e-8)


@pytest.mark.parametrize("sr", [48000, 44100, 16000])
def test_ebu_r128_reference_tone_reads_minus_23_lufs(sr):
    # EBU Tech 3341 test 1: 1 kHz sine at -23 dBFS in both channels of a stereo programme
    t = np.arange(20 * sr) / sr
    tone = 10 ** (-23 / 20) * np.sin(2 * np.pi * 1000 * t)
    assert integrated_loudness(np.stack([tone, tone], axis=1), sr) == pytest.approx(-23.0, abs=0.1)
    # one channel carries half the power: 3 dB less
    assert integrated_loudness(tone, sr) == pytest.approx(-26.01, abs=0.1)


def test_loudness_gates_out_silence_and_short_clips():
    t = np.arange(10 * SR) / SR
    tone = 10 ** (-23 / 20) * np.sin(2 * np.pi * 1000 * t)
    with_silence = np.concatenate([tone, np.zeros(10 * SR)])
    # the absolute gate (-70 LUFS) drops the silent half: the reading moves by the edge blocks only
    assert integrated_loudness(with_silence, SR) == pytest.approx(integrated_loudness(tone, SR), abs=0.1)
    assert integrated_loudness(0.01 * with_silence, SR) == pytest.approx(integrated_loudness(tone, SR) - 40, abs=0.1)
    assert integrated_loudness(tone[: SR // 4], SR) == LOUDNESS_FLOOR_LUFS
    assert integrated_loudness(np.zeros(SR), SR) == LOUDNESS_FLOOR_LUFS


def test_sine_clipped_by_6_db():
    t = np.arange(3 * SR) / SR
    y = np.clip(2.0 * np.sin(2 * np.pi * 441 * t), -1, 1)  # 6 dB over full scale, clipped
    y = (np.round(y * 32767) / 32768).astype(np.float32)  # as decoded from 16-bit PCM
    # |2 sin| >= 1 for a third of each half period on each side: 2/3 of the samples
    assert clipping_fraction(y) == pytest.approx(2 / 3, abs=0.005)
    assert peak_dbfs(y) == pytest.approx(0.0, abs=0.01)
    clean = (0.5 * np.sin(2 * np.pi * 441 * t)).astype(np.float32)
    assert clipping_fraction(clean) == 0.0
    assert peak_dbfs(clean) == pytest.approx(-6.02, abs=0.01)
    assert rms_dbfs(clean) == pytest.approx(-9.03, abs=0.01)
    # a lone full-scale sample is a peak, not clipping; two in a row are
    spikes = np.zeros(1000, np.float32)
    spikes[100] = 1.0
    assert clipping_fraction(spikes) == 0.0
    spikes[101] = -1.0
    assert clipping_fraction(spikes) == pytest.approx(2 / 1000)


def test_dc_offset():
    t = np.arange(SR) / SR
    assert dc_offset(0.1 + 0.3 * np.sin(2 * np.pi * 100 * t)) == pytest.approx(0.1, abs=1e-6)


@pytest.mark.parametrize("snr", [5, 10, 15, 20, 25])
@pytest.mark.parametrize("freq", [300.0, 1000.0, 3500.0])
def test_snr_of_tone_in_white_noise_within_3_db(snr, freq):
    rng = np.random.default_rng(int(snr * 7 + freq))
    t = np.arange(4 * SR) / SR
    tone = 0.3 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6))
    noise = rng.standard_normal(t.size)
    noise *= np.sqrt(np.mean(tone**2) / np.mean(noise**2) / 10 ** (snr / 10))
    est = snr_db(spectral_frames((tone + noise).astype(np.float32), SR))
    assert abs(est - snr) <= 3.0, (snr, freq, est)


def test_bandwidth_of_4khz_low_passed_noise():
    rng = np.random.default_rng(3)
    x = np.fft.rfft(rng.standard_normal(4 * SR))
    x[np.fft.rfftfreq(4 * SR, 1 / SR) > 4000] = 0
    y = (0.1 * np.fft.irfft(x, 4 * SR)).astype(np.float32)
    assert bandwidth_hz(spectral_frames(y, SR)) == pytest.approx(4000, rel=0.05)
    white = (0.1 * rng.standard_normal(4 * SR)).astype(np.float32)
    assert bandwidth_hz(spectral_frames(white, SR)) == pytest.approx(SR / 2, rel=0.01)


def test_silence_with_a_one_second_burst_right_to_a_frame():
    rng = np.random.default_rng(5)
    y = np.zeros(5 * SR, np.float32)
    start = int(1.73 * SR)  # not on a frame boundary
    y[start : start + SR] = 0.1 * rng.standard_normal(SR)
    frame = int(0.02 * SR)
    n_frames = -(-y.size // frame)
    speech, silence = activity_fractions(y, SR, frame_seconds=0.02, speech_dbfs=-45, silence_dbfs=-60)
    # the burst covers 50 frames, or 51 when it straddles frame edges: at most one frame off
    assert abs(silence * n_frames - (n_frames - 50)) <= 1
    assert abs(speech * n_frames - 50) <= 1
    assert speech + silence == pytest.approx(1.0)


def test_measure_and_flags():
    rng = np.random.default_rng(2)
    x = np.fft.rfft(rng.standard_normal(3 * SR))
    x[np.fft.rfftfreq(3 * SR, 1 / SR) > 3000] = 0
    narrow = np.fft.irfft(x, 3 * SR)
    narrow = (0.5 * narrow / np.max(np.abs(narrow))).astype(np.float32)
    cfg = QualityConfig()
    m = measure(narrow, narrow, SR, cfg)
    assert set(m.metrics) == {"peak_dbfs", "rms_dbfs", "loudness_lufs", "dc_offset", "clipping_fraction", "speech_fraction",
                              "silence_fraction", "snr_db", "bandwidth_hz"}
    assert all(np.isfinite(v) for v in m.metrics.values())
    assert m.metrics["bandwidth_hz"] == pytest.approx(3000, rel=0.05)
    # stationary noise is all noise floor to a blind SNR estimate
    assert quality_flags(rule_values(m.metrics, sample_rate=SR), cfg) == ["low_snr", "narrowband"]
    clipped = np.clip(4.0 * narrow, -1, 1)
    m2 = measure(clipped, clipped, SR, cfg)
    assert "clipped" in quality_flags(rule_values(m2.metrics, sample_rate=SR), cfg)
    quiet = np.concatenate([narrow[:SR] * 0.001, np.zeros(20 * SR, np.float32)])
    m3 = measure(quiet, quiet, SR, cfg)
    assert "mostly_silent" in quality_flags(rule_values(m3.metrics, sample_rate=SR), cfg)
    assert len(m.pcm_hash) == 32 and m.pcm_hash != m2.pcm_hash and m.codes.dtype == np.int32 and m.keys[0].size > 0
    # a custom flag rule
    strict = QualityConfig(flag_if="loudness_lufs < -10")
    assert "quality" in quality_flags(rule_values(m.metrics, sample_rate=SR), strict)


def test_spectral_loudness_agrees_with_the_filtered_samples():
    from pipeline.quality.loudness import spectral_loudness
    from pipeline.quality.testset import speech_like

    def both(y, sr):
        return spectral_loudness(spectral_frames(y, sr)), integrated_loudness(y, sr)

    t = np.arange(20 * 48000) / 48000
    fast, exact = both((10 ** (-23 / 20) * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), 48000)
    assert fast == pytest.approx(-26.01, abs=0.1) and exact == pytest.approx(-26.01, abs=0.1)
    rng = np.random.default_rng(9)
    err = []
    for k in range(30):
        y = speech_like(rng, f0_hz=rng.uniform(90, 240), tract=rng.uniform(0.85, 1.2), seconds=rng.uniform(2, 6)) * 10 ** (-(k % 5) / 4)
        fast, exact = both(y.astype(np.float32), SR)
        err.append(fast - exact)
    # frames stand for the samples at a block's edges: unbiased, a few tenths of a LU apart
    assert abs(np.mean(err)) < 0.1 and np.mean(np.abs(err)) < 0.25 and np.max(np.abs(err)) < 1.0
    assert both(np.zeros(SR, np.float32), SR)[0] == LOUDNESS_FLOOR_LUFS


def test_measure_reuses_the_features_analysis_and_leaves_the_features_bit_identical():
    from pipeline.features import FeaturesConfig, build_feature_set
    from pipeline.quality.testset import speech_like

    y = speech_like(np.random.default_rng(4), f0_hz=130, tract=1.0, seconds=3.0)
    fset = build_feature_set(FeaturesConfig.model_validate({"log_mel": {}, "spectral_centroid": {}, "mfcc": {}}), SR)
    alone = fset.compute(y)
    ana = fset.analyze(y)
    m = measure(y, y, SR, QualityConfig(), analysis=ana)
    shared = fset.compute(y, analysis=ana)
    assert all(np.array_equal(alone[k], shared[k]) for k in alone)
    # the default STFT (n_fft 400, hop 160, Hann) is the features': the same metrics without an analysis
    m0 = measure(y, y, SR, QualityConfig())
    assert m.metrics == m0.metrics and np.array_equal(m.codes, m0.codes) and m.pcm_hash == m0.pcm_hash
    # measure's one compiled call per side gives what the functions per metric give
    from pipeline.quality.fingerprint import fingerprint, pcm_hash, sketch
    from pipeline.quality.loudness import spectral_loudness

    s = spectral_frames(y, SR)
    codes, _ = fingerprint(s)
    assert (m.metrics["snr_db"], m.metrics["bandwidth_hz"], m.metrics["loudness_lufs"]) == (snr_db(s), bandwidth_hz(s), spectral_loudness(s))
    assert np.array_equal(m.codes, codes) and all(np.array_equal(a, b) for a, b in zip(m.keys, sketch(codes)))
    levels = sample_summary(y, 320, speech_dbfs=-45, silence_dbfs=-60)
    # two compiled loops with fastmath sums: numba may vectorise them with another order (it
    # depends on the arrays' alignment), so the float sums agree to rounding, the counts exactly
    assert m.pcm_hash == pcm_hash(y) and (m.metrics["speech_fraction"], m.metrics["silence_fraction"]) == (
        levels.speech_fraction, levels.silence_fraction)
    assert (m.metrics["rms_dbfs"], m.metrics["dc_offset"]) == pytest.approx((levels.rms_dbfs, levels.dc_offset), rel=1e-6, abs=1e-9)
    with pytest.raises(ValueError, match="not of this clip"):
        measure(y[:-1], y[:-1], SR, QualityConfig(), analysis=ana)


def test_pcm_hash_is_xxh3_128_of_the_float32_bytes():
    from pipeline.quality.fingerprint import pcm_hash

    def pcm(n):  # exact in float32 on any platform
        return (((np.arange(n, dtype=np.int64) * 2654435761) % 65536 - 32768) / 32768).astype(np.float32)

    # xxhash.xxh3_128_hexdigest(pcm(n).tobytes()) (python-xxhash 4.1.0, xxHash 0.8.3): one
    # partial block, one block and a partial one, several blocks with an odd word count
    known = {61: "8f84182eeb6f5d7d7b16cd6999b1fafb", 257: "278d253da3d784dfd2666ad899c0e5d7",
             4001: "a1e4c7873a27dc9b494fd97cd15ae2fe", 16000: "57dc2c0ba68e550e0c22ccfbb5a44715"}
    for n, digest in known.items():
        assert pcm_hash(pcm(n)) == digest
        shifted = np.empty(n + 1, np.float32)[1:]  # 4 bytes off the allocation: unaligned 64-bit words
        shifted[:] = pcm(n)
        assert pcm_hash(shifted) == digest and pcm_hash(pcm(n).astype(np.float64)) == digest
    # XXH3's short paths are not compiled: 60 samples or fewer take BLAKE2b-128
    assert pcm_hash(pcm(60)) == hashlib.blake2b(pcm(60).tobytes(), digest_size=16).hexdigest()
    y = np.random.default_rng(1).standard_normal(SR).astype(np.float32)
    z = y.copy()
    z[-1] += 1e-3
    # the duplicate index keys on the first 64 bits: a change anywhere must reach them
    assert pcm_hash(y)[:16] != pcm_hash(z)[:16] and pcm_hash(y[:-1])[:16] != pcm_hash(y)[:16]


def test_compiled_median_filter_matches_scipy():
    from scipy.ndimage import median_filter

    from pipeline.quality._kernels import median_nearest

    x = np.random.default_rng(0).random(100).astype(np.float32)
    for width in (3, 7, 13, 151):
        assert np.array_equal(median_nearest(x, width), median_filter(x, size=width, mode="nearest"))


def test_compiled_low_quantile_matches_numpy():
    from pipeline.quality._kernels import low_quantile

    rng = np.random.default_rng(0)
    for n_blocks, k in ((40, 3), (130, 12), (600, 59)):  # merged row by row; a partition per column from k = 48
        cells = (rng.random((n_blocks, 37)) ** 3).astype(np.float32)
        cells[::5, ::3] = cells[1, 0]  # ties
        assert np.array_equal(low_quantile(cells, k), np.partition(cells, k, axis=0)[k])
