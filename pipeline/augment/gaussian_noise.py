"""gaussian_noise: add white Gaussian noise at a drawn signal-to-noise ratio."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import ValidationInfo, field_validator

from pipeline.augment._mix import mix_at_snr
from pipeline.augment._params import StepParams, check_order, uniform


class GaussianNoiseParams(StepParams):
    """SNR drawn uniformly from [min_snr_db, max_snr_db], relative to the clip's own power."""

    name: Literal["gaussian_noise"] = "gaussian_noise"
    min_snr_db: float = 10.0
    max_snr_db: float = 30.0

    @field_validator("max_snr_db")
    @classmethod
    def _order(cls, v: float, info: ValidationInfo) -> float:
        check_order(info, "min_snr_db", v, "max_snr_db")
        return v


def apply(y: np.ndarray, sample_rate: int, rng: np.random.Generator, params: GaussianNoiseParams) -> tuple[np.ndarray, dict]:
    """Draw the SNR, then ``len(y)`` standard normals (float32), scaled to exactly that SNR.

    A silent clip stays silent (the SNR of a zero signal is undefined).
    """
    snr_db = uniform(rng, params.min_snr_db, params.max_snr_db)
    noise = rng.standard_normal(len(y), dtype=np.float32)
    out, _ = mix_at_snr(y, noise, snr_db)
    return out, {"name": "gaussian_noise", "snr_db": snr_db}
