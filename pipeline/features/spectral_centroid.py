"""``spectral_centroid``: magnitude-weighted mean frequency (Hz), as ``librosa.feature.spectral_centroid``."""

from __future__ import annotations

import numpy as np

from pipeline.features._base import FeatureParams, FeatureSpec
from pipeline.features.analysis import Analysis, StftParams

_TINY32 = np.finfo(np.float32).tiny


class SpectralCentroidParams(FeatureParams):
    """``features.spectral_centroid``: no parameters beyond the shared STFT."""


def moments(ana: Analysis) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 per-frame ``(sum S, sum S*f, sum S*f**2)`` of the magnitude, shared with bandwidth.

    A frame whose magnitudes sum below float32's ``tiny`` keeps weight 1, as
    ``librosa.util.normalize`` leaves such frames unnormalised.
    """

    def make() -> np.ndarray:
        f = ana.plan.freqs
        basis = np.stack([np.ones_like(f), f, f * f], axis=1)
        mag = ana.magnitude
        out = np.empty((mag.shape[0], 3), dtype=np.float64)
        block = max(1, (1 << 16) // (8 * mag.shape[1]))
        for start in range(0, mag.shape[0], block):
            np.dot(mag[start : start + block].astype(np.float64), basis, out=out[start : start + block])
        return out

    m = ana.memo("spectral_moments", make)
    return m[:, 0], m[:, 1], m[:, 2]


def centroid64(ana: Analysis) -> np.ndarray:
    s0, s1, _ = moments(ana)
    return s1 / np.where(s0 < _TINY32, 1.0, s0)


def frame_shape(p: SpectralCentroidParams, stft: StftParams, sample_rate: int) -> tuple[int, ...]:
    return (1,)


def compute(ana: Analysis, p: SpectralCentroidParams, state: None) -> np.ndarray:
    return centroid64(ana).astype(np.float32)[:, None]


SPEC = FeatureSpec(
    name="spectral_centroid",
    params=SpectralCentroidParams,
    compute=compute,
    frame_shape=frame_shape,
    doc="librosa.feature.spectral_centroid",
)
