"""Helpers shared by the SpecAugment transforms (freq_mask, time_mask)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Literal

import numpy as np
from pydantic import Field


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


#: ``fill`` of freq_mask and time_mask: a named rule or an explicit value (in the feature's units).
Fill = Literal["band_mean", "mean", "zero"] | Annotated[float, Field(allow_inf_nan=False)]


def band_fill(x: np.ndarray, fill: str | float) -> np.ndarray:
    """Fill value of every band of time-major ``x`` [shape=(n_frames, n_bins)] -> float32 (n_bins,).

    ``band_mean`` (default): each band's own mean over the clip's frames, the value that
    per-example normalisation maps to 0 and a typical value of that band under global
    normalisation, so a mask neither brightens nor darkens the stored feature. ``mean``:
    the whole array's mean, one value for every band. ``zero``: 0 (neutral only for
    features that are already mean-normalised). A number: that value.
    """
    x = np.asarray(x)
    n_bins = x.shape[1] if x.ndim == 2 else 1
    if fill == "band_mean":
        if not x.shape[0]:
            return np.zeros(n_bins, np.float32)
        return np.mean(x.reshape(x.shape[0], n_bins), axis=0, dtype=np.float64).astype(np.float32)
    if fill == "mean":
        value = float(np.mean(x, dtype=np.float64)) if x.size else 0.0
    elif fill == "zero":
        value = 0.0
    else:
        value = float(fill)
    return np.full(n_bins, value, np.float32)


def copy_on_write(out: dict[str, np.ndarray], feats: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """Return ``out[name]``, replacing it first by a copy of ``feats[name]`` if still shared."""
    if out[name] is feats[name]:
        out[name] = np.array(feats[name], copy=True)
    return out[name]
