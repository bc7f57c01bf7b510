"""What every feature module shares: the params base class and the registry entry type.

A feature is one small module holding

* a frozen pydantic params model (subclass of :class:`FeatureParams`, librosa's names),
* ``frame_shape(params, stft, sample_rate) -> tuple[int, ...]``,
* ``compute(analysis, params, state) -> np.ndarray [shape=(n_frames, *frame_shape)]``,
* optionally ``prepare(params, stft, sample_rate) -> state`` (filterbanks, built once per
  process), ``check(params, stft, sample_rate) -> list[str]`` (sample-rate dependent
  problems) and ``labels(params, stft, sample_rate) -> list[str]`` (names of the
  per-frame components, used in summary column names),

and one :class:`FeatureSpec` entry in :mod:`pipeline.features.registry`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

if TYPE_CHECKING:
    from pipeline.features.analysis import StftParams

#: STFT keys that belong to ``features.stft`` only (one STFT is shared by every feature).
SHARED_STFT_KEYS = ("n_fft", "hop_length", "win_length", "window", "center", "pad_mode", "frame_length")


class FeatureParams(BaseModel):
    """Base of every feature's params model: frozen, unknown keys are errors.

    The STFT keys of :data:`SHARED_STFT_KEYS` are declared only to reject them with a
    pointed message (``loc`` ends with the key): they are set once, in ``features.stft``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_fft: Any = Field(None, exclude=True, repr=False)
    hop_length: Any = Field(None, exclude=True, repr=False)
    win_length: Any = Field(None, exclude=True, repr=False)
    window: Any = Field(None, exclude=True, repr=False)
    center: Any = Field(None, exclude=True, repr=False)
    pad_mode: Any = Field(None, exclude=True, repr=False)
    frame_length: Any = Field(None, exclude=True, repr=False)

    @field_validator(*SHARED_STFT_KEYS, mode="before")
    @classmethod
    def _shared_stft(cls, value: Any, info: ValidationInfo) -> Any:
        key = "n_fft" if info.field_name == "frame_length" else info.field_name
        raise PydanticCustomError(
            "shared_stft",
            "all features share one STFT: remove this key here and set features.stft.{key} instead",
            {"key": key},
        )


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One registry entry: how to configure, size and compute a frame-level feature."""

    name: str
    params: type[FeatureParams]
    compute: Callable[..., Any]
    frame_shape: Callable[..., tuple[int, ...]]
    prepare: Callable[..., Any] | None = None
    check: Callable[..., list[str]] | None = None
    labels: Callable[..., list[str]] | None = None
    doc: str = ""

    def build_state(self, params: FeatureParams, stft: StftParams, sample_rate: int) -> Any:
        return None if self.prepare is None else self.prepare(params, stft, sample_rate)


def json_safe(value: Any) -> Any:
    """``value`` with tuples as lists and non-finite floats as strings ("inf", "-inf", "nan").

    Pydantic reads those strings back as floats, so ``params()`` round-trips through JSON.
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
