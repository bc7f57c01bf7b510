"""Per-example quality metrics: pure functions on a mono float waveform (full scale 1.0).

Every function takes ``(n,)`` samples and returns plain floats. :func:`spectral_frames`
computes the one short-time power spectrum that the SNR, the bandwidth and the near-duplicate
fingerprint share, so the whole set costs a fraction of the log-mel features (bench_quality).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.signal
from scipy.ndimage import median_filter

#: level of digital silence; keeps every column finite (JSON manifests, rules, Parquet)
LEVEL_FLOOR_DB = -200.0
#: 1 LSB of 16-bit PCM: a sample this close to full scale counts as clipped
LSB = 2.0**-15


def _db(power: float) -> float:
    return 10.0 * math.log10(power) if power > 10.0 ** (LEVEL_FLOOR_DB / 10.0) else LEVEL_FLOOR_DB


def peak_dbfs(y: np.ndarray) -> float:
    """Largest absolute sample, in dB relative to full scale."""
    return _db(float(np.max(np.abs(y))) ** 2) if y.size else LEVEL_FLOOR_DB


def rms_dbfs(y: np.ndarray) -> float:
    """Root-mean-square level in dBFS (a full-scale sine reads -3.01)."""
    return _db(float(np.mean(np.square(y, dtype=np.float64)))) if y.size else LEVEL_FLOOR_DB


def dc_offset(y: np.ndarray) -> float:
    """Mean sample value (full scale 1.0)."""
    return float(np.mean(y, dtype=np.float64)) if y.size else 0.0


def clipping_fraction(y: np.ndarray, lsb: float = LSB) -> float:
    """Share of samples within ``lsb`` of full scale that are in runs of 2 or more.

    A single sample at full scale is a legal peak; two in a row at the rail are clipping.
    Compute it on the decoded audio, before resampling (which rings around the rail).
    """
    n = y.shape[0]
    if n < 2:
        return 0.0
    top = np.abs(y) >= 1.0 - 2.0 * lsb  # int16's positive rail is 1 - lsb
    pair = top[1:] & top[:-1]
    in_run = np.zeros(n, dtype=bool)
    in_run[1:] |= pair
    in_run[:-1] |= pair
    return float(np.count_nonzero(in_run)) / n


def frame_levels_dbfs(y: np.ndarray, frame: int) -> np.ndarray:
    """RMS level of each non-overlapping ``frame``-sample frame (the last partial one too), shape (n_frames,)."""
    n = y.shape[0]
    if n == 0:
        return np.zeros(0)
    k = -(-n // frame)
    sq = np.add.reduceat(np.square(y, dtype=np.float64), np.arange(0, n, frame))
    counts = np.full(k, float(frame))
    counts[-1] = n - (k - 1) * frame
    ms = sq / counts
    with np.errstate(divide="ignore"):
        return np.maximum(10.0 * np.log10(ms), LEVEL_FLOOR_DB)


def activity_fractions(y: np.ndarray, sample_rate: int, *, frame_seconds: float, speech_dbfs: float, silence_dbfs: float) -> tuple[float, float]:
    """``(speech_fraction, silence_fraction)``: frames above ``speech_dbfs`` / below ``silence_dbfs``."""
    levels = frame_levels_dbfs(y, max(1, int(round(frame_seconds * sample_rate))))
    if not levels.size:
        return 0.0, 1.0
    return float(np.mean(levels > speech_dbfs)), float(np.mean(levels < silence_dbfs))


@dataclass(frozen=True)
class Spectra:
    """Short-time power spectrum of a clip: ``power`` (n_frames, n_bins), bin ``freqs_hz`` (n_bins,)."""

    power: np.ndarray
    freqs_hz: np.ndarray
    hop: int
    n_fft: int


def analysis_n_fft(sample_rate: int) -> int:
    """The power of two closest to 128 ms: fine enough in frequency (8 Hz at 16 kHz) to see
    between the harmonics of a 100 Hz voice, which the SNR's noise floor must."""
    return 1 << max(6, int(round(math.log2(0.128 * sample_rate))))


def spectral_frames(y: np.ndarray, sample_rate: int) -> Spectra:
    """Blackman-Harris-windowed (-92 dB side lobes: sharp band edges) power spectrum,
    ``n_fft`` = :func:`analysis_n_fft`, hop ``n_fft / 4``."""
    n_fft = analysis_n_fft(sample_rate)
    hop = n_fft // 4  # 32 ms: a trim moves the fingerprint's frames by at most 1/8 window
    x = np.asarray(y, dtype=np.float32)
    if x.shape[0] < n_fft:
        x = np.pad(x, (0, n_fft - x.shape[0]))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    win = scipy.signal.get_window("blackmanharris", n_fft).astype(np.float32)
    spec = scipy.fft.rfft(frames * win, axis=1)
    power = spec.real**2 + spec.imag**2
    # scaled so a bin's mean equals the signal's power density there: Parseval over the window
    power *= 2.0 / (n_fft * float(np.sum(win**2)))
    return Spectra(power=power, freqs_hz=np.fft.rfftfreq(n_fft, 1.0 / sample_rate), hop=hop, n_fft=n_fft)


#: low quantile of a noise bin's power over time, and its bias for exponentially distributed power
NOISE_QUANTILE = 0.1
_QUANTILE_BIAS = -math.log(1.0 - NOISE_QUANTILE)


def snr_db(spectra: Spectra, *, smooth_hz: float = 500.0) -> float:
    """Blind SNR estimate in dB: stationary noise floor against everything above it.

    The noise power density of each bin is the 10th percentile of its power over time,
    unbiased for exponentially distributed (noise) periodogram values, then median-filtered
    across ``smooth_hz`` so that stationary narrow tones do not count as noise. The signal
    is the total power minus that floor. Valid for noise that is stationary over the clip,
    a signal that is absent from each bin at least 10 % of the time or narrower than
    ``smooth_hz / 2``, and clips of at least 1 s; within 3 dB from 0 to 30 dB (tested
    5-25 dB); it saturates above about 40 dB and reads low in non-stationary noise.
    NaN for fewer than 4 frames or digital silence.
    """
    p = spectra.power
    if p.shape[0] < 4 or not p.any():
        return float("nan")  # too short to tell noise from signal, or digital silence
    k = int(NOISE_QUANTILE * (p.shape[0] - 1))
    floor = np.partition(np.ascontiguousarray(p.T), k, axis=1)[:, k] / _QUANTILE_BIAS  # along contiguous rows: 3x faster
    df = float(spectra.freqs_hz[1] - spectra.freqs_hz[0]) if spectra.freqs_hz.size > 1 else 1.0
    width = max(3, int(round(smooth_hz / df)) | 1)
    floor = median_filter(floor, size=width, mode="nearest")
    noise = float(np.sum(floor))
    total = float(np.sum(p.mean(axis=0)))
    signal = total - noise
    if noise <= 0.0:
        return 100.0
    if signal <= noise * 1e-3:
        return -30.0
    return min(100.0, 10.0 * math.log10(signal / noise))


def bandwidth_hz(spectra: Spectra, *, floor_db: float = 60.0) -> float:
    """Highest frequency whose long-term power is within ``floor_db`` of the spectrum's peak.

    8 kHz audio upsampled to 16 kHz reads about 4000; an MP3's low-pass shows as its cutoff.
    NaN for digital silence.
    """
    mean = spectra.power.mean(axis=0)
    top = float(mean.max()) if mean.size else 0.0
    if top <= 0.0:
        return float("nan")  # digital silence has no band
    above = np.flatnonzero(mean >= top * 10.0 ** (-floor_db / 10.0))
    return float(spectra.freqs_hz[above[-1]])
