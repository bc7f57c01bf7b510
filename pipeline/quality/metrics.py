"""Per-example quality metrics: pure functions on a mono float waveform (full scale 1.0)
and on the short-time power spectrum the features already computed.

The level metrics read the samples once (:func:`sample_summary`, a compiled loop). The SNR,
the bandwidth, the loudness and the near-duplicate fingerprint read :class:`Spectra`: the
``|X|**2`` of the feature set's own STFT (:class:`pipeline.features.analysis.Analysis`,
``features.stft``), so measuring takes no FFT of its own when the features took one
(bench_quality).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pipeline.features.analysis import StftPlan
from pipeline.quality import _kernels
from pipeline.quality.spectrum import BLOCK_SECONDS, Spectra, default_plan, reduce_power, spectral_frames  # noqa: F401 - re-exported

#: level of digital silence; keeps every column finite (JSON manifests, rules, Parquet)
LEVEL_FLOOR_DB = -200.0
#: 1 LSB of 16-bit PCM: a sample this close to full scale counts as clipped
LSB = 2.0**-15


def power_db(power: float) -> float:
    """``10 log10(power)``, :data:`LEVEL_FLOOR_DB` at digital silence."""
    return 10.0 * math.log10(power) if power > 10.0 ** (LEVEL_FLOOR_DB / 10.0) else LEVEL_FLOOR_DB


def _samples(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    return y if y.dtype in (np.float32, np.float64) and y.flags.c_contiguous else np.ascontiguousarray(y, dtype=np.float64)


def peak_abs(y: np.ndarray) -> float:
    """Largest absolute sample (0.0 for no samples)."""
    if not y.size:
        return 0.0
    if y.dtype == np.float32 and y.flags.c_contiguous:
        return float(np.uint32(_kernels.abs_peak(y.view(np.uint32))).view(np.float32))
    return max(float(np.max(y)), -float(np.min(y)))


def peak_dbfs(y: np.ndarray) -> float:
    """Largest absolute sample, in dB relative to full scale."""
    return power_db(peak_abs(y) ** 2)


def rms_dbfs(y: np.ndarray) -> float:
    """Root-mean-square level in dBFS (a full-scale sine reads -3.01)."""
    return sample_levels(y, max(1, y.shape[0])).rms_dbfs


def dc_offset(y: np.ndarray) -> float:
    """Mean sample value (full scale 1.0)."""
    return sample_levels(y, max(1, y.shape[0])).dc_offset


def clipping_fraction(y: np.ndarray, lsb: float = LSB, *, peak: float | None = None) -> float:
    """Share of samples within ``lsb`` of full scale that are in runs of 2 or more.

    A single sample at full scale is a legal peak; two in a row at the rail are clipping.
    Compute it on the decoded audio, before resampling (which rings around the rail).
    ``peak``: ``max |y|`` when known (a clip that never reaches the rail is not scanned again).
    """
    n = y.shape[0]
    if n < 2:
        return 0.0
    rail = 1.0 - 2.0 * lsb  # int16's positive rail is 1 - lsb
    x = _samples(y)
    if (peak if peak is not None else peak_abs(x)) < rail:
        return 0.0
    return float(_kernels.clipped_in_runs(x, rail)) / n


@dataclass(frozen=True)
class Levels:
    """What one read of the samples gives: ``frame_dbfs`` (n_frames,) per non-overlapping frame."""

    dc_offset: float
    rms_dbfs: float
    frame_dbfs: np.ndarray


def sample_levels(y: np.ndarray, frame: int) -> Levels:
    """Mean, RMS and the RMS level of each ``frame``-sample frame (the last partial one too)."""
    n = y.shape[0]
    if n == 0:
        return Levels(0.0, LEVEL_FLOOR_DB, np.zeros(0))
    total, sq = _kernels.frame_energies(np.ascontiguousarray(y, dtype=np.float32), int(frame))
    counts = np.full(sq.size, float(frame))
    counts[-1] = n - (sq.size - 1) * frame
    with np.errstate(divide="ignore"):
        levels = np.maximum(10.0 * np.log10(sq / counts), LEVEL_FLOOR_DB)
    return Levels(total / n, power_db(float(sq.sum()) / n), levels)


def frame_levels_dbfs(y: np.ndarray, frame: int) -> np.ndarray:
    """RMS level of each non-overlapping ``frame``-sample frame (the last partial one too), shape (n_frames,)."""
    return sample_levels(y, frame).frame_dbfs


def vad_frame(sample_rate: int, frame_seconds: float) -> int:
    return max(1, int(round(frame_seconds * sample_rate)))


def activity_from_levels(levels: np.ndarray, *, speech_dbfs: float, silence_dbfs: float) -> tuple[float, float]:
    if not levels.size:
        return 0.0, 1.0
    return float(np.count_nonzero(levels > speech_dbfs)) / levels.size, float(np.count_nonzero(levels < silence_dbfs)) / levels.size


def activity_fractions(y: np.ndarray, sample_rate: int, *, frame_seconds: float, speech_dbfs: float, silence_dbfs: float) -> tuple[float, float]:
    """``(speech_fraction, silence_fraction)``: frames above ``speech_dbfs`` / below ``silence_dbfs``."""
    s = sample_summary(y, vad_frame(sample_rate, frame_seconds), speech_dbfs=speech_dbfs, silence_dbfs=silence_dbfs)
    return s.speech_fraction, s.silence_fraction


@dataclass(frozen=True)
class SampleSummary:
    """Every level metric of a clip from one read of its samples (:func:`sample_summary`)."""

    dc_offset: float
    rms_dbfs: float
    peak: float
    """``max |y|``."""
    speech_fraction: float
    silence_fraction: float


def sample_summary(y: np.ndarray, frame: int, *, speech_dbfs: float, silence_dbfs: float) -> SampleSummary:
    """DC offset, RMS, peak and the VAD's fractions of ``frame``-sample frames (the last
    partial one too) above ``speech_dbfs`` / below ``silence_dbfs``, in one compiled read."""
    n = y.shape[0]
    if n == 0:
        return SampleSummary(0.0, LEVEL_FLOOR_DB, 0.0, 0.0, 1.0)
    x, frame, speech_power, silence_power = summary_args(y, frame, speech_dbfs, silence_dbfs)
    total, squares, speech, silence, frames, peak = _kernels.sample_summary(x, x.view(np.uint32), frame, speech_power, silence_power)
    return summary_of(y, x, (total, squares, speech, silence, frames, peak))


def summary_args(y: np.ndarray, frame: int, speech_dbfs: float, silence_dbfs: float) -> tuple[np.ndarray, int, float, float]:
    """``(float32 samples, frame, speech power, silence power)`` for :func:`pipeline.quality._kernels.sample_summary`."""
    x = y if y.dtype == np.float32 and y.flags.c_contiguous else np.ascontiguousarray(y, dtype=np.float32)
    # levels compared as mean squares: a frame's level is max(10 log10(ms), LEVEL_FLOOR_DB)
    speech_power = 10.0 ** (speech_dbfs / 10.0) if speech_dbfs >= LEVEL_FLOOR_DB else -1.0
    silence_power = 10.0 ** (silence_dbfs / 10.0) if silence_dbfs > LEVEL_FLOOR_DB else -1.0
    return x, int(frame), speech_power, silence_power


def summary_of(y: np.ndarray, x: np.ndarray, sums: tuple) -> SampleSummary:
    """:class:`SampleSummary` of ``y`` from the kernel's sums over ``x`` (its float32 samples)."""
    total, squares, speech, silence, frames, peak = sums
    n = y.shape[0]
    if x is not y and y.dtype != np.float32:
        peak = peak_abs(y)  # the peak of the samples as given, not of their float32 copy
    return SampleSummary(total / n, power_db(squares / n), peak, speech / frames, silence / frames)


#: the SNR's noise floor: this low quantile over time of a cell's power
#: (:data:`pipeline.quality.spectrum.BLOCK_SECONDS` by ``BLOCK_HZ``)
NOISE_QUANTILE = 0.1
_CALIBRATION_BLOCKS = 400


@lru_cache(maxsize=16)
def _floor_bias(n_fft: int, hop: int, window: bytes, sample_rate: int) -> float:
    """E[quantile] / E[mean] of a cell's power for white noise through this STFT and this
    pooling: calibrated once per process on a fixed noise, so it holds for any window and hop."""
    import scipy.fft

    win = np.frombuffer(window, dtype=np.float64)
    steps_per_block = -(-int(round(BLOCK_SECONDS * sample_rate)) // hop) + 2
    n = _CALIBRATION_BLOCKS * steps_per_block * hop * 4 + n_fft
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    p = (np.abs(scipy.fft.rfft(frames * win, axis=1)) ** 2).astype(np.float32)
    cells = reduce_power(p, sample_rate, hop, sample_rate / n_fft, 0).cells[:, 1:]  # DC is real: another distribution
    k = int(NOISE_QUANTILE * (cells.shape[0] - 1))
    return float(np.mean(np.partition(cells, k, axis=0)[k]) / np.mean(cells))


@lru_cache(maxsize=16)
def _plan_bias(plan: StftPlan) -> float:
    return _floor_bias(plan.n_fft, plan.hop_length, plan.window.tobytes(), plan.sample_rate)


def bias_of(spectra: Spectra) -> float:
    """The SNR floor's calibrated bias for this spectrum's STFT (cached per plan)."""
    if spectra.plan is not None:
        return _plan_bias(spectra.plan)
    return _floor_bias(spectra.n_fft, spectra.hop, spectra.window.tobytes(), spectra.sample_rate)


def snr_db(spectra: Spectra, *, smooth_hz: float = 1000.0) -> float:
    """Blind SNR estimate in dB: stationary noise floor against everything above it.

    The noise power of each cell of :data:`~pipeline.quality.spectrum.BLOCK_HZ` is the 10th
    percentile over time of its power summed over blocks of
    :data:`~pipeline.quality.spectrum.BLOCK_SECONDS`, unbiased by a factor calibrated on
    white noise through the same STFT, then median-filtered across ``smooth_hz`` so that
    stationary narrow tones do not count as noise. The signal is the total power minus that
    floor. Valid for noise that is stationary over the clip, a signal that is absent from
    each cell for at least 10 % of the blocks or narrower than ``smooth_hz / 2``, and clips
    of at least 1 s. On a tone in white noise (n_fft 400, Hann) it reads within 0.2 dB from
    5 to 30 dB (tested within 3 dB over 5-25 dB) and about 1 dB low at 40 dB; it saturates
    above that (window leakage) and reads high in non-stationary noise. NaN for fewer than
    4 blocks or digital silence.
    """
    r = spectra.reduced
    cells = r.cells
    if cells.shape[0] < 4:
        return float("nan")  # too short to tell noise from signal
    total, floor = _kernels.snr_terms(cells, int(NOISE_QUANTILE * (cells.shape[0] - 1)), snr_width(spectra.bin_hz, r.block_bins, smooth_hz))
    return snr_from_terms(total, floor, cells.shape[0], bias_of(spectra))


def snr_width(bin_hz: float, block_bins: int, smooth_hz: float = 1000.0) -> int:
    """Cells the SNR's noise floor is median-filtered over (odd, at least 3)."""
    return max(3, int(round(smooth_hz / (bin_hz * block_bins))) | 1)


def snr_from_terms(total: float, floor: float, n_blocks: int, bias: float) -> float:
    """:func:`snr_db` from the sums :func:`pipeline.quality._kernels.snr_terms` gives."""
    if n_blocks < 4:
        return float("nan")  # too short to tell noise from signal
    total /= n_blocks
    if total <= 0.0:
        return float("nan")  # digital silence
    noise = floor / bias
    signal = total - noise
    if noise <= 0.0:
        return 100.0
    if signal <= noise * 1e-3:
        return -30.0
    return min(100.0, 10.0 * math.log10(signal / noise))


#: walking down from the last bin above the floor, a level rising faster than this per bin
#: is the window's leakage past a band edge, not content (a Hann window's tail past a
#: brick-wall edge falls 4-30 dB per bin; natural spectra fall under 1 dB per bin)
LEAKAGE_DB_PER_BIN = 3.0


def bandwidth_hz(spectra: Spectra, *, floor_db: float = 60.0) -> float:
    """Highest frequency whose long-term power is within ``floor_db`` of the spectrum's peak,
    less the window's leakage past a band edge (:data:`LEAKAGE_DB_PER_BIN`).

    8 kHz audio upsampled to 16 kHz reads about 4000; an MP3's low-pass shows as its cutoff.
    Resolution: one bin of the STFT (40 Hz at n_fft 400, 16 kHz). NaN for digital silence.
    The long-term power is read from the column sums of :attr:`Spectra.reduced` (a constant
    factor from :attr:`Spectra.mean_power`, which changes no comparison).
    """
    r = spectra.reduced
    if r.k_weighted.size - 2 * r.skip_steps <= 0:
        return float("nan")
    b = _kernels.bandwidth_bin(r.column_sums, 10.0 ** (-floor_db / 10.0), 10.0 ** (LEAKAGE_DB_PER_BIN / 10.0))
    return float(spectra.freqs_hz[b]) if b >= 0 else float("nan")  # -1: digital silence has no band
