"""``zero_crossing_rate``: share of sign changes per frame, as
``librosa.feature.zero_crossing_rate(y, frame_length=n_fft, hop_length=hop_length, center=center)``.

librosa pads with ``"edge"`` (whatever the STFT's pad_mode), treats ``|y| <= threshold``
as zero and does not count the first sample of a frame. Here crossings are found once per
sample of ``y`` (edge padding adds none) and counted per frame from a running total: the
counts are exact integers, so the rates equal librosa's.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from pipeline.features._base import FeatureParams, FeatureSpec
from pipeline.features._scratch import scratch
from pipeline.features.analysis import Analysis, StftParams


class ZeroCrossingRateParams(FeatureParams):
    """``features.zero_crossing_rate``: librosa.zero_crossings' ``threshold`` and ``zero_pos``."""

    threshold: float = Field(1e-10, ge=0.0, description="|y| at or below this counts as 0")
    zero_pos: bool = Field(True, description="0 counts as positive (else as its own sign)")


def frame_shape(p: ZeroCrossingRateParams, stft: StftParams, sample_rate: int) -> tuple[int, ...]:
    return (1,)


def compute(ana: Analysis, p: ZeroCrossingRateParams, state: None) -> np.ndarray:
    stft = ana.plan.params
    y = ana.y
    thr = np.asarray(p.threshold, dtype=y.dtype)
    if p.zero_pos:  # signbit after zeroing |y| <= threshold
        side = y < -thr
    else:  # sign after zeroing |y| <= threshold
        side = (y > thr).view(np.int8) - (y < -thr).view(np.int8)
    # total[i] = crossings between samples (0, 1) ... (i - 1, i) of y
    total = scratch("zcr_total", y.shape, np.int32)
    total[0] = 0
    np.cumsum(side[1:] != side[:-1], out=total[1:])
    # Frame t covers (edge-padded) samples s .. s + n_fft - 1, s = t * hop (- n_fft // 2), and
    # counts crossings into samples s + 1 .. s + n_fft - 1. Edge padding repeats y[0] / y[-1]:
    # it adds no crossings, so the window is clipped to y.
    n = ana.plan.n_frames(y.shape[0])
    start = np.arange(n, dtype=np.int64) * stft.hop_length - (stft.n_fft // 2 if stft.center else 0)
    last = np.clip(start + stft.n_fft - 1, 0, y.shape[0] - 1)
    first = np.clip(start, 0, y.shape[0] - 1)
    counts = total[last] - total[first]
    return (counts / stft.n_fft).astype(np.float32)[:, None]


SPEC = FeatureSpec(
    name="zero_crossing_rate",
    params=ZeroCrossingRateParams,
    compute=compute,
    frame_shape=frame_shape,
    doc="librosa.feature.zero_crossing_rate",
)
