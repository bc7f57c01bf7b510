"""``spectral_contrast``: per-octave-band peak/valley contrast (dB unless ``linear``),
computed by ``librosa.feature.spectral_contrast`` on the shared magnitude spectrogram."""

from __future__ import annotations

import librosa
import numpy as np
from pydantic import Field

from pipeline.features._base import FeatureParams, FeatureSpec
from pipeline.features.analysis import Analysis, StftParams


class SpectralContrastParams(FeatureParams):
    """``features.spectral_contrast``: librosa's ``fmin``, ``n_bands``, ``quantile``, ``linear``."""

    fmin: float = Field(200.0, gt=0.0, description="upper edge of the lowest band, Hz")
    n_bands: int = Field(6, ge=1)
    quantile: float = Field(0.02, gt=0.0, lt=1.0)
    linear: bool = False


def check(p: SpectralContrastParams, stft: StftParams, sample_rate: int) -> list[str]:
    top = p.fmin * 2.0 ** (p.n_bands - 1)
    if top >= sample_rate / 2:
        return [
            f"n_bands: fmin * 2**(n_bands-1) = {top:g} Hz reaches the Nyquist frequency "
            f"{sample_rate / 2:g} Hz; lower fmin or n_bands"
        ]
    freq = librosa.fft_frequencies(sr=sample_rate, n_fft=stft.n_fft)
    edges = [0.0] + [p.fmin * 2.0**k for k in range(p.n_bands + 1)]
    for k, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        if not np.any((freq >= low) & (freq <= high)):
            return [
                f"fmin: band {k} ({low:g}-{high:g} Hz) holds no FFT bin at features.stft.n_fft="
                f"{stft.n_fft}; raise fmin or n_fft"
            ]
    return []


def frame_shape(p: SpectralContrastParams, stft: StftParams, sample_rate: int) -> tuple[int, ...]:
    return (p.n_bands + 1,)


def compute(ana: Analysis, p: SpectralContrastParams, state: None) -> np.ndarray:
    out = librosa.feature.spectral_contrast(
        S=ana.magnitude.T,
        sr=ana.plan.sample_rate,
        n_fft=ana.plan.n_fft,
        fmin=p.fmin,
        n_bands=p.n_bands,
        quantile=p.quantile,
        linear=p.linear,
    )
    return np.ascontiguousarray(out.T, dtype=np.float32)


SPEC = FeatureSpec(
    name="spectral_contrast",
    params=SpectralContrastParams,
    compute=compute,
    frame_shape=frame_shape,
    check=check,
    doc="librosa.feature.spectral_contrast",
)
