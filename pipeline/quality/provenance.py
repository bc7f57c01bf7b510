"""What a store records about its quality settings, and what of them enters its fingerprint."""

from __future__ import annotations

from typing import Any

from pipeline.quality.config import DuplicatesConfig, QualityConfig


def quality_fingerprint(catalog: Any) -> dict[str, Any]:
    """The ``quality`` / ``duplicates`` sections that differ from their defaults.

    Defaults add nothing, so a store built before these sections existed keeps its
    fingerprint. A changed rule or threshold changes it: the rows already committed were
    measured, flagged and rejected under the old settings, and one store holds one setting.
    """
    out: dict[str, Any] = {}
    if catalog.quality != QualityConfig():
        out["quality"] = catalog.quality.model_dump(mode="json")
    if catalog.duplicates != DuplicatesConfig():
        out["duplicates"] = catalog.duplicates.model_dump(mode="json")
    return out


def quality_provenance(catalog: Any) -> dict[str, Any]:
    """Recorded in the store's attributes at each commit (``audioprep.quality``)."""
    from pipeline.quality.analyze import METRIC_COLUMNS, METRICS_VERSION

    return {
        "metrics_version": METRICS_VERSION,
        "metrics": list(METRIC_COLUMNS),
        "quality": catalog.quality.model_dump(mode="json"),
        "duplicates": catalog.duplicates.model_dump(mode="json"),
    }
