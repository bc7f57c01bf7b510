"""``log_mel``: log-mel spectrogram in dB, as ``librosa.power_to_db(librosa.feature.melspectrogram(...))``."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from pipeline.features._base import FeatureSpec
from pipeline.features.analysis import Analysis, StftParams
from pipeline.features.mel import MelBandParams, check_bands, mel_basis_t, mel_power


class LogMelParams(MelBandParams):
    """``features.log_mel``: melspectrogram keys (80 bands by default) plus power_to_db's."""

    n_mels: int = Field(80, ge=1)
    ref: float | Literal["max"] = Field(1.0, description="0 dB reference; 'max' = the clip's peak")
    amin: float = Field(1e-10, gt=0.0)
    top_db: float | None = Field(80.0, ge=0.0, description="floor at (clip max - top_db); null = none")


def power_to_db(
    S: np.ndarray, *, ref: float | str = 1.0, amin: float = 1e-10, top_db: float | None = 80.0
) -> np.ndarray:
    """``librosa.power_to_db`` on a new array (same float32 operations, same result).

    ``top_db`` and ``ref="max"`` use the maximum over the whole clip, as librosa does.
    """
    ref_value = np.max(S) if ref == "max" else abs(float(ref))
    out = np.maximum(amin, S)
    np.log10(out, out=out)
    out *= 10.0
    out -= 10.0 * np.log10(np.maximum(amin, ref_value))
    if top_db is not None and out.size:
        np.maximum(out, out.max() - top_db, out=out)
    return out


def frame_shape(p: LogMelParams, stft: StftParams, sample_rate: int) -> tuple[int, ...]:
    return (p.n_mels,)


def compute(ana: Analysis, p: LogMelParams, basis_t: np.ndarray) -> np.ndarray:
    return power_to_db(mel_power(ana, p, basis_t), ref=p.ref, amin=p.amin, top_db=p.top_db)


SPEC = FeatureSpec(
    name="log_mel",
    params=LogMelParams,
    compute=compute,
    frame_shape=frame_shape,
    prepare=mel_basis_t,
    check=check_bands,
    doc="librosa.power_to_db(librosa.feature.melspectrogram(...))",
)
