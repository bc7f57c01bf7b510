"""The catalog's ``quality:`` and ``duplicates:`` sections (docs/quality.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.quality.rules import RuleError, parse_rule


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Vad(_Model):
    """Frame-level energy voice-activity estimate (``speech_fraction`` / ``silence_fraction``)."""

    frame_seconds: float = Field(0.02, gt=0, le=1)
    speech_dbfs: float = -45.0
    """A frame louder than this (RMS, dBFS) counts as speech."""
    silence_dbfs: float = -60.0
    """A frame quieter than this counts as silence; frames in between count as neither."""


class Thresholds(_Model):
    """When the built-in flags are set (each flag keeps the example; use ``reject_if`` to drop)."""

    clipped_fraction: float = Field(0.001, ge=0, le=1)
    """``clipped`` when ``clipping_fraction`` is above this."""
    mostly_silent_fraction: float = Field(0.9, ge=0, le=1)
    """``mostly_silent`` when ``silence_fraction`` is above this."""
    low_snr_db: float = 5.0
    """``low_snr`` when ``snr_db`` is below this."""
    narrowband_ratio: float = Field(0.35, ge=0, le=0.5)
    """``narrowband`` when ``bandwidth_hz`` is below this times ``audio.sample_rate``."""


class QualityConfig(_Model):
    measure: bool = True
    """Measure every example and fingerprint it for duplicates (docs/quality.md: about a
    tenth of a log-mel featurize per clip, reusing the features' STFT). ``false``: the
    metric columns stay NaN and no duplicate is found."""
    vad: Vad = Vad()
    flags: Thresholds = Thresholds()
    bandwidth_floor_db: float = Field(60.0, gt=0, le=150)
    """``bandwidth_hz`` is the highest frequency whose long-term level is within this many
    dB of the spectrum's peak."""
    reject_if: str | None = None
    """Rule (docs/quality.md grammar); an example it is true for goes to the rejects table."""
    flag_if: str | None = None
    """Rule; an example it is true for is kept and flagged ``quality``."""

    @field_validator("reject_if", "flag_if")
    @classmethod
    def _rule(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                parse_rule(v)
            except RuleError as exc:
                raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="after")
    def _rules_need_metrics(self) -> QualityConfig:
        if not self.measure and (self.reject_if or self.flag_if):
            raise ValueError("reject_if / flag_if read the metrics: remove them, or set measure: true")
        return self

    @field_validator("vad")
    @classmethod
    def _vad_order(cls, v: Vad) -> Vad:
        if v.silence_dbfs > v.speech_dbfs:
            raise ValueError(f"silence_dbfs ({v.silence_dbfs:g}) must not be above speech_dbfs ({v.speech_dbfs:g})")
        return v


class DuplicatesConfig(_Model):
    policy: Literal["keep", "drop_copies", "error"] = "keep"
    """``keep``: copies stay examples, flagged ``duplicate``; ``drop_copies``: every member of a
    cluster but one goes to the rejects table; ``error``: the run fails, listing the clusters.
    With every policy, a cluster's members land in one split."""
    near: bool = True
    """Find re-encoded, resampled, re-levelled and trimmed copies, not only identical PCM."""
    similarity: float = Field(0.75, gt=0.5, le=1)
    """Share of fingerprint bits two clips must agree on (best alignment) to be copies."""
    max_offset_seconds: float = Field(1.0, ge=0, le=30)
    """Largest trim or shift searched when two fingerprints are aligned."""
    min_overlap: float = Field(0.8, gt=0, le=1)
    """Aligned fingerprints must overlap by this share of the longer clip's active frames: a
    trimmed copy is a copy, a short excerpt of a long recording is not."""
