"""time_stretch: change the duration without changing the pitch (phase vocoder)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from pipeline.augment import _stft
from pipeline.augment._params import StepParams, check_order, uniform


class TimeStretchParams(StepParams):
    """Rate drawn uniformly from [min_rate, max_rate]; rate > 1 is faster (shorter).

    The output has ``round(len(y) / rate)`` samples.
    """

    name: Literal["time_stretch"] = "time_stretch"
    min_rate: float = Field(0.9, gt=0.0)
    max_rate: float = Field(1.1, gt=0.0)

    @field_validator("max_rate")
    @classmethod
    def _order(cls, v: float, info: ValidationInfo) -> float:
        check_order(info, "min_rate", v, "max_rate")
        return v


def time_stretch(y: np.ndarray, rate: float, n_fft: int = _stft.N_FFT) -> np.ndarray:
    """Phase-vocoder stretch of mono float32 ``y`` by ``rate`` (as ``librosa.effects.time_stretch``).

    Returns
    -------
    np.ndarray [shape=(round(len(y) / rate),), dtype=float32]
    """
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    if rate == 1.0:
        return np.array(y, dtype=np.float32, copy=True)
    return _stft.stretch(np.asarray(y, dtype=np.float32), rate, n_fft)


def apply(y: np.ndarray, sample_rate: int, rng: np.random.Generator, params: TimeStretchParams) -> tuple[np.ndarray, dict]:
    """Draw the rate (one uniform draw) and stretch."""
    rate = uniform(rng, params.min_rate, params.max_rate)
    return time_stretch(y, rate), {"name": "time_stretch", "rate": rate}
