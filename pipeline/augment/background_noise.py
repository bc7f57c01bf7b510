"""background_noise: mix in a clip of another catalog source at a drawn SNR."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from pipeline.augment._mix import mix_at_snr
from pipeline.augment._params import StepParams, check_order, uniform


class BackgroundNoiseParams(StepParams):
    """Noise clip from catalog source ``source``; SNR drawn uniformly from [min_snr_db, max_snr_db]."""

    name: Literal["background_noise"] = "background_noise"
    source: str = Field(min_length=1)
    min_snr_db: float = 5.0
    max_snr_db: float = 20.0

    @field_validator("max_snr_db")
    @classmethod
    def _order(cls, v: float, info: ValidationInfo) -> float:
        check_order(info, "min_snr_db", v, "max_snr_db")
        return v


def loop_to_length(clip: np.ndarray, n: int, offset_samples: int) -> np.ndarray:
    """``n`` samples of ``clip`` read from ``offset_samples`` on, looping past its end (float32)."""
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    idx = np.arange(offset_samples, offset_samples + n)
    return np.take(np.asarray(clip, dtype=np.float32), idx, mode="wrap")


def apply(
    y: np.ndarray,
    sample_rate: int,
    rng: np.random.Generator,
    params: BackgroundNoiseParams,
    clips: Sequence[np.ndarray],
) -> tuple[np.ndarray, dict]:
    """Draw the SNR, a clip index and a start offset in that clip, then mix.

    The clip is looped (if shorter than ``y``) or cropped (if longer) from the offset.
    A silent noise clip (or silent ``y``) leaves ``y`` unchanged; ``drawn["gain"]`` is then 0.
    ``clips`` must be non-empty (the chain checks and names the source).
    """
    snr_db = uniform(rng, params.min_snr_db, params.max_snr_db)
    clip_index = int(rng.integers(len(clips)))
    clip = clips[clip_index]
    offset = int(rng.integers(len(clip))) if len(clip) else 0
    noise = loop_to_length(clip, len(y), offset) if len(clip) else np.zeros(len(y), np.float32)
    out, g = mix_at_snr(y, noise, snr_db)
    drawn = {
        "name": "background_noise",
        "source": params.source,
        "clip_index": clip_index,
        "offset_samples": offset,
        "snr_db": snr_db,
        "gain": g,
    }
    return out, drawn
