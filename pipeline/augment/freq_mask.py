"""freq_mask (SpecAugment): set drawn bands of consecutive bins to a fill value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
from pydantic import Field

from pipeline.augment import _spec
from pipeline.augment._params import StepParams


class FreqMaskParams(StepParams):
    """``count`` bands per feature, each of width drawn from [0, max_width_bins] (clipped to n_bins).

    ``features``: names of the features to mask; default every 2-D feature with more than
    one bin. ``fill``: ``band_mean`` (default: each masked band is set to its own mean over
    the clip's frames, the value per-example normalisation maps to 0, so the band comes out
    neutral whether the reader normalises per example, globally or not at all), ``mean``
    (the feature's overall mean), ``zero`` (0: neutral only for features stored already
    mean-normalised; 0 dB is the loudest value of a log-mel) or a number (that value).
    """

    name: Literal["freq_mask"] = "freq_mask"
    count: int = Field(2, ge=0)
    max_width_bins: int = Field(27, ge=0)
    features: tuple[str, ...] | None = None
    fill: _spec.Fill = "band_mean"


def mask_bins(x: np.ndarray, start_bin: int, width_bins: int, value: float | np.ndarray = 0.0) -> None:
    """Set ``x[:, start_bin:start_bin + width_bins]`` to ``value`` in place.

    ``value``: a scalar, or one value per bin of ``x`` [shape=(n_bins,)] (each masked bin
    gets its own).
    """
    value = np.asarray(value)
    x[:, start_bin : start_bin + width_bins] = value[start_bin : start_bin + width_bins] if value.ndim else value


def apply(
    feats: Mapping[str, np.ndarray], rng: np.random.Generator, params: FreqMaskParams
) -> tuple[dict[str, np.ndarray], dict]:
    """For each target feature (sorted by name), draw ``count`` (width, start) pairs and mask.

    Width is uniform in [0, min(max_width_bins, n_bins)], start uniform in [0, n_bins - width].
    Inputs are not modified; masked features are returned as new arrays, the others
    are passed through.
    """
    targets = _spec.select(feats, params.features, lambda a: a.ndim == 2 and a.shape[1] > 1)
    out = dict(feats)
    masks = []
    for name in targets:
        n_bins = np.shape(feats[name])[1]
        value = _spec.band_fill(np.asarray(feats[name]), params.fill)
        for _ in range(params.count):
            width = int(rng.integers(0, min(params.max_width_bins, n_bins) + 1))
            start = int(rng.integers(0, n_bins - width + 1))
            masks.append({"feature": name, "start_bin": start, "width_bins": width})
            if width:
                mask_bins(_spec.copy_on_write(out, feats, name), start, width, value)
    return out, {"name": "freq_mask", "masks": masks}
