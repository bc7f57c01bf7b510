"""Integrated loudness after ITU-R BS.1770-4: K-weighting, 400 ms blocks, two gates.

The two K-weighting biquads are designed for any sample rate from their analogue
prototypes (the parametrisation libebur128 uses), which reproduces the coefficient tables
of BS.1770 at 48 kHz to 1e-8 (tests/test_quality_metrics.py checks them).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.signal import sosfilt, sosfreqz

from pipeline.quality import _kernels
from pipeline.quality.spectrum import Spectra

#: returned for a clip with no block above the absolute gate (or shorter than one block)
LOUDNESS_FLOOR_LUFS = -200.0
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
BLOCK_SECONDS = 0.4
STEP_SECONDS = 0.1  # 75 % overlap


def k_weighting(sample_rate: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``((b, a) of the high-shelf pre-filter, (b, a) of the RLB high-pass)`` at ``sample_rate``."""
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sample_rate)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf_b = np.array([(vh + vb * k / q + k * k) / a0, 2.0 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0])
    shelf_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sample_rate)
    a0 = 1.0 + k / q + k * k
    hp_b = np.array([1.0, -2.0, 1.0])
    hp_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    return (shelf_b, shelf_a), (hp_b, hp_a)


def integrated_loudness(y: np.ndarray, sample_rate: int, channel_weights: tuple[float, ...] | None = None) -> float:
    """Gated integrated loudness in LUFS.

    Parameters
    ----------
    y : (n,) or (n, channels) float samples, full scale 1.0.
    sample_rate : Hz.
    channel_weights : BS.1770 weight per channel (1.0 for L, R, C; 1.41 for surrounds);
        default 1.0 each.

    Returns
    -------
    float : LUFS; :data:`LOUDNESS_FLOOR_LUFS` when no 400 ms block passes the absolute gate.
    """
    x = np.asarray(y, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    block = int(round(BLOCK_SECONDS * sample_rate))
    step = int(round(STEP_SECONDS * sample_rate))
    if x.shape[0] < block:
        return LOUDNESS_FLOOR_LUFS
    (sb, sa), (hb, ha) = k_weighting(sample_rate)
    sos = np.array([np.r_[sb, sa], np.r_[hb, ha]])
    w = channel_weights or (1.0,) * x.shape[1]
    starts = np.arange(0, x.shape[0] - block + 1, step)
    power = np.zeros(starts.size)
    for ch in range(x.shape[1]):  # one contiguous channel at a time: filtering along a strided axis is 4x slower
        z = np.square(sosfilt(sos, np.ascontiguousarray(x[:, ch])))
        # mean square of every block from one cumulative sum: O(n), whatever the overlap
        c = np.concatenate([[0.0], np.cumsum(z)])
        power += float(w[ch]) * (c[starts + block] - c[starts]) / block
    with np.errstate(divide="ignore"):
        lk = -0.691 + 10.0 * np.log10(power)
    keep = lk > ABSOLUTE_GATE_LUFS
    if not keep.any():
        return LOUDNESS_FLOOR_LUFS
    relative = -0.691 + 10.0 * math.log10(power[keep].mean()) + RELATIVE_GATE_LU
    keep &= lk > relative
    return float(-0.691 + 10.0 * math.log10(power[keep].mean()))


def spectral_loudness(spectra: Spectra) -> float:
    """:func:`integrated_loudness` of a mono clip from its short-time power spectrum.

    K-weighting is applied as the two biquads' squared magnitude response per bin
    (:func:`k_gain`); a 400 ms block's mean square is the mean of the K-weighted 32 ms
    steps (:data:`pipeline.quality.spectrum.STEP_SECONDS`) whose centres fall in it; the
    gates are those of BS.1770. Far cheaper than filtering the samples, and free of an FFT
    when the features took one. Steady signals read the
    same (the EBU reference tone within 0.1 LU); on bursty speech-like clips of 2-6 s the
    mean difference is under 0.1 LU and single clips differ by a few tenths of a LU, where
    frames stand for the samples at a gated block's edges (tests/test_quality_metrics.py).

    Parameters
    ----------
    spectra : :class:`pipeline.quality.spectrum.Spectra` of the clip.
    """
    sample_rate = spectra.sample_rate
    r = spectra.reduced
    block = int(round(BLOCK_SECONDS * sample_rate))
    step = int(round(STEP_SECONDS * sample_rate))
    if r.k_weighted.size == 0 or spectra.n_samples < block:
        return LOUDNESS_FLOOR_LUFS
    return float(_kernels.gated_loudness(r.k_weighted, spectra.scale / r.stride, float(spectra.first_centre), spectra.hop, r.stride,
                                         spectra.n_samples, block, step, ABSOLUTE_GATE_LUFS, RELATIVE_GATE_LU, LOUDNESS_FLOOR_LUFS))


@lru_cache(maxsize=8)
def k_gain(sample_rate: int, n_bins: int, bin_hz: float) -> np.ndarray:
    """(n_bins,) float32: the K-weighting's squared magnitude response at each bin."""
    (sb, sa), (hb, ha) = k_weighting(sample_rate)
    f = np.arange(n_bins) * bin_hz
    _, h = sosfreqz(np.array([np.r_[sb, sa], np.r_[hb, ha]]), worN=f, fs=sample_rate)
    return (np.abs(h) ** 2).astype(np.float32)
