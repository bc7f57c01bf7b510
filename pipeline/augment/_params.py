"""Base classes and validators shared by every transform's parameter model.

Each transform's parameters are a frozen pydantic model (``extra="forbid"``) whose
``name`` literal is the registry key. Range checks raise ``ValueError`` inside field
validators, so pydantic reports them as a ``ValidationError`` whose ``loc`` ends with the
offending key (for an inverted ``min_x``/``max_x`` pair, the ``max_x`` key, where the
inconsistency is detected; the message names both values).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo


class StepParams(BaseModel):
    """Parameters common to every transform: ``name`` and the probability ``p``."""

    # validate_default: an inverted pair is caught when only one side is given
    # (``min_semitones: 5`` against the default ``max_semitones: 2``).
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    name: str
    p: float = Field(1.0, ge=0.0, le=1.0, description="probability that the transform is applied")


def check_order(info: ValidationInfo, min_key: str, max_value: Any, max_key: str, hint: str = "swap them") -> None:
    """Raise ``ValueError`` if ``info.data[min_key] > max_value`` (use from the max field's validator).

    When ``min_key`` itself failed validation it is absent from ``info.data`` and nothing is
    checked here (pydantic already reports it).
    """
    lo = info.data.get(min_key)
    if lo is not None and max_value is not None and lo > max_value:
        raise ValueError(f"{min_key} ({lo:g}) > {max_key} ({max_value:g}): {hint}")


def uniform(rng, low: float, high: float) -> float:
    """One float draw in [low, high] as a Python float (JSON-serialisable)."""
    return float(rng.uniform(low, high))
