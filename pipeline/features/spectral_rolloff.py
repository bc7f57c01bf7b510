"""``spectral_rolloff``: lowest bin frequency (Hz) below which ``roll_percent`` of the
magnitude lies, as ``librosa.feature.spectral_rolloff``: the same float32 running sums,
taken bin by bin in a compiled loop (numpy's cumsum was the slowest step of the seed set)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from pipeline.features._base import FeatureParams, FeatureSpec
from pipeline.features._scratch import scratch
from pipeline.features.analysis import Analysis, StftParams


class SpectralRolloffParams(FeatureParams):
    """``features.spectral_rolloff``: librosa's ``roll_percent``."""

    roll_percent: float = Field(0.85, gt=0.0, lt=1.0)


def frame_shape(p: SpectralRolloffParams, stft: StftParams, sample_rate: int) -> tuple[int, ...]:
    return (1,)


def compute(ana: Analysis, p: SpectralRolloffParams, state: None) -> np.ndarray:
    mag = ana.magnitude
    mag_ft = scratch("magnitude_T", mag.shape[::-1], mag.dtype)
    mag_ft[...] = mag.T
    from pipeline.features._kernels import rolloff_bins  # numba: loaded where features are computed

    first = rolloff_bins(mag_ft, p.roll_percent)
    return ana.plan.freqs[first].astype(np.float32)[:, None]


SPEC = FeatureSpec(
    name="spectral_rolloff",
    params=SpectralRolloffParams,
    compute=compute,
    frame_shape=frame_shape,
    doc="librosa.feature.spectral_rolloff",
)
