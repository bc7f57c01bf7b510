"""gain: scale the waveform by a drawn number of decibels (no clipping)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import ValidationInfo, field_validator

from pipeline.augment._params import StepParams, check_order, uniform


class GainParams(StepParams):
    """Gain drawn uniformly from [min_gain_db, max_gain_db]; amplitude times ``10 ** (gain_db / 20)``."""

    name: Literal["gain"] = "gain"
    min_gain_db: float = -6.0
    max_gain_db: float = 6.0

    @field_validator("max_gain_db")
    @classmethod
    def _order(cls, v: float, info: ValidationInfo) -> float:
        check_order(info, "min_gain_db", v, "max_gain_db")
        return v


def apply_gain_db(y: np.ndarray, gain_db: float) -> np.ndarray:
    """Return ``y * 10 ** (gain_db / 20)`` as float32. Samples may leave [-1, 1]: nothing clips."""
    return (np.asarray(y, dtype=np.float32) * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32, copy=False)


def apply(y: np.ndarray, sample_rate: int, rng: np.random.Generator, params: GainParams) -> tuple[np.ndarray, dict]:
    """Draw the gain (one uniform draw) and apply it."""
    gain_db = uniform(rng, params.min_gain_db, params.max_gain_db)
    return apply_gain_db(y, gain_db), {"name": "gain", "gain_db": gain_db}
