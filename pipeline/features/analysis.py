"""The shared analysis: one STFT per clip, and the spectrograms every feature derives from it.

:class:`StftParams` is the ``features.stft`` section. :class:`StftPlan` holds what is fixed
per (params, sample_rate) -- the window, the bin frequencies -- and is built once per
process. :class:`Analysis` is per clip: it frames ``y`` once, runs :func:`_stft` once, and
memoises the magnitude, ``|X|**p`` spectrograms and mel spectrograms that features ask for.

Per-clip intermediates live in per-thread reusable buffers (:mod:`._scratch`).

Numerics follow ``librosa.stft`` exactly: frames are windowed with the float64 window, the
real FFT runs in float64 (``scipy.fft``, as librosa) and the result is stored as complex64,
so the STFT is bit-identical to librosa's for float32 input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.errors import ConfigError
from pipeline.features import filters
from pipeline.features._scratch import scratch

PadMode = Literal["constant", "edge", "reflect", "symmetric"]


class StftParams(BaseModel):
    """``features.stft``: the one STFT every feature shares (librosa.stft's names and meaning)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_fft: int = Field(400, ge=2, description="FFT size in samples (also rms/zcr frame_length)")
    hop_length: int = Field(160, ge=1, description="samples between frames")
    win_length: int | None = Field(None, ge=1, description="window length; null = n_fft")
    window: str | tuple[str | float, ...] = Field("hann", description="scipy.signal.get_window spec")
    center: bool = Field(True, description="frame t is centred on sample t*hop_length")
    pad_mode: PadMode = Field("constant", description="edge padding when center is true")

    @field_validator("window")
    @classmethod
    def _window_exists(cls, value: str | tuple[str | float, ...]) -> str | tuple[str | float, ...]:
        try:
            import scipy.signal  # slow import, only when a window is given explicitly

            scipy.signal.get_window(value, 8, fftbins=True)
        except Exception as exc:  # noqa: BLE001 - scipy raises ValueError/TypeError/KeyError
            raise ValueError(f"unknown window {value!r} for scipy.signal.get_window ({exc})") from None
        return value

    @model_validator(mode="after")
    def _win_fits(self) -> StftParams:
        if self.win_length is not None and self.win_length > self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) must not exceed n_fft ({self.n_fft})")
        return self

    def resolved(self) -> dict[str, Any]:
        """JSON-able parameters with ``win_length`` filled in."""
        d = self.model_dump()
        d["win_length"] = self.n_fft if self.win_length is None else self.win_length
        if isinstance(d["window"], tuple):
            d["window"] = list(d["window"])
        return d


def n_frames_for(n_samples: int, *, n_fft: int, hop_length: int, center: bool) -> int:
    """Frames librosa produces for ``n_samples`` samples (stft, rms and zero_crossing_rate alike)."""
    if n_samples < 1:
        raise ValueError(f"a clip needs at least one sample (got {n_samples})")
    if center:
        return 1 + (n_samples + 2 * (n_fft // 2) - n_fft) // hop_length
    if n_samples < n_fft:
        raise ConfigError(
            f"a clip of {n_samples} samples is shorter than features.stft.n_fft={n_fft}; with "
            "features.stft.center: false every clip needs at least n_fft samples: set "
            "center: true, lower n_fft, or drop shorter clips (audio.min_seconds)"
        )
    return 1 + (n_samples - n_fft) // hop_length


@dataclass(frozen=True, eq=False)
class StftPlan:
    """Per-process constants of the shared STFT at one sample rate."""

    params: StftParams
    sample_rate: int
    window: np.ndarray = field(repr=False)
    """float64 [shape=(n_fft,)], librosa.filters.get_window centred-padded to n_fft."""
    freqs: np.ndarray = field(repr=False)
    """float64 [shape=(n_bins,)], librosa.fft_frequencies."""

    @classmethod
    def build(cls, params: StftParams, sample_rate: int) -> StftPlan:
        win_length = params.n_fft if params.win_length is None else params.win_length
        window = filters.get_window(params.window, win_length, fftbins=True)
        window = filters.pad_center(np.asarray(window, dtype=np.float64), size=params.n_fft)
        freqs = filters.fft_frequencies(sr=sample_rate, n_fft=params.n_fft)
        window.setflags(write=False)
        freqs.setflags(write=False)
        return cls(params, int(sample_rate), window, freqs)

    @property
    def n_fft(self) -> int:
        return self.params.n_fft

    @property
    def hop_length(self) -> int:
        return self.params.hop_length

    @property
    def n_bins(self) -> int:
        return 1 + self.params.n_fft // 2

    def n_frames(self, n_samples: int) -> int:
        p = self.params
        return n_frames_for(n_samples, n_fft=p.n_fft, hop_length=p.hop_length, center=p.center)


def frame(y: np.ndarray, *, n_fft: int, hop_length: int, center: bool, pad_mode: str) -> np.ndarray:
    """Time-major frames of ``y``, a read-only strided view [shape=(n_frames, n_fft)].

    With ``center`` the signal is padded by ``n_fft // 2`` on both sides with ``pad_mode``
    (as ``librosa.stft``, ``librosa.feature.rms`` and, with ``"edge"``, ``zero_crossing_rate``).
    """
    if center:
        pad = n_fft // 2
        if pad_mode == "constant":
            padded = scratch("padded", (y.shape[0] + 2 * pad,), y.dtype)
            padded[:pad] = 0
            padded[pad : pad + y.shape[0]] = y
            padded[pad + y.shape[0] :] = 0
            y = padded
        else:
            y = np.pad(y, pad, mode=pad_mode)
    n = 1 + (y.shape[0] - n_fft) // hop_length
    return np.lib.stride_tricks.as_strided(
        y, shape=(n, n_fft), strides=(y.strides[0] * hop_length, y.strides[0]), writeable=False
    )


#: Frames per FFT block, as bytes of float64 windowed frames: small temporaries are reused
#: by the allocator instead of being page-faulted in for every clip.
STFT_BLOCK_BYTES = 1 << 18


def _stft(
    frames: np.ndarray, window: np.ndarray, *, magnitude: bool = False, out: np.ndarray | None = None
) -> np.ndarray:
    """The STFT of time-major frames [shape=(n_frames, 1 + n_fft // 2)].

    The one place an FFT of the signal is taken (tests count calls to it). As librosa:
    float32 frames times the float64 window, float64 real FFT, rounded to complex64.
    With ``magnitude=True`` returns ``np.abs`` of that (float32) block by block, without
    keeping the complex matrix. ``out``: where to write (else a new array).
    """
    import scipy.fft  # here, not at import: the flow's process validates catalogs without it

    n_frames, n_fft = frames.shape
    if out is None:
        out = np.empty((n_frames, 1 + n_fft // 2), dtype=np.float32 if magnitude else np.complex64)
    block = max(1, STFT_BLOCK_BYTES // (8 * n_fft))
    spec = np.empty((min(block, n_frames), 1 + n_fft // 2), dtype=np.complex64)
    for start in range(0, n_frames, block):
        stop = min(start + block, n_frames)
        if magnitude:
            part = spec[: stop - start]
            part[...] = scipy.fft.rfft(frames[start:stop] * window, axis=-1, overwrite_x=True)
            np.abs(part, out=out[start:stop])
        else:
            out[start:stop] = scipy.fft.rfft(frames[start:stop] * window, axis=-1, overwrite_x=True)
    return out


class Analysis:
    """Everything derived from one clip, computed on first use and kept for the next feature.

    Parameters
    ----------
    y : np.ndarray [shape=(n_samples,), dtype=float32]
        Mono audio at ``plan.sample_rate``.
    plan : StftPlan
    """

    def __init__(self, y: np.ndarray, plan: StftPlan):
        self.y = y
        self.plan = plan
        self._spectra: dict[float, np.ndarray] = {}
        self._memo: dict[Any, np.ndarray] = {}

    @cached_property
    def frames(self) -> np.ndarray:
        """Padded signal frames (pad_mode of features.stft) [shape=(n_frames, n_fft)]."""
        p = self.plan.params
        return frame(self.y, n_fft=p.n_fft, hop_length=p.hop_length, center=p.center, pad_mode=p.pad_mode)

    @cached_property
    def stft(self) -> np.ndarray:
        """complex64 [shape=(n_frames, n_bins)], equal to ``librosa.stft(y, ...).T``.

        Only features that need the phase should ask: then the magnitude derives from it.
        """
        return _stft(self.frames, self.plan.window)

    @cached_property
    def magnitude(self) -> np.ndarray:
        """float32 ``|X|`` [shape=(n_frames, n_bins)], equal to ``np.abs(librosa.stft(...)).T``."""
        if "stft" in self.__dict__:
            return np.abs(self.stft)
        out = scratch("magnitude", (self.frames.shape[0], self.plan.n_bins), np.float32)
        return _stft(self.frames, self.plan.window, magnitude=True, out=out)

    def spectrum(self, power: float) -> np.ndarray:
        """float32 ``|X| ** power`` [shape=(n_frames, n_bins)] (librosa's ``_spectrogram``)."""
        if power == 1.0:
            return self.magnitude
        out = self._spectra.get(power)
        if out is None:
            mag = self.magnitude
            out = self._spectra[power] = np.power(mag, power, out=scratch(f"spectrum_{power!r}", mag.shape, mag.dtype))
        return out

    def memo(self, key: Any, make: Callable[[], np.ndarray]) -> np.ndarray:
        """Return ``make()``, computed once per clip for each ``key`` (shared intermediates)."""
        out = self._memo.get(key)
        if out is None:
            out = self._memo[key] = make()
        return out
