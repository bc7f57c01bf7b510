"""``spectrogram``: the STFT magnitude raised to ``power`` (1 = magnitude, 2 = power), as
``numpy.abs(librosa.stft(y, ...)) ** power``."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from pipeline.features._base import FeatureParams, FeatureSpec
from pipeline.features.analysis import Analysis, StftParams


class SpectrogramParams(FeatureParams):
    """``features.spectrogram``: the exponent applied to ``|STFT|``."""

    power: float = Field(2.0, gt=0.0)


def frame_shape(p: SpectrogramParams, stft: StftParams, sample_rate: int) -> tuple[int, ...]:
    return (1 + stft.n_fft // 2,)


def compute(ana: Analysis, p: SpectrogramParams, state: None) -> np.ndarray:
    return ana.spectrum(p.power)


SPEC = FeatureSpec(
    name="spectrogram",
    params=SpectrogramParams,
    compute=compute,
    frame_shape=frame_shape,
    doc="numpy.abs(librosa.stft(...)) ** power",
)
