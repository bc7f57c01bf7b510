"""time_mask (SpecAugment): set drawn ranges of consecutive frames to a fill value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
from pydantic import Field

from pipeline.augment import _spec
from pipeline.augment._params import StepParams


class TimeMaskParams(StepParams):
    """``count`` frame ranges, each of width drawn from [0, max_width_frames].

    The width is also capped at ``max_width_fraction`` of the frame count (SpecAugment's
    ``p``; keeps short clips from being masked whole). The same ranges are masked in every
    target feature (``features``; default every 2-D, frame-level feature), which assumes
    they share one frame rate (one hop), as the pipeline's features do. ``fill``:
    ``band_mean`` (default: every bin of a masked frame is set to that bin's mean over the
    clip's frames, the value per-example normalisation maps to 0), ``mean`` (the feature's
    overall mean), ``zero`` (0: neutral only for features stored already mean-normalised;
    0 dB is the loudest value of a log-mel) or a number (that value). Fill values are taken
    from the features as passed in, before any of this step's masks.
    """

    name: Literal["time_mask"] = "time_mask"
    count: int = Field(2, ge=0)
    max_width_frames: int = Field(100, ge=0)
    max_width_fraction: float = Field(1.0, ge=0.0, le=1.0)
    features: tuple[str, ...] | None = None
    fill: _spec.Fill = "band_mean"


def mask_frames(x: np.ndarray, start_frame: int, width_frames: int, value: float | np.ndarray = 0.0) -> None:
    """Set ``x[start_frame:start_frame + width_frames]`` to ``value`` in place.

    ``value``: a scalar, or one value per bin [shape=(n_bins,)], broadcast over the frames.
    """
    x[start_frame : start_frame + width_frames] = value


def apply(
    feats: Mapping[str, np.ndarray], rng: np.random.Generator, params: TimeMaskParams
) -> tuple[dict[str, np.ndarray], dict]:
    """Draw ``count`` (width, start) pairs against the longest target's frame count and mask.

    Width is uniform in [0, min(max_width_frames, floor(max_width_fraction * n_frames))],
    start uniform in [0, n_frames - width]. Inputs are not modified.
    """
    targets = _spec.select(feats, params.features, lambda a: a.ndim == 2)
    out = dict(feats)
    masks = []
    n_frames = max((np.shape(feats[n])[0] for n in targets), default=0)
    cap = min(params.max_width_frames, int(np.floor(params.max_width_fraction * n_frames)))
    values = {n: _spec.band_fill(np.asarray(feats[n]), params.fill) for n in targets}
    for _ in range(params.count if n_frames else 0):
        width = int(rng.integers(0, cap + 1))
        start = int(rng.integers(0, n_frames - width + 1))
        masks.append({"start_frame": start, "width_frames": width})
        if width:
            for name in targets:
                mask_frames(_spec.copy_on_write(out, feats, name), start, width, values[name])
    return out, {"name": "time_mask", "features": targets, "masks": masks}
