"""Compiled single-pass loops (numba, a librosa dependency) over the samples and the spectrum.

At thousands of times realtime per core, the passes over the data are the metrics' cost:
each loop here reads its input once for several metrics.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, fastmath=True)
def frame_energies(y: np.ndarray, frame: int) -> tuple[float, np.ndarray]:  # pragma: no cover - compiled
    """``(sum, sum of squares per frame (n_frames,))`` of float32 ``y`` over non-overlapping
    ``frame``-sample frames (the last partial one too): float32 sums within a frame
    (vectorised), float64 across frames. (A max does not vectorise here: numpy's is faster.)"""
    n = y.shape[0]
    k = (n + frame - 1) // frame
    sq = np.empty(k, dtype=np.float64)
    total = 0.0
    for j in range(k):
        seg = y[j * frame : min(n, (j + 1) * frame)]
        s = np.float32(0.0)
        q = np.float32(0.0)
        for i in range(seg.shape[0]):
            v = seg[i]
            s += v
            q += v * v
        total += s
        sq[j] = q
    return total, sq


@numba.njit(cache=True, nogil=True)
def clipped_in_runs(y: np.ndarray, rail: float) -> int:  # pragma: no cover - compiled
    """Samples with ``|y| >= rail`` that have a neighbour at the rail too (runs of 2 or more)."""
    n = y.shape[0]
    count = 0
    prev = False
    for i in range(n):
        top = abs(np.float64(y[i])) >= rail
        if top and (prev or (i + 1 < n and abs(np.float64(y[i + 1])) >= rail)):
            count += 1
        prev = top
    return count


@numba.njit(cache=True, nogil=True, fastmath=True)
def spectral_pass(power: np.ndarray, weights: np.ndarray, band_lo: np.ndarray, band_hi: np.ndarray, pool: int,
                  skip: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """One read of the power spectrum (n_frames, n_bins) for every metric that needs it.

    Returns ``(column sums (n_bins,), power @ weights (n_frames,), band sums (n_frames, n_bands),
    pooled (n_bins, n_blocks))``: the column sums over all frames but ``skip`` at each end,
    bins ``band_lo[j]:band_hi[j]`` summed per band, and the frames after ``skip`` summed in
    blocks of ``pool`` (frequency-major).
    """
    n_frames, n_bins = power.shape
    n_bands = band_lo.shape[0]
    colsum = np.zeros(n_bins, dtype=np.float32)
    weighted = np.empty(n_frames, dtype=np.float32)
    bands = np.empty((n_frames, n_bands), dtype=np.float32)
    n_blocks = max(0, (n_frames - 2 * skip) // pool)
    pooled_t = np.zeros((n_blocks, n_bins), dtype=np.float32)
    for t in range(n_frames):
        row = power[t]
        acc = np.float32(0.0)
        for b in range(n_bins):
            acc += row[b] * weights[b]
        weighted[t] = acc
        if skip <= t < n_frames - skip:
            for b in range(n_bins):
                colsum[b] += row[b]
        for j in range(n_bands):
            e = np.float32(0.0)
            for b in range(band_lo[j], band_hi[j]):
                e += row[b]
            bands[t, j] = e
        blk = (t - skip) // pool
        if t >= skip and blk < n_blocks:
            out = pooled_t[blk]
            for b in range(n_bins):
                out[b] += row[b]
    pooled = np.empty((n_bins, n_blocks), dtype=np.float32)
    for k in range(n_blocks):
        for b in range(n_bins):
            pooled[b, k] = pooled_t[k, b]
    return colsum, weighted, bands, pooled


@numba.njit(cache=True, nogil=True)
def philips_codes(bands: np.ndarray, pool: int, stride: int, lag: int, active_ratio: float,
                  abs_floor: float) -> np.ndarray:  # pragma: no cover - compiled
    """Sub-fingerprints from band energies (n_frames, n_bands): energies summed over ``pool``
    frames every ``stride``; per step, bit ``j`` = sign of the change over ``lag`` steps of
    (band ``j`` - band ``j + 1``); -1 where the step's energy is below ``active_ratio`` of the
    loudest step or below ``abs_floor``."""
    n_frames, n_bands = bands.shape
    n = (n_frames - pool) // stride + 1 if n_frames >= pool else 0
    if n <= lag:
        return np.zeros(0, dtype=np.int32)
    e = np.zeros((n, n_bands), dtype=np.float64)
    for s in range(n):
        for t in range(s * stride, s * stride + pool):
            for j in range(n_bands):
                e[s, j] += bands[t, j]
    level = np.zeros(n - lag, dtype=np.float64)
    top = 0.0
    for s in range(n - lag):
        for j in range(n_bands):
            level[s] += e[s + lag, j]
        top = max(top, level[s])
    codes = np.empty(n - lag, dtype=np.int32)
    for s in range(n - lag):
        if level[s] > top * active_ratio and level[s] > abs_floor:
            c = 0
            for j in range(n_bands - 1):
                if (e[s + lag, j] - e[s + lag, j + 1]) - (e[s, j] - e[s, j + 1]) > 0:
                    c |= 1 << j
            codes[s] = c
        else:
            codes[s] = -1
    return codes
