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

#: the metrics' time step: STFT frames are summed over this long first (the fingerprint's
#: frame; the loudness's resolution, well inside its 100 ms block step)
STEP_SECONDS = 0.032
#: the SNR's noise-floor cells: steps summed over this long, bins over this wide (pooling
#: makes the per-cell quantile cheap and its spread small)
BLOCK_SECONDS = 0.064
BLOCK_HZ = 80.0


def step_frames(sample_rate: int, hop: int) -> int:
    """STFT frames per metric step."""
    return max(1, int(round(STEP_SECONDS * sample_rate / hop)))


@dataclass(frozen=True)
class Reduced:
    """What :func:`pipeline.quality._kernels.spectral_pass` gives (unscaled power)."""

    stride: int
    """STFT frames per step."""
    skip_steps: int
    """Steps left out of ``column_sums`` and ``cells`` at each end: those with frames that
    reach into a centred STFT's padding (a clip cut out of a longer signal starts with a
    step there, which leaks into every bin)."""
    k_weighted: np.ndarray
    """(n_steps,) K-weighted power of each step."""
    bands: np.ndarray
    """(N_BANDS, n_steps) the fingerprint's band energies."""
    column_sums: np.ndarray
    """(n_bins,) power summed over the steps but ``skip_steps`` at each end."""
    cells: np.ndarray
    """(n_blocks, n_cells) power summed over cells of :data:`BLOCK_SECONDS` by :data:`BLOCK_HZ`
    (time-major: the SNR's per-cell quantile runs across cells at once)."""
    block_bins: int


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
    plan : the STFT plan it came from, if any (per-plan constants are then cached on it).
    """

    def __init__(self, power: np.ndarray, scale: float, freqs_hz: np.ndarray, hop: int, n_fft: int, window: np.ndarray, *,
                 first_centre: int, edge_frames: int, n_samples: int, sample_rate: int, plan: StftPlan | None = None):
        self.power, self.scale, self.freqs_hz, self.window = power, float(scale), freqs_hz, window
        self.hop, self.n_fft, self.first_centre, self.edge_frames = int(hop), int(n_fft), int(first_centre), int(edge_frames)
        self.n_samples, self.sample_rate, self.plan = int(n_samples), int(sample_rate), plan

    @classmethod
    def from_analysis(cls, ana: Analysis) -> Spectra:
        """The spectrum of an :class:`Analysis` (computes its STFT when no feature has yet)."""
        return cls.of_plan(ana.spectrum(2.0), ana.plan, ana.y.shape[0])

    @classmethod
    def of_plan(cls, power: np.ndarray, plan: StftPlan, n_samples: int) -> Spectra:
        """``power`` (n_frames, n_bins) of a clip of ``n_samples`` through ``plan``'s STFT."""
        scale, first_centre, edge_frames = _plan_constants(plan)
        return cls(power, scale, plan.freqs, plan.hop_length, plan.n_fft, plan.window,
                   first_centre=first_centre, edge_frames=edge_frames, n_samples=n_samples, sample_rate=plan.sample_rate, plan=plan)

    @property
    def bin_hz(self) -> float:
        return float(self.freqs_hz[1]) if self.freqs_hz.size > 1 else float(self.sample_rate)

    @cached_property
    def reduced(self) -> Reduced:
        return reduce_power(self.power, self.sample_rate, self.hop, self.bin_hz, self.edge_frames)

    @property
    def step_centres(self) -> np.ndarray:
        """(n_steps,) sample of each step's centre."""
        r = self.reduced
        return self.first_centre + self.hop * (np.arange(r.k_weighted.size) * r.stride + (r.stride - 1) / 2.0)

    @property
    def mean_power(self) -> np.ndarray:
        """(n_bins,) float64: each bin's power density averaged over the frames (but the padded ones)."""
        r = self.reduced
        n = (r.k_weighted.size - 2 * r.skip_steps) * r.stride
        if n <= 0:
            return np.zeros(self.power.shape[1])
        return r.column_sums.astype(np.float64) * (self.scale / n)


@lru_cache(maxsize=16)
def pass_constants(sample_rate: int, hop: int, n_bins: int, bin_hz: float) -> tuple:
    """``(stride, block_steps, block_bins, k-weights, band_lo, band_hi)`` of :func:`reduce_power`."""
    from pipeline.quality.fingerprint import band_ranges
    from pipeline.quality.loudness import k_gain

    stride = step_frames(sample_rate, hop)
    block_steps = max(1, int(round(BLOCK_SECONDS / (stride * hop / sample_rate))))
    block_bins = max(1, int(round(BLOCK_HZ / bin_hz)))
    return (stride, block_steps, block_bins, k_gain(sample_rate, n_bins, bin_hz), *band_ranges(n_bins, bin_hz))


def skip_steps(n_frames: int, stride: int, edge_frames: int) -> int:
    """:attr:`Reduced.skip_steps`: steps at each end with frames in a centred STFT's padding
    (none when that would leave 8 steps or fewer)."""
    skip = -(-edge_frames // stride)
    return skip if n_frames // stride > 2 * skip + 8 else 0


def reduce_power(power: np.ndarray, sample_rate: int, hop: int, bin_hz: float, edge_frames: int) -> Reduced:
    """:class:`Reduced` of a (n_frames, n_bins) power spectrum."""
    n_frames, n_bins = power.shape
    stride, block_steps, block_bins, weights, lo, hi = pass_constants(sample_rate, hop, n_bins, bin_hz)
    skip = skip_steps(n_frames, stride, edge_frames)
    power = power if power.flags.c_contiguous else np.ascontiguousarray(power)
    weighted, bands, colsum, cells = _kernels.spectral_pass(power, weights, lo, hi, stride, skip, block_steps, block_bins)
    return Reduced(stride, skip, weighted, bands, colsum, cells, block_bins)


@lru_cache(maxsize=16)
def _plan_constants(plan: StftPlan) -> tuple[float, int, int]:
    """``(scale, first_centre, edge_frames)`` of a plan (plans are per process: cached by identity)."""
    p = plan.params
    scale = 2.0 / (plan.n_fft * float(np.sum(plan.window**2)))
    return scale, 0 if p.center else plan.n_fft // 2, -(-(plan.n_fft // 2) // plan.hop_length) if p.center else 0


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
