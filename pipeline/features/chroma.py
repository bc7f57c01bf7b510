"""``chroma``: chromagram from the power spectrogram, as ``librosa.feature.chroma_stft``.

``tuning`` defaults to 0.0 (A440) so the filterbank is built once per process; librosa's
own default estimates the tuning of every clip (``tuning: estimate`` here), which costs a
pitch track per clip and a filterbank per distinct estimate.
"""

from __future__ import annotations

import functools
import math
from typing import Annotated, Literal

import librosa
import numpy as np
from pydantic import Field

from pipeline.features._base import FeatureParams, FeatureSpec
from pipeline.features.analysis import Analysis, StftParams

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


class ChromaParams(FeatureParams):
    """``features.chroma``: librosa.feature.chroma_stft's keys (filters.chroma's ctroct/octwidth/base_c)."""

    n_chroma: int = Field(12, ge=1)
    tuning: Annotated[float, Field(ge=-0.5, lt=0.5)] | Literal["estimate"] = Field(
        0.0, description="deviation from A440 in fractions of a chroma bin, or 'estimate' (per clip)"
    )
    norm: float | None = Field(math.inf, description="per-frame normalisation order (util.normalize); null = none")
    ctroct: float = 5.0
    octwidth: float | None = Field(2.0, gt=0.0)
    base_c: bool = True


@functools.lru_cache(maxsize=128)
def _filterbank_t(
    sample_rate: int, n_fft: int, n_chroma: int, tuning: float, ctroct: float, octwidth: float | None, base_c: bool
) -> np.ndarray:
    fb = librosa.filters.chroma(
        sr=sample_rate, n_fft=n_fft, n_chroma=n_chroma, tuning=tuning, ctroct=ctroct, octwidth=octwidth, base_c=base_c
    )
    out = np.ascontiguousarray(fb.T, dtype=np.float32)
    out.setflags(write=False)
    return out


def prepare(p: ChromaParams, stft: StftParams, sample_rate: int) -> np.ndarray | None:
    if p.tuning == "estimate":
        return None
    return _filterbank_t(sample_rate, stft.n_fft, p.n_chroma, float(p.tuning), p.ctroct, p.octwidth, p.base_c)


def frame_shape(p: ChromaParams, stft: StftParams, sample_rate: int) -> tuple[int, ...]:
    return (p.n_chroma,)


def labels(p: ChromaParams, stft: StftParams, sample_rate: int) -> list[str]:
    if p.n_chroma != 12:
        return [f"{i:02d}" for i in range(p.n_chroma)]
    return list(PITCH_CLASSES if p.base_c else PITCH_CLASSES[9:] + PITCH_CLASSES[:9])


def compute(ana: Analysis, p: ChromaParams, fb_t: np.ndarray | None) -> np.ndarray:
    power = ana.spectrum(2.0)
    if fb_t is None:
        tuning = librosa.estimate_tuning(S=power.T, sr=ana.plan.sample_rate, bins_per_octave=p.n_chroma)
        plan = ana.plan
        fb_t = _filterbank_t(plan.sample_rate, plan.n_fft, p.n_chroma, float(tuning), p.ctroct, p.octwidth, p.base_c)
    raw = np.dot(power, fb_t)
    if p.norm is None:
        return raw
    return librosa.util.normalize(raw, norm=p.norm, axis=1)


SPEC = FeatureSpec(
    name="chroma",
    params=ChromaParams,
    compute=compute,
    frame_shape=frame_shape,
    prepare=prepare,
    labels=labels,
    doc="librosa.feature.chroma_stft",
)
