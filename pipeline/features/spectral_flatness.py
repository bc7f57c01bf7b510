"""``spectral_flatness``: geometric over arithmetic mean of ``max(amin, |X| ** power)``, as
``librosa.feature.spectral_flatness`` (the log-mean is accumulated in float64)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from pipeline.features._base import FeatureParams, FeatureSpec
from pipeline.features.analysis import Analysis, StftParams


class SpectralFlatnessParams(FeatureParams):
    """``features.spectral_flatness``: librosa's ``amin`` and ``power``."""

    amin: float = Field(1e-10, gt=0.0)
    power: float = Field(2.0, gt=0.0)


def frame_shape(p: SpectralFlatnessParams, stft: StftParams, sample_rate: int) -> tuple[int, ...]:
    return (1,)


def compute(ana: Analysis, p: SpectralFlatnessParams, state: None) -> np.ndarray:
    s = np.maximum(p.amin, ana.spectrum(p.power))
    gmean = np.exp(np.log(s).mean(axis=1, dtype=np.float64))
    amean = s.mean(axis=1, dtype=np.float64)
    return (gmean / amean).astype(np.float32)[:, None]


SPEC = FeatureSpec(
    name="spectral_flatness",
    params=SpectralFlatnessParams,
    compute=compute,
    frame_shape=frame_shape,
    doc="librosa.feature.spectral_flatness",
)
