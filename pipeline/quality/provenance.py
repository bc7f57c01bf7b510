"""What a store records about its quality settings, and what of them enters its fingerprint."""

from __future__ import annotations

from typing import Any

from pipeline.quality.config import QualityConfig


def quality_fingerprint(catalog: Any) -> dict[str, Any]:
    """The ``quality`` section, when it differs from its defaults.

    Defaults add nothing, so a store built before the section existed keeps its
    fingerprint. A changed rule or threshold changes it: the rows already committed were
    measured, flagged and rejected under the old settings, and one store holds one setting.
    ``duplicates`` is not fingerprinted: clusters are found afresh over the whole store at
    every commit, so a new threshold applies to all rows on the next run (a policy applies
    to the rows a run adds: copies dropped earlier stay rejected, kept ones stay).
    """
    out: dict[str, Any] = {}
    if catalog.quality != QualityConfig():
        out["quality"] = catalog.quality.model_dump(mode="json")
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
