"""Per-clip summaries: statistics over frames of every frame-level feature.

Columns are ordered feature (registry order) -> statistic (config order) -> component, and
named ``{feature}_{component}_{stat}`` (``mfcc_03_mean``, ``chroma_A_std``,
``mfcc_d1_00_max``) or ``{feature}_{stat}`` for one-value-per-frame features
(``spectral_centroid_mean``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

STATS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda x: x.mean(axis=0),
    "std": lambda x: x.std(axis=0),
    "min": lambda x: x.min(axis=0),
    "max": lambda x: x.max(axis=0),
}


def index_labels(dim: int) -> list[str]:
    width = max(2, len(str(dim - 1)))
    return [f"{i:0{width}d}" for i in range(dim)]


def columns(name: str, labels: Sequence[str], stats: Sequence[str]) -> list[str]:
    if len(labels) == 1:
        return [f"{name}_{stat}" for stat in stats]
    return [f"{name}_{label}_{stat}" for stat in stats for label in labels]


def summarize(x: np.ndarray, stats: Sequence[str]) -> np.ndarray:
    """float64 [shape=(len(stats) * dim,)] statistics over the frames of ``x`` [shape=(n_frames, ...)]."""
    if x.shape[0] == 0:
        raise ValueError("cannot summarise a feature with zero frames")
    flat = np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1)
    return np.concatenate([STATS[s](flat) for s in stats]) if stats else np.zeros(0)
