"""``FeaturesConfig``: the ``features:`` section of catalog.yaml.

One optional field per registered feature (its own params model), plus ``stft`` (the
shared analysis), ``summaries`` and ``normalization``. The model is generated from the
registry, so pydantic reports problems at their key path (``features.log_mel.n_melz``,
``features.log_melz``) and a new registry entry is a new accepted key.

A feature is enabled by naming it (``rms: {}``; an empty value ``rms:`` or ``true`` also
enables it, ``false`` drops it). When no feature is named, ``log_mel`` with its defaults is
used, so an omitted or empty section means ``{log_mel: {}}``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from pipeline.features._base import FeatureParams
from pipeline.features.analysis import StftParams
from pipeline.features.registry import REGISTRY

SummaryName = Literal["mean", "std", "min", "max"]
Normalization = Literal["none", "per_example", "global"]
DEFAULT_FEATURES: dict[str, Any] = {"log_mel": {}}


class _FeaturesBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stft: StftParams = Field(default_factory=StftParams, description="the one STFT all features share")
    summaries: tuple[SummaryName, ...] = Field((), description="per-clip statistics of every frame-level feature")
    normalization: Normalization = Field("none", description="recorded for readers; see docs/features.md")

    @model_validator(mode="before")
    @classmethod
    def _enable(cls, data: Any) -> Any:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            return data
        out = {}
        for key, value in data.items():
            if key in REGISTRY and (value is None or value is True):
                value = {}
            if key in REGISTRY and value is False:
                continue
            out[key] = value
        if not any(key in REGISTRY for key in out):
            out.update(DEFAULT_FEATURES)
        return out

    @field_validator("summaries")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        dup = sorted({s for s in value if value.count(s) > 1})
        if dup:
            raise ValueError(f"summaries must not repeat: {', '.join(dup)}")
        return value

    def enabled(self) -> dict[str, FeatureParams]:
        """The named features and their params, in registry order."""
        return {name: getattr(self, name) for name in REGISTRY if getattr(self, name) is not None}


FeaturesConfig = create_model(  # type: ignore[call-overload]
    "FeaturesConfig",
    __base__=_FeaturesBase,
    __module__=__name__,
    __doc__=(
        "The ``features:`` section of catalog.yaml (frozen; unknown keys are errors).\n\n"
        "Fields: ``stft`` (StftParams), ``summaries``, ``normalization``, and one optional\n"
        "params model per name in :data:`pipeline.features.registry.REGISTRY`."
    ),
    **{name: (spec.params | None, None) for name, spec in REGISTRY.items()},
)
