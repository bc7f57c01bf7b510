"""Compiled loops (numba, a librosa dependency) where numpy has no fast vectorised form.

They keep librosa's arithmetic exactly: the rolloff uses the same sequential float32
running sums as ``numpy.cumsum``.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def rolloff_bins(mag_ft: np.ndarray, roll_percent: float) -> np.ndarray:  # pragma: no cover - compiled
    """Per frame, the first bin whose float32 running sum reaches ``roll_percent`` of the total.

    ``mag_ft`` is frequency-major [shape=(n_bins, n_frames)] so the loops over frames vectorise;
    each frame's sums are still accumulated bin by bin, in numpy.cumsum's order.
    """
    n_bins, n_frames = mag_ft.shape
    total = np.zeros(n_frames, dtype=np.float32)
    for f in range(n_bins):
        for t in range(n_frames):
            total[t] += mag_ft[f, t]
    roll = np.float32(roll_percent)
    for t in range(n_frames):
        total[t] = roll * total[t]
    running = np.zeros(n_frames, dtype=np.float32)
    first = np.full(n_frames, n_bins - 1, dtype=np.int64)
    found = np.zeros(n_frames, dtype=np.bool_)
    for f in range(n_bins):
        for t in range(n_frames):
            running[t] += mag_ft[f, t]
            if not found[t] and running[t] >= total[t]:
                first[t] = f
                found[t] = True
    return first
