"""``spectral_rolloff``: lowest bin frequency (Hz) below which ``roll_percent`` of the
magnitude lies, as ``librosa.feature.spectral_rolloff`` (same float32 cumulative sum)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from pipeline.features._base import FeatureParams, FeatureSpec
from pipeline.features.analysis import Analysis, StftParams


class SpectralRolloffParams(FeatureParams):
    """``features.spectral_rolloff``: librosa's ``roll_percent``."""

    roll_percent: float = Field(0.85, gt=0.0, lt=1.0)


def frame_shape(p: SpectralRolloffParams, stft: StftParams, sample_rate: int) -> tuple[int, ...]:
    return (1,)


def compute(ana: Analysis, p: SpectralRolloffParams, state: None) -> np.ndarray:
    mag = ana.magnitude
    first = np.empty(mag.shape[0], dtype=np.intp)
    block = max(1, (1 << 16) // (4 * mag.shape[1]))  # small temporaries, reused by the allocator
    for start in range(0, mag.shape[0], block):
        total = np.cumsum(mag[start : start + block], axis=1)
        threshold = p.roll_percent * total[:, -1:]
        first[start : start + block] = np.argmax(total >= threshold, axis=1)
    return ana.plan.freqs[first].astype(np.float32)[:, None]


SPEC = FeatureSpec(
    name="spectral_rolloff",
    params=SpectralRolloffParams,
    compute=compute,
    frame_shape=frame_shape,
    doc="librosa.feature.spectral_rolloff",
)
