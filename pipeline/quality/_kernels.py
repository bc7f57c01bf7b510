"""Compiled single-pass loops (numba, a librosa dependency) over the samples and the spectrum.

At thousands of times realtime per core, the passes over the data are the metrics' cost:
each loop here reads its input once for several metrics.
"""

from __future__ import annotations

import numba
import numpy as np

from pipeline.quality import _xxh3


@numba.njit(cache=True, nogil=True, fastmath=True)
def sample_summary(y: np.ndarray, bits: np.ndarray, frame: int, speech_power: float, silence_power: float):  # pragma: no cover - compiled
    """One read of float32 ``y`` for every level metric: ``(sum, sum of squares, frames whose
    mean square is above speech_power, frames below silence_power, frames, max |y|)`` over
    non-overlapping ``frame``-sample frames (the last partial one too). float32 sums within a
    frame (vectorised), float64 across frames. ``bits`` is ``y`` viewed as uint32: the peak is
    the largest of the magnitudes' bit patterns, whose order is the floats' (an integer max
    vectorises; a float max, with its NaN rules, does not)."""
    n = y.shape[0]
    k = (n + frame - 1) // frame
    total = 0.0
    squares = 0.0
    speech = 0
    silence = 0
    for j in range(k):
        seg = y[j * frame : (j + 1) * frame]  # slices: indices from 0, no wraparound checks
        s = np.float32(0.0)
        q = np.float32(0.0)
        for i in range(seg.shape[0]):
            v = seg[i]
            s += v
            q += v * v
        total += s
        squares += q
        ms = np.float64(q) / seg.shape[0]
        if ms > speech_power:
            speech += 1
        if ms < silence_power:
            silence += 1
    top = np.uint32(0)
    for i in range(n):  # its own loop: vectorises better with every numba tested than inside the frames'
        u = bits[i] & np.uint32(0x7FFFFFFF)
        top = u if u > top else top
    peak = np.empty(1, np.uint32)
    peak[0] = top
    return total, squares, speech, silence, k, np.float64(peak.view(np.float32)[0])


@numba.njit(cache=True, nogil=True, fastmath=True)
def abs_peak(bits: np.ndarray) -> int:  # pragma: no cover - compiled
    """Largest magnitude bit pattern of float32 samples viewed as uint32 (see :func:`sample_summary`)."""
    m = np.uint32(0)
    for i in range(bits.shape[0]):
        u = bits[i] & np.uint32(0x7FFFFFFF)
        m = u if u > m else m
    return m


@numba.njit(cache=True, nogil=True, fastmath=True)
def frame_energies(y: np.ndarray, frame: int) -> tuple[float, np.ndarray]:  # pragma: no cover - compiled
    """``(sum, sum of squares per frame (n_frames,))`` of float32 ``y`` over non-overlapping
    ``frame``-sample frames (the last partial one too), summed as :func:`sample_summary` does."""
    n = y.shape[0]
    k = (n + frame - 1) // frame
    sq = np.empty(k, dtype=np.float64)
    total = 0.0
    # sample_summary's frame loop, copied on purpose: as one shared inlined helper, numba 0.68
    # vectorised the float32 sums in another order and the two results drifted apart
    for j in range(k):
        seg = y[j * frame : (j + 1) * frame]
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
                  skip_steps: int, block_steps: int, block_bins: int):  # pragma: no cover - compiled
    """One read of the power spectrum (n_frames, n_bins) for every metric that needs it.

    Frames are summed in steps of ``stride`` (the trailing partial step is dropped), each
    step in a buffer that stays in cache. Returns, per step, ``power @ weights`` (n_steps,)
    and the band sums (n_bands, n_steps) of bins ``band_lo[j]:band_hi[j]``; the column sums
    (n_bins,) over all steps but ``skip_steps`` at each end; and over those steps, cells
    (n_blocks, n_bins // block_bins): blocks of ``block_steps`` steps summed, then
    ``block_bins`` adjacent bins summed. Per step, one fused loop over the bins (few loops
    per step: their set-up, not the adds, is what costs at 200 bins); the bands' bins are
    kept per step and summed across all steps at once at the end.
    """
    n_frames, n_bins = power.shape
    n_bands = band_lo.shape[0]
    n_steps = n_frames // stride
    n_blocks = max(0, (n_steps - 2 * skip_steps) // block_steps)
    n_cells = n_bins // block_bins
    b0 = n_bins
    b1 = 0
    for j in range(n_bands):
        if band_hi[j] > band_lo[j]:
            b0 = min(b0, band_lo[j])
            b1 = max(b1, band_hi[j])
    width = max(0, b1 - b0)
    weighted = np.empty(n_steps, dtype=np.float32)
    colsum = np.zeros(n_bins, dtype=np.float32)
    cells = np.empty((n_blocks, n_cells), dtype=np.float32)
    sub = np.empty((width, n_steps), dtype=np.float32)  # the bands' bins, bin-major
    row = np.empty(n_bins, dtype=np.float32)
    block = np.empty(n_bins, dtype=np.float32)
    for st in range(n_steps):
        first = power[st * stride]
        if stride == 3:  # the default STFT's (32 ms of 10 ms hops): one loop, the same sums in the same order
            second = power[st * stride + 1]
            third = power[st * stride + 2]
            for b in range(n_bins):
                row[b] = first[b] + second[b] + third[b]
        else:
            for b in range(n_bins):
                row[b] = first[b]
            for t in range(1, stride):
                frame = power[st * stride + t]
                for b in range(n_bins):
                    row[b] += frame[b]
        u = st - skip_steps
        k = u // block_steps if u >= 0 else -1
        r = u - k * block_steps
        acc = np.float32(0.0)
        if 0 <= k < n_blocks:  # inside a block (and so inside the column sums' steps)
            if r == 0:
                for b in range(n_bins):
                    v = row[b]
                    acc += v * weights[b]
                    colsum[b] += v
                    block[b] = v
            else:
                for b in range(n_bins):
                    v = row[b]
                    acc += v * weights[b]
                    colsum[b] += v
                    block[b] += v
            if r == block_steps - 1:
                out = cells[k]
                lane = block[0 : n_cells * block_bins : block_bins]
                for c in range(n_cells):
                    out[c] = lane[c]
                for i in range(1, block_bins):
                    lane = block[i : n_cells * block_bins : block_bins]
                    for c in range(n_cells):
                        out[c] += lane[c]
        elif skip_steps <= st < n_steps - skip_steps:
            for b in range(n_bins):
                v = row[b]
                acc += v * weights[b]
                colsum[b] += v
        else:
            for b in range(n_bins):
                acc += row[b] * weights[b]
        weighted[st] = acc
        part = row[b0 : b0 + width]
        for b in range(width):
            sub[b, st] = part[b]
    bands = np.zeros((n_bands, n_steps), dtype=np.float32)
    for j in range(n_bands):
        if band_hi[j] > band_lo[j]:
            out = bands[j]
            lane = sub[band_lo[j] - b0]
            for st in range(n_steps):
                out[st] = lane[st]
            for b in range(band_lo[j] + 1, band_hi[j]):  # bin by bin, in order: the sums of a per-step loop
                lane = sub[b - b0]
                for st in range(n_steps):
                    out[st] += lane[st]
    return weighted, bands, colsum, cells


@numba.njit(cache=True, nogil=True)
def _select(a: np.ndarray, k: int):  # pragma: no cover - compiled
    """The ``k``-th smallest of ``a`` (reordered in place): quickselect, Hoare's partition
    around a median of three (a few lines to compile, where ``np.partition`` takes seconds)."""
    lo = 0
    hi = a.shape[0] - 1
    while lo < hi:
        x, y, z = a[lo], a[(lo + hi) // 2], a[hi]
        pivot = max(min(x, y), min(max(x, y), z))
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return a[k]


@numba.njit(cache=True, nogil=True, fastmath=True)
def low_quantile(cells: np.ndarray, k: int) -> np.ndarray:  # pragma: no cover - compiled
    """(n_cells,) the ``k``-th smallest (0-based) of each column of ``cells`` (n_blocks, n_cells).

    The ``k + 1`` smallest values of every column are kept sorted and each row is merged in
    branch-free, column by column (vectorised across columns): O(n_blocks k n_cells) with
    no data-dependent branch, cheaper than a selection per column while ``k`` is small; a
    partition per column beyond."""
    n_blocks, n_cells = cells.shape
    out = np.empty(n_cells, dtype=cells.dtype)
    if k >= 48:
        col = np.empty(n_blocks, dtype=cells.dtype)
        for c in range(n_cells):
            for i in range(n_blocks):
                col[i] = cells[i, c]
            out[c] = _select(col, k)
        return out
    low = np.full((k + 1, n_cells), 3.0e38, dtype=cells.dtype)  # finite (fastmath): k < n_blocks rows replace it
    for i in range(n_blocks):
        v = cells[i]
        # new[j] = min(low[j], max(low[j - 1], v)): inserts v, drops the largest
        for j in range(k, 0, -1):
            prev = low[j - 1]
            cur = low[j]
            for c in range(n_cells):  # selects, not min/max (whose NaN rules do not vectorise)
                x = prev[c] if prev[c] > v[c] else v[c]
                cur[c] = x if x < cur[c] else cur[c]
        first = low[0]
        for c in range(n_cells):
            first[c] = v[c] if v[c] < first[c] else first[c]
    for c in range(n_cells):
        out[c] = low[k, c]
    return out


@numba.njit(cache=True, nogil=True, fastmath=True)
def snr_terms(cells: np.ndarray, k: int, width: int):  # pragma: no cover - compiled
    """``(sum of cells, sum of the median_nearest(width)-filtered k-th smallest of each column)``
    of ``cells`` (n_blocks, n_cells), both float64: the SNR's total power and noise floor."""
    total = 0.0
    for i in range(cells.shape[0]):
        row = np.float32(0.0)
        for c in range(cells.shape[1]):
            row += cells[i, c]
        total += row
    floor = median_nearest(low_quantile(cells, k), width)
    noise = 0.0
    for c in range(floor.shape[0]):
        noise += floor[c]
    return total, noise


@numba.njit(cache=True, nogil=True)
def bandwidth_bin(colsum: np.ndarray, floor_ratio: float, steep_ratio: float) -> int:  # pragma: no cover - compiled
    """Highest bin whose ``colsum`` is at least ``floor_ratio`` of the largest, walked down
    while the bin below is more than ``steep_ratio`` times louder; -1 when all are zero."""
    top = 0.0
    for b in range(colsum.shape[0]):
        top = max(top, np.float64(colsum[b]))
    if not top > 0.0:
        return -1
    level = top * floor_ratio
    b = colsum.shape[0] - 1
    while b > 0 and not np.float64(colsum[b]) >= level:
        b -= 1
    while b > 0 and np.float64(colsum[b - 1]) > np.float64(colsum[b]) * steep_ratio:
        b -= 1
    return b


@numba.njit(cache=True, nogil=True)
def gated_loudness(weighted: np.ndarray, factor: float, first_centre: float, hop: int, stride: int, n_samples: int, block: int,
                   step: int, absolute_lufs: float, relative_lu: float, floor_lufs: float) -> float:  # pragma: no cover - compiled
    """BS.1770 gating over steps' K-weighted mean squares ``weighted * factor``; step ``i`` is
    centred at sample ``first_centre + hop * (i * stride + (stride - 1) / 2)``, and a block's
    power is the mean of the steps whose centres fall in it."""
    n = weighted.shape[0]
    n_blocks = (n_samples - block) // step + 1 if n_samples >= block else 0
    power = np.empty(n_blocks, dtype=np.float64)
    offset = first_centre + hop * (stride - 1) / 2.0
    m = 0
    lo = 0
    hi = 0
    acc = 0.0
    for k in range(n_blocks):
        start = k * step
        while hi < n and offset + hop * hi * stride < start + block:
            acc += np.float64(weighted[hi]) * factor
            hi += 1
        while lo < hi and offset + hop * lo * stride < start:
            acc -= np.float64(weighted[lo]) * factor
            lo += 1
        if hi > lo:
            power[m] = max(acc, 0.0) / (hi - lo)
            m += 1
    # the gates compared as powers (a block's loudness is -0.691 + 10 log10(power)): no log per block
    gate = 10.0 ** ((absolute_lufs + 0.691) / 10.0)
    total = 0.0
    count = 0
    for k in range(m):
        if power[k] > gate:
            total += power[k]
            count += 1
    if count == 0:
        return floor_lufs
    gate = max(gate, total / count * 10.0 ** (relative_lu / 10.0))
    total2 = 0.0
    count2 = 0
    for k in range(m):
        if power[k] > gate:
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
    order = np.argsort(h[:m])
    keys = np.empty(min(k, m), dtype=np.uint64)
    frames = np.empty(min(k, m), dtype=np.int32)
    out = 0
    for r in range(m):
        v = h[order[r]]
        if out > 0 and keys[out - 1] == v:  # a repeated pair: its first frame (quicksort is not stable)
            frames[out - 1] = min(frames[out - 1], frame[order[r]])
            continue
        if out >= k:
            break
        keys[out] = v
        frames[out] = frame[order[r]]
        out += 1
    return keys[:out], frames[:out]


@numba.njit(cache=True, nogil=True)
def philips_codes(bands: np.ndarray, pool: int, stride: int, lag: int, active_ratio: float,
                  abs_floor: float, band_ratio: float, min_bands: int) -> np.ndarray:  # pragma: no cover - compiled
    """Sub-fingerprints from band energies (n_bands, n_frames): energies summed over ``pool``
    frames every ``stride``; per step, bit ``j`` = sign of the change over ``lag`` steps of
    (band ``j`` - band ``j + 1``); -1 where the step's energy is below ``active_ratio`` of the
    loudest step or below ``abs_floor``, or fewer than ``min_bands`` bands are within
    ``band_ratio`` of the step's strongest. Every loop runs along the steps (vectorised), each
    sum in the same order as a loop per step would take."""
    n_bands, n_frames = bands.shape
    n = (n_frames - pool) // stride + 1 if n_frames >= pool else 0
    if n <= lag:
        return np.zeros(0, dtype=np.int32)
    m = n - lag
    e = np.zeros((n_bands, n), dtype=np.float64)
    for j in range(n_bands):
        out = e[j]
        for t in range(pool):
            lane = bands[j, t : t + (n - 1) * stride + 1 : stride]
            for s in range(n):
                out[s] += lane[s]
    level = np.zeros(m, dtype=np.float64)
    peak = np.zeros(m, dtype=np.float64)
    for j in range(n_bands):
        now = e[j, lag:]
        for s in range(m):
            level[s] += now[s]
            peak[s] = now[s] if now[s] > peak[s] else peak[s]
    top = 0.0
    for s in range(m):
        top = level[s] if level[s] > top else top
    strong = np.zeros(m, dtype=np.int64)
    codes = np.zeros(m, dtype=np.int32)
    for j in range(n_bands):
        now = e[j, lag:]
        for s in range(m):
            strong[s] += 1 if now[s] >= peak[s] * band_ratio else 0
        if j + 1 < n_bands:
            nxt = e[j + 1, lag:]
            was = e[j, :m]
            was_nxt = e[j + 1, :m]
            bit = np.int32(1 << j)
            for s in range(m):
                if (now[s] - nxt[s]) - (was[s] - was_nxt[s]) > 0:
                    codes[s] |= bit
    for s in range(m):
        if not (level[s] > top * active_ratio and level[s] > abs_floor and strong[s] >= min_bands):
            codes[s] = -1
    return codes


@numba.njit(cache=True, nogil=True)
def median_nearest(x: np.ndarray, width: int) -> np.ndarray:  # pragma: no cover - compiled
    """``scipy.ndimage.median_filter(x, size=width, mode="nearest")`` for odd ``width`` (1-D).

    The window is kept sorted as it slides: one value leaves and one enters per step (the
    window of ``i`` reads ``x[clip(i - half + j, 0, n - 1)]``, so consecutive windows differ
    by exactly those two)."""
    n = x.shape[0]
    half = width // 2
    out = np.empty(n, dtype=x.dtype)
    if n == 0:
        return out
    buf = np.empty(width, dtype=x.dtype)
    for j in range(width):  # insertion sort of the first window
        v = x[min(n - 1, max(0, j - half))]
        p = j
        while p > 0 and buf[p - 1] > v:
            buf[p] = buf[p - 1]
            p -= 1
        buf[p] = v
    for i in range(n):
        out[i] = buf[half]
        if i + 1 == n:
            break
        gone = x[min(n - 1, max(0, i - half))]
        new = x[min(n - 1, i + half + 1)]
        p = 0
        while p + 1 < width and buf[p] != gone:  # (NaN never equals: stop at the end)
            p += 1
        while p > 0 and buf[p - 1] > new:  # put ``new`` where ``gone`` was, then move it into order
            buf[p] = buf[p - 1]
            p -= 1
        while p + 1 < width and buf[p + 1] < new:
            buf[p] = buf[p + 1]
            p += 1
        buf[p] = new
    return out


@numba.njit(cache=True, nogil=True)
def spectral_metrics(power, skip_steps, n_samples, weights, band_lo, band_hi, stride, block_steps, block_bins,
                     factor, first_centre, hop, block, step, absolute_lufs, relative_lu, floor_lufs,
                     quantile, width, floor_ratio, steep_ratio,
                     pool, lag, active_ratio, abs_floor, band_ratio, min_bands, sketch_k, inactive):  # pragma: no cover - compiled
    """Every spectral metric in one call, from the kernels the per-metric functions call:
    ``(loudness LUFS, SNR total, SNR noise floor (unbiased by the caller), blocks, bandwidth
    bin (-1: none), fingerprint codes, sketch keys, sketch frames)``. The arguments after
    ``n_samples`` are fixed per STFT plan and settings."""
    weighted, bands, colsum, cells = spectral_pass(power, weights, band_lo, band_hi, stride, skip_steps, block_steps, block_bins)
    loudness = floor_lufs
    if weighted.shape[0] > 0 and n_samples >= block:
        loudness = gated_loudness(weighted, factor, first_centre, hop, stride, n_samples, block, step, absolute_lufs, relative_lu,
                                  floor_lufs)
    n_blocks = cells.shape[0]
    total = 0.0
    noise = 0.0
    if n_blocks >= 4:
        total, noise = snr_terms(cells, int(quantile * (n_blocks - 1)), width)
    band = -1
    if weighted.shape[0] - 2 * skip_steps > 0:
        band = bandwidth_bin(colsum, floor_ratio, steep_ratio)
    codes = philips_codes(bands, pool, 1, lag, active_ratio, abs_floor, band_ratio, min_bands)
    if codes.shape[0] >= 2:
        keys, frames = sketch_keys(codes, sketch_k, inactive)
    else:
        keys, frames = np.zeros(0, np.uint64), np.zeros(0, np.int32)
    return loudness, total, noise, n_blocks, band, codes, keys, frames


@numba.njit(cache=True, nogil=True)
def sample_metrics(y, bits, frame, speech_power, silence_power, hash_it):  # pragma: no cover - compiled
    """:func:`sample_summary` and, when ``hash_it``, XXH3-128 of the same samples in one call
    (two loops, back to back: the second reads from cache)."""
    out = sample_summary(y, bits, frame, speech_power, silence_power)
    high = np.uint64(0)
    low = np.uint64(0)
    if hash_it:
        high, low = _xxh3.xxh3_128_words(bits)
    return out, high, low
