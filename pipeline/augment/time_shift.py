"""time_shift: move the waveform earlier or later by a drawn number of samples."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from pipeline.augment._params import StepParams


class TimeShiftParams(StepParams):
    """Shift drawn uniformly in whole samples from [-max_shift_seconds, +max_shift_seconds].

    ``mode="wrap"`` rotates the signal (what falls off one end comes back at the other);
    ``mode="silence"`` fills the gap with zeros and drops what falls off.
    """

    name: Literal["time_shift"] = "time_shift"
    max_shift_seconds: float = Field(0.5, ge=0.0)
    mode: Literal["wrap", "silence"] = "silence"


def shift(y: np.ndarray, shift_samples: int, mode: str) -> np.ndarray:
    """Shift ``y`` by ``shift_samples`` (> 0: later, < 0: earlier); same length, new array.

    ``wrap`` equals ``np.roll(y, shift_samples)``; ``silence`` zero-fills the gap.
    """
    n = len(y)
    if mode == "wrap":
        return np.roll(y, shift_samples) if n else y.copy()
    if mode != "silence":
        raise ValueError(f"time_shift mode must be 'wrap' or 'silence', got {mode!r}")
    out = np.zeros_like(y)
    k = int(shift_samples)
    if abs(k) >= n:
        return out
    if k >= 0:
        out[k:] = y[: n - k]
    else:
        out[:k] = y[-k:]
    return out


def apply(y: np.ndarray, sample_rate: int, rng: np.random.Generator, params: TimeShiftParams) -> tuple[np.ndarray, dict]:
    """Draw the shift (one integer draw) and apply it."""
    max_samples = int(round(params.max_shift_seconds * sample_rate))
    k = int(rng.integers(-max_samples, max_samples + 1))
    drawn = {"name": "time_shift", "shift_samples": k, "shift_seconds": k / sample_rate, "mode": params.mode}
    return shift(y, k, params.mode), drawn
