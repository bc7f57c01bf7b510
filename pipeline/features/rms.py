"""``rms``: root-mean-square of each frame of ``y``, as
``librosa.feature.rms(y=y, frame_length=n_fft, hop_length=hop_length, center=center, pad_mode=pad_mode)``.

It uses the same padded frames as the STFT (librosa pads rms with ``pad_mode`` too), not
the spectrum, so it equals librosa's time-domain rms.
"""

from __future__ import annotations

import numpy as np

from pipeline.features._base import FeatureParams, FeatureSpec
from pipeline.features.analysis import Analysis, StftParams


class RmsParams(FeatureParams):
    """``features.rms``: no parameters; frame_length is features.stft.n_fft."""


def frame_shape(p: RmsParams, stft: StftParams, sample_rate: int) -> tuple[int, ...]:
    return (1,)


def compute(ana: Analysis, p: RmsParams, state: None) -> np.ndarray:
    x = ana.frames
    power = np.einsum("tn,tn->t", x, x) / np.float32(x.shape[1])
    return np.sqrt(power)[:, None]


SPEC = FeatureSpec(name="rms", params=RmsParams, compute=compute, frame_shape=frame_shape, doc="librosa.feature.rms")
