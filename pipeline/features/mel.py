"""``mel``: mel power spectrogram, as ``librosa.feature.melspectrogram``.

Also home of the mel filterbank helpers that ``log_mel`` and ``mfcc`` reuse: each feature
keeps its own mel settings, and two features with the same settings share one product.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from pipeline.features import filters
from pipeline.features._base import FeatureParams, FeatureSpec
from pipeline.features.analysis import Analysis, StftParams

MelNorm = Literal["slaney"] | float | None


class MelBandParams(FeatureParams):
    """The mel filterbank and spectrogram exponent (librosa.filters.mel + melspectrogram)."""

    n_mels: int = Field(128, ge=1)
    fmin: float = Field(0.0, ge=0.0, description="lowest band edge, Hz")
    fmax: float | None = Field(None, gt=0.0, description="highest band edge, Hz; null = sample_rate / 2")
    power: float = Field(2.0, gt=0.0, description="exponent of |STFT| before the filterbank")
    htk: bool = False
    norm: MelNorm = "slaney"

    @model_validator(mode="after")
    def _band_order(self) -> MelBandParams:
        if self.fmax is not None and self.fmin >= self.fmax:
            raise ValueError(f"fmin ({self.fmin:g}) must be below fmax ({self.fmax:g})")
        return self


class MelParams(MelBandParams):
    """``features.mel``: same keys and defaults as librosa.feature.melspectrogram."""


def band_key(p: MelBandParams, sample_rate: int) -> tuple:
    """What identifies one mel product (filterbank + exponent) within a clip."""
    return ("mel", p.n_mels, p.fmin, resolved_fmax(p, sample_rate), p.power, p.htk, p.norm)


def resolved_fmax(p: MelBandParams, sample_rate: int) -> float:
    return float(sample_rate) / 2 if p.fmax is None else float(p.fmax)


def check_bands(p: MelBandParams, stft: StftParams, sample_rate: int) -> list[str]:
    problems = []
    nyquist = sample_rate / 2
    if p.fmax is not None and p.fmax > nyquist:
        problems.append(f"fmax: {p.fmax:g} Hz is above the Nyquist frequency ({nyquist:g} Hz at {sample_rate} Hz)")
    if p.fmin >= resolved_fmax(p, sample_rate):
        problems.append(f"fmin: {p.fmin:g} Hz must be below fmax ({resolved_fmax(p, sample_rate):g} Hz)")
    return problems


def mel_basis_t(p: MelBandParams, stft: StftParams, sample_rate: int) -> np.ndarray:
    """float32 filterbank, transposed for time-major products [shape=(n_bins, n_mels)]."""
    basis = filters.mel(sr=sample_rate, n_fft=stft.n_fft, n_mels=p.n_mels, fmin=p.fmin, fmax=p.fmax, htk=p.htk, norm=p.norm)
    out = np.ascontiguousarray(basis.T, dtype=np.float32)
    out.setflags(write=False)
    return out


def mel_power(ana: Analysis, p: MelBandParams, basis_t: np.ndarray) -> np.ndarray:
    """float32 mel spectrogram [shape=(n_frames, n_mels)], shared between features."""
    key = band_key(p, ana.plan.sample_rate)
    return ana.memo(key, lambda: np.dot(ana.spectrum(p.power), basis_t))


def frame_shape(p: MelParams, stft: StftParams, sample_rate: int) -> tuple[int, ...]:
    return (p.n_mels,)


def compute(ana: Analysis, p: MelParams, basis_t: np.ndarray) -> np.ndarray:
    return mel_power(ana, p, basis_t)


SPEC = FeatureSpec(
    name="mel",
    params=MelParams,
    compute=compute,
    frame_shape=frame_shape,
    prepare=mel_basis_t,
    check=check_bands,
    doc="librosa.feature.melspectrogram",
)
