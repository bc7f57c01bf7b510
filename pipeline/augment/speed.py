"""speed: play faster or slower (resampling): changes duration and pitch together."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import soxr
from pydantic import Field, ValidationInfo, field_validator, model_validator

from pipeline.augment._params import StepParams, check_order, uniform

DEFAULT_FACTORS = (0.9, 1.0, 1.1)


class SpeedParams(StepParams):
    """Speed factor drawn from ``factors`` (uniform choice) or uniformly from [min_factor, max_factor].

    Give either ``factors`` or the ``min_factor``/``max_factor`` pair, not both. With neither,
    ``factors`` is ``[0.9, 1.0, 1.1]`` (Kaldi-style 3-way speed perturbation). Factor > 1 is
    faster: ``len(y) / factor`` samples, pitch times ``factor``.
    """

    name: Literal["speed"] = "speed"
    factors: tuple[float, ...] | None = None
    min_factor: float | None = Field(None, gt=0.0)
    max_factor: float | None = Field(None, gt=0.0)

    @model_validator(mode="before")
    @classmethod
    def _default_factors(cls, data: Any) -> Any:
        # Neither form given: the default factors, written into the model so that
        # model_dump() (store fingerprints, length planning) sees them.
        if isinstance(data, dict) and all(data.get(k) is None for k in ("factors", "min_factor", "max_factor")):
            return {**data, "factors": DEFAULT_FACTORS}
        return data

    @field_validator("factors")
    @classmethod
    def _factors(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if v is not None and not v:
            raise ValueError("factors is empty: list at least one factor, e.g. [0.9, 1.0, 1.1]")
        if v is not None and any(f <= 0 for f in v):
            raise ValueError(f"factors must all be > 0, got {list(v)}")
        return v

    @field_validator("max_factor")
    @classmethod
    def _order(cls, v: float | None, info: ValidationInfo) -> float | None:
        check_order(info, "min_factor", v, "max_factor")
        return v

    @model_validator(mode="after")
    def _one_form(self) -> SpeedParams:
        has_range = self.min_factor is not None or self.max_factor is not None
        if self.factors is not None and has_range:
            raise ValueError("give either factors or min_factor/max_factor, not both")
        if has_range and (self.min_factor is None or self.max_factor is None):
            raise ValueError("min_factor and max_factor go together: give both")
        return self

def change_speed(y: np.ndarray, sample_rate: int, factor: float) -> np.ndarray:
    """Resample mono float32 ``y`` (soxr HQ) so it plays ``factor`` times faster at ``sample_rate``.

    Returns
    -------
    np.ndarray [shape=(about len(y) / factor,), dtype=float32]
    """
    if factor <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    y = np.asarray(y, dtype=np.float32)
    if factor == 1.0 or len(y) == 0:
        return y.copy()
    return soxr.resample(y, sample_rate * factor, sample_rate, quality="HQ").astype(np.float32, copy=False)


def apply(y: np.ndarray, sample_rate: int, rng: np.random.Generator, params: SpeedParams) -> tuple[np.ndarray, dict]:
    """Draw the factor (one draw: an index into ``factors`` or a uniform) and resample."""
    if params.factors is not None:
        factor = float(params.factors[int(rng.integers(len(params.factors)))])
    else:
        factor = uniform(rng, params.min_factor, params.max_factor)
    return change_speed(y, sample_rate, factor), {"name": "speed", "factor": factor}
