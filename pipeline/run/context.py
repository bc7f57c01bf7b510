"""The small, picklable context every partition task receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.augment import AugmentConfig
from pipeline.config.catalog import Audio
from pipeline.features import FeaturesConfig
from pipeline.quality.config import QualityConfig
from pipeline.store.layout import Layout


@dataclass(frozen=True)
class BankFile:
    """One clip of a noise or impulse-response source used by augmentations."""

    source: str
    url: str


@dataclass(frozen=True)
class RunContext:
    store_url: str
    store_options: dict[str, Any]
    layout: Layout
    features: FeaturesConfig
    audio: Audio
    augment: AugmentConfig
    seed: int
    source_options: dict[str, dict[str, Any]]
    source_cache: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    """source name -> (cache mode, cache dir)."""
    bank_files: tuple[BankFile, ...] = ()
    fetch_concurrency: int = 16
    secrets: tuple[str, ...] = ()
    """Values scrubbed from every message written to the store or returned."""
    norm_splits: tuple[str, ...] = ("train",)
    quality: QualityConfig = QualityConfig()
    """Quality metrics, flags and rules (the catalog's ``quality:``)."""
