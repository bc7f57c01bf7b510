"""The power spectrum the quality metrics read, and its one reduction.

:class:`Spectra` wraps the ``|X|**2`` of the feature set's own STFT
(:class:`pipeline.features.analysis.Analysis`, ``features.stft``): when the features took
an STFT, measuring takes none. :attr:`Spectra.reduced` reads it once (a compiled loop) for
everything the metrics need: the long-term spectrum (bandwidth), the K-weighted power of
each frame (loudness), the fingerprint's band energies, and the time-pooled power of each
bin (the SNR's noise floor).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from pipeline.features.analysis import Analysis, StftParams, StftPlan
from pipeline.quality import _kernels

#: the SNR's time blocks: frames summed over this long (a pooled bin's spread is small,
#: and its quantile over a few hundred blocks cheap)
POOL_SECONDS = 0.04


def pool_frames(sample_rate: int, hop: int) -> int:
    """STFT frames per SNR block."""
    return max(1, int(round(POOL_SECONDS * sample_rate / hop)))


@dataclass(frozen=True)
class Reduced:
    """What :func:`pipeline.quality._kernels.spectral_pass` gives (unscaled power)."""

    column_sums: np.ndarray
    """(n_bins,) power summed over the frames but :attr:`skip` at each end."""
    k_weighted: np.ndarray
    """(n_frames,) K-weighted power of each frame."""
    bands: np.ndarray
    """(n_frames, N_BANDS) the fingerprint's band energies."""
    pooled: np.ndarray
    """(n_bins, n_blocks) power summed over blocks of :func:`pool_frames` frames after :attr:`skip`."""
    skip: int
    """Frames left out at each end: those that reach into a centred STFT's padding (a clip
    cut out of a longer signal starts with a step there, which leaks into every bin)."""


class Spectra:
    """Short-time power spectrum of a clip, as the feature set's STFT gives it.

    Parameters
    ----------
    power : (n_frames, n_bins) float32 ``|X|**2``, unscaled (it may be the feature set's own
        buffer: never written).
    scale : ``power * scale`` is a density: each frame's bins sum to the mean square of its
        windowed samples (a one-sided spectrum, Parseval over the window).
    freqs_hz : (n_bins,) bin frequencies.
    hop, n_fft : samples.
    window : (n_fft,) float64, the STFT's window.
    first_centre : sample of frame 0's centre (0 for a centred STFT).
    edge_frames : frames at each end that reach into the padding of a centred STFT.
    n_samples, sample_rate : the clip's.
    """

    def __init__(self, power: np.ndarray, scale: float, freqs_hz: np.ndarray, hop: int, n_fft: int, window: np.ndarray, *,
                 first_centre: int, edge_frames: int, n_samples: int, sample_rate: int):
        self.power, self.scale, self.freqs_hz, self.window = power, float(scale), freqs_hz, window
        self.hop, self.n_fft, self.first_centre, self.edge_frames = int(hop), int(n_fft), int(first_centre), int(edge_frames)
        self.n_samples, self.sample_rate = int(n_samples), int(sample_rate)

    @classmethod
    def from_analysis(cls, ana: Analysis) -> Spectra:
        """The spectrum of an :class:`Analysis` (computes its STFT when no feature has yet)."""
        plan = ana.plan
        p = plan.params
        return cls(ana.spectrum(2.0), _scale(plan), plan.freqs, plan.hop_length, plan.n_fft, plan.window,
                   first_centre=0 if p.center else plan.n_fft // 2,
                   edge_frames=-(-(plan.n_fft // 2) // plan.hop_length) if p.center else 0,
                   n_samples=ana.y.shape[0], sample_rate=plan.sample_rate)

    @property
    def bin_hz(self) -> float:
        return float(self.freqs_hz[1]) if self.freqs_hz.size > 1 else float(self.sample_rate)

    @cached_property
    def reduced(self) -> Reduced:
        from pipeline.quality.fingerprint import band_ranges
        from pipeline.quality.loudness import k_gain

        n_frames, n_bins = self.power.shape
        lo, hi = band_ranges(n_bins, self.bin_hz)
        skip = self.edge_frames if n_frames > 2 * self.edge_frames + 8 else 0
        power = self.power if self.power.flags.c_contiguous else np.ascontiguousarray(self.power)
        return Reduced(*_kernels.spectral_pass(power, k_gain(self.sample_rate, n_bins, self.bin_hz), lo, hi,
                                               pool_frames(self.sample_rate, self.hop), skip), skip)

    @property
    def mean_power(self) -> np.ndarray:
        """(n_bins,) float64: each bin's power density averaged over the frames (but the padded ones)."""
        r = self.reduced
        n = self.power.shape[0] - 2 * r.skip
        if n <= 0:
            return np.zeros(self.power.shape[1])
        return r.column_sums.astype(np.float64) * (self.scale / n)


@lru_cache(maxsize=16)
def _scale_of(n_fft: int, window: bytes) -> float:
    return 2.0 / (n_fft * float(np.sum(np.frombuffer(window, np.float64) ** 2)))


def _scale(plan: StftPlan) -> float:
    return _scale_of(plan.n_fft, plan.window.tobytes())


@lru_cache(maxsize=8)
def default_plan(sample_rate: int) -> StftPlan:
    """The STFT of ``features.stft`` at its defaults (n_fft 400, hop 160, Hann, centred)."""
    return StftPlan.build(StftParams(), int(sample_rate))


def spectral_frames(y: np.ndarray, sample_rate: int, plan: StftPlan | None = None) -> Spectra:
    """:class:`Spectra` of ``y`` through ``plan`` (default: :func:`default_plan`), with a copy of its own power."""
    x = np.ascontiguousarray(y, dtype=np.float32)
    s = Spectra.from_analysis(Analysis(x, plan or default_plan(sample_rate)))
    s.power = s.power.copy()  # the analysis's buffer is reused by the thread's next clip
    return s
