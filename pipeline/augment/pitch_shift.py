"""pitch_shift: change the pitch without changing the duration (phase vocoder + soxr)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import soxr
from pydantic import ValidationInfo, field_validator

from pipeline.augment import _stft
from pipeline.augment._params import StepParams, check_order, uniform


class PitchShiftParams(StepParams):
    """Shift drawn uniformly from [min_semitones, max_semitones] (12 semitones = one octave)."""

    name: Literal["pitch_shift"] = "pitch_shift"
    min_semitones: float = -2.0
    max_semitones: float = 2.0

    @field_validator("max_semitones")
    @classmethod
    def _order(cls, v: float, info: ValidationInfo) -> float:
        check_order(info, "min_semitones", v, "max_semitones")
        return v


def _fix_length(y: np.ndarray, n: int) -> np.ndarray:
    if len(y) >= n:
        return np.ascontiguousarray(y[:n])
    return np.pad(y, (0, n - len(y)))


def pitch_shift(y: np.ndarray, sample_rate: int, semitones: float, n_fft: int = _stft.N_FFT) -> np.ndarray:
    """Shift the pitch of mono float32 ``y`` by ``semitones``; same length, float32.

    As ``librosa.effects.pitch_shift(res_type="soxr_hq")``: phase-vocoder time stretch to
    ``len(y) * k`` samples (``k = 2 ** (semitones / 12)``), then a soxr HQ resample by ``k``
    back to ``len(y)``. (Resampling first would give the phase vocoder fewer frames when
    shifting up, but measured against an ideally shifted harmonic signal it is less
    faithful, so the librosa order is kept.)
    """
    y = np.asarray(y, dtype=np.float32)
    n = len(y)
    if semitones == 0 or n == 0:
        return y.copy()
    k = 2.0 ** (float(semitones) / 12.0)
    stretched = _stft.stretch(y, 1.0 / k, n_fft)
    out = soxr.resample(stretched, sample_rate * k, sample_rate, quality="HQ")
    return _fix_length(out.astype(np.float32, copy=False), n)


def apply(y: np.ndarray, sample_rate: int, rng: np.random.Generator, params: PitchShiftParams) -> tuple[np.ndarray, dict]:
    """Draw the shift (one uniform draw) and apply it."""
    semitones = uniform(rng, params.min_semitones, params.max_semitones)
    return pitch_shift(y, sample_rate, semitones), {"name": "pitch_shift", "semitones": semitones}
