"""Helpers shared by the SpecAugment transforms (freq_mask, time_mask)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np


def select(
    feats: Mapping[str, np.ndarray],
    names: Sequence[str] | None,
    default: Callable[[np.ndarray], bool],
) -> list[str]:
    """Names of the features to mask, sorted (so the draw order never depends on dict order).

    ``names`` given: those names (each must be a 2-D feature of ``feats``, else ``KeyError`` /
    ``ValueError``). ``names`` None: every feature for which ``default(array)`` is true.
    """
    if names is None:
        return sorted(k for k, v in feats.items() if default(np.asarray(v)))
    missing = [n for n in names if n not in feats]
    if missing:
        raise KeyError(f"features {missing} not computed (have: {sorted(feats)})")
    not_2d = [n for n in names if np.ndim(feats[n]) != 2]
    if not_2d:
        raise ValueError(f"features {not_2d} are not 2-D (n_frames, n_bins) arrays")
    return sorted(set(names))


def fill_value(x: np.ndarray, fill: str) -> np.float32:
    """0 for ``fill="zero"``; the array's mean for ``fill="mean"``."""
    if fill == "mean":
        return np.float32(np.mean(x, dtype=np.float64)) if x.size else np.float32(0.0)
    return np.float32(0.0)


def copy_on_write(out: dict[str, np.ndarray], feats: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """Return ``out[name]``, replacing it first by a copy of ``feats[name]`` if still shared."""
    if out[name] is feats[name]:
        out[name] = np.array(feats[name], copy=True)
    return out[name]
