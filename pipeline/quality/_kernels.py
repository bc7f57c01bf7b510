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
def spectral_pass(power: np.ndarray, weights: np.ndarray, band_lo: np.ndarray, band_hi: np.ndarray, stride: int,
                  skip_steps: int, block_steps: int):  # pragma: no cover - compiled
    """One read of the power spectrum (n_frames, n_bins) for every metric that needs it.

    Frames are first summed in steps of ``stride`` (the trailing partial step is dropped).
    Returns, per step, ``power @ weights`` (n_steps,) and the band sums (n_steps, n_bands)
    of bins ``band_lo[j]:band_hi[j]``; the column sums (n_bins,) over all steps but
    ``skip_steps`` at each end; and over those steps, blocks of ``block_steps`` steps summed
    (n_blocks, n_bins).
    """
    n_frames, n_bins = power.shape
    n_bands = band_lo.shape[0]
    n_steps = n_frames // stride
    steps = np.zeros((n_steps, n_bins), dtype=np.float32)
    for st in range(n_steps):
        out = steps[st]
        for t in range(st * stride, (st + 1) * stride):
            row = power[t]
            for b in range(n_bins):
                out[b] += row[b]
    weighted = np.empty(n_steps, dtype=np.float32)
    bands = np.empty((n_steps, n_bands), dtype=np.float32)
    colsum = np.zeros(n_bins, dtype=np.float32)
    for st in range(n_steps):
        row = steps[st]
        acc = np.float32(0.0)
        for b in range(n_bins):
            acc += row[b] * weights[b]
        weighted[st] = acc
        for j in range(n_bands):
            e = np.float32(0.0)
            for b in range(band_lo[j], band_hi[j]):
                e += row[b]
            bands[st, j] = e
        if skip_steps <= st < n_steps - skip_steps:
            for b in range(n_bins):
                colsum[b] += row[b]
    n_blocks = max(0, (n_steps - 2 * skip_steps) // block_steps)
    blocks = np.zeros((n_blocks, n_bins), dtype=np.float32)
    for k in range(n_blocks):
        out = blocks[k]
        for st in range(skip_steps + k * block_steps, skip_steps + (k + 1) * block_steps):
            row = steps[st]
            for b in range(n_bins):
                out[b] += row[b]
    return weighted, bands, colsum, blocks


@numba.njit(cache=True, nogil=True)
def gated_loudness(z: np.ndarray, centres: np.ndarray, n_samples: int, block: int, step: int, absolute_lufs: float,
                   relative_lu: float, floor_lufs: float) -> float:  # pragma: no cover - compiled
    """BS.1770 gating over frames' K-weighted mean squares ``z`` centred at ``centres`` (sorted):
    a block's power is the mean of the frames whose centres fall in it."""
    n_blocks = (n_samples - block) // step + 1 if n_samples >= block else 0
    power = np.empty(n_blocks, dtype=np.float64)
    m = 0
    lo = 0
    hi = 0
    acc = 0.0
    for k in range(n_blocks):
        start = k * step
        while hi < z.shape[0] and centres[hi] < start + block:
            acc += z[hi]
            hi += 1
        while lo < hi and centres[lo] < start:
            acc -= z[lo]
            lo += 1
        if hi > lo:
            power[m] = max(acc, 0.0) / (hi - lo)
            m += 1
    total = 0.0
    count = 0
    for k in range(m):
        if power[k] > 0 and -0.691 + 10.0 * np.log10(power[k]) > absolute_lufs:
            total += power[k]
            count += 1
    if count == 0:
        return floor_lufs
    relative = -0.691 + 10.0 * np.log10(total / count) + relative_lu
    total2 = 0.0
    count2 = 0
    for k in range(m):
        if power[k] > 0:
            lk = -0.691 + 10.0 * np.log10(power[k])
            if lk > absolute_lufs and lk > relative:
                total2 += power[k]
                count2 += 1
    return -0.691 + 10.0 * np.log10(total2 / count2)


@numba.njit(cache=True, nogil=True)
def sketch_keys(codes: np.ndarray, k: int, inactive: int):  # pragma: no cover - compiled
    """The ``k`` smallest distinct splitmix64 hashes of adjacent active code pairs, with the
    frame of each hash's first pair (see pipeline.quality.fingerprint.sketch)."""
    n = codes.shape[0] - 1
    h = np.empty(max(n, 0), dtype=np.uint64)
    frame = np.empty(max(n, 0), dtype=np.int32)
    m = 0
    for i in range(n):
        a = codes[i]
        b = codes[i + 1]
        if a != inactive and b != inactive:
            z = ((np.uint64(a) << np.uint64(16)) | np.uint64(b)) + np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            h[m] = z ^ (z >> np.uint64(31))
            frame[m] = i
            m += 1
    order = np.argsort(h[:m], kind="mergesort")  # stable: a repeated hash keeps its first frame
    keys = np.empty(min(k, m), dtype=np.uint64)
    frames = np.empty(min(k, m), dtype=np.int32)
    out = 0
    for r in range(m):
        if out >= k:
            break
        v = h[order[r]]
        if out > 0 and keys[out - 1] == v:
            continue
        keys[out] = v
        frames[out] = frame[order[r]]
        out += 1
    return keys[:out], frames[:out]


@numba.njit(cache=True, nogil=True)
def philips_codes(bands: np.ndarray, pool: int, stride: int, lag: int, active_ratio: float,
                  abs_floor: float, band_ratio: float, min_bands: int) -> np.ndarray:  # pragma: no cover - compiled
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
        strong = 0
        peak = 0.0
        for j in range(n_bands):
            peak = max(peak, e[s + lag, j])
        for j in range(n_bands):
            if e[s + lag, j] >= peak * band_ratio:
                strong += 1
        if level[s] > top * active_ratio and level[s] > abs_floor and strong >= min_bands:
            c = 0
            for j in range(n_bands - 1):
                if (e[s + lag, j] - e[s + lag, j + 1]) - (e[s, j] - e[s, j + 1]) > 0:
                    c |= 1 << j
            codes[s] = c
        else:
            codes[s] = -1
    return codes


@numba.njit(cache=True, nogil=True)
def median_nearest(x: np.ndarray, width: int) -> np.ndarray:  # pragma: no cover - compiled
    """``scipy.ndimage.median_filter(x, size=width, mode="nearest")`` for odd ``width`` (1-D)."""
    n = x.shape[0]
    half = width // 2
    out = np.empty(n, dtype=x.dtype)
    buf = np.empty(width, dtype=x.dtype)
    for i in range(n):
        for j in range(width):
            buf[j] = x[min(n - 1, max(0, i - half + j))]
        buf.sort()
        out[i] = buf[half]
    return out
