"""``spectral_bandwidth``: order-``p`` spread around the centroid (Hz), as
``librosa.feature.spectral_bandwidth``.

``p == 2`` uses float64 moments (sum S, sum S f, sum S f^2) shared with the centroid; other
orders evaluate ``|f - centroid| ** p`` over every bin.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from pipeline.features._base import FeatureParams, FeatureSpec
from pipeline.features.analysis import Analysis, StftParams
from pipeline.features.spectral_centroid import _TINY32, centroid64, moments


class SpectralBandwidthParams(FeatureParams):
    """``features.spectral_bandwidth``: librosa's ``p`` and ``norm``."""

    p: float = Field(2.0, gt=0.0, description="order of the deviation")
    norm: bool = Field(True, description="normalise each frame's magnitudes to sum 1")


def frame_shape(p: SpectralBandwidthParams, stft: StftParams, sample_rate: int) -> tuple[int, ...]:
    return (1,)


def compute(ana: Analysis, p: SpectralBandwidthParams, state: None) -> np.ndarray:
    s0, s1, s2 = moments(ana)
    c = centroid64(ana)
    weight = np.where(s0 < _TINY32, 1.0, s0) if p.norm else 1.0
    if p.p == 2.0:
        acc = np.maximum(s2 - 2.0 * c * s1 + c * c * s0, 0.0) / weight
    else:
        dev = np.abs(ana.plan.freqs[None, :] - c[:, None]) ** p.p
        acc = np.einsum("tf,tf->t", ana.magnitude, dev) / weight
    return (acc ** (1.0 / p.p)).astype(np.float32)[:, None]


SPEC = FeatureSpec(
    name="spectral_bandwidth",
    params=SpectralBandwidthParams,
    compute=compute,
    frame_shape=frame_shape,
    doc="librosa.feature.spectral_bandwidth",
)
