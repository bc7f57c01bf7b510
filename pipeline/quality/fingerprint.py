"""Fingerprints for duplicate detection: an exact PCM hash and a robust binary fingerprint.

The near-duplicate fingerprint is the Philips (Haitsma & Kalker) sub-fingerprint on the
shared quality spectrum: per frame, 16 bits, the sign of the time derivative of the energy
difference between adjacent bands of 17 log-spaced bands from 300 to 3000 Hz. Below 3 kHz it
survives 8 kHz resampling and MP3 low-pass; differences of energies ignore gain. Band
energies are smoothed over :data:`SMOOTH_FRAMES` frames first, so a shift by part of a hop
(a trim) flips few bits.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
from scipy.ndimage import uniform_filter1d

from pipeline.quality.metrics import Spectra

N_BANDS = 17
BITS = N_BANDS - 1
BAND_LOW_HZ = 300.0
BAND_HIGH_HZ = 3000.0
SMOOTH_FRAMES = 1
LAG_FRAMES = 1
#: frames more than this far below the clip's loudest frame (in the fingerprint bands) are inactive
ACTIVE_RANGE_DB = 45.0
#: the value of an inactive frame (no 16-bit pattern has it)
INACTIVE = -1
#: sub-fingerprints kept as a clip's index keys (the smallest by hash: a bottom-k sketch)
SKETCH_KEYS = 64


def pcm_hash(y: np.ndarray) -> str:
    """Hex digest of the decoded, resampled float32 PCM: identical audio in any container."""
    return hashlib.blake2b(np.ascontiguousarray(y, dtype=np.float32), digest_size=16).hexdigest()  # the buffer itself, not a copy


@lru_cache(maxsize=8)
def _band_matrix(n_bins: int, bin_hz: float) -> np.ndarray:
    edges = np.geomspace(BAND_LOW_HZ, BAND_HIGH_HZ, N_BANDS + 1)
    f = np.arange(n_bins) * bin_hz
    m = np.zeros((n_bins, N_BANDS), np.float32)
    for b in range(N_BANDS):
        m[(f >= edges[b]) & (f < edges[b + 1]), b] = 1.0
    return m


def fingerprint(spectra: Spectra, sample_rate: int) -> tuple[np.ndarray, float]:
    """``(codes, frame_seconds)``: one int32 per frame, a 16-bit pattern or :data:`INACTIVE`."""
    p = spectra.power
    hop_s = spectra.hop / sample_rate
    if p.shape[0] <= LAG_FRAMES:
        return np.zeros(0, np.int32), hop_s
    bin_hz = float(spectra.freqs_hz[1])
    e = p @ _band_matrix(p.shape[1], bin_hz)
    e = uniform_filter1d(e, SMOOTH_FRAMES, axis=0, mode="nearest")
    d = e[:, :-1] - e[:, 1:]
    bits = (d[LAG_FRAMES:] - d[:-LAG_FRAMES]) > 0
    codes = (bits.astype(np.int32) << np.arange(BITS, dtype=np.int32)).sum(axis=1).astype(np.int32)
    level = e.sum(axis=1)[LAG_FRAMES:]
    top = float(level.max())
    active = (level > top * 10.0 ** (-ACTIVE_RANGE_DB / 10.0)) & (level > 1e-10)
    codes[~active] = INACTIVE
    return codes, hop_s


def _mix64(x: np.ndarray) -> np.ndarray:
    """A fixed 64-bit mixing function (splitmix64's finaliser): the sketch's hash order."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def sketch(codes: np.ndarray, k: int = SKETCH_KEYS) -> tuple[np.ndarray, np.ndarray]:
    """Index keys of a clip: ``(keys uint64 (<=k,), frames int32 (<=k,))``, the ``k`` smallest
    hashes of its distinct pairs of adjacent sub-fingerprints, and the frame of each. Clips
    sharing a key are candidate duplicates, aligned by the difference of its frames."""
    if codes.size < 2:
        return np.zeros(0, np.uint64), np.zeros(0, np.int32)
    a, b = codes[:-1], codes[1:]
    ok = np.flatnonzero((a != INACTIVE) & (b != INACTIVE))
    pairs = (a[ok].astype(np.uint64) << np.uint64(16)) | b[ok].astype(np.uint64)
    h, first = np.unique(_mix64(pairs), return_index=True)
    return h[:k], ok[first[:k]].astype(np.int32)


def popcount16(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint32)
    x = x - ((x >> 1) & 0x5555)
    x = (x & 0x3333) + ((x >> 2) & 0x3333)
    x = (x + (x >> 4)) & 0x0F0F
    return (x + (x >> 8)) & 0x1F


def similarity(a: np.ndarray, b: np.ndarray, *, max_offset: int, min_overlap: float, offsets: range | None = None) -> float:
    """Best share of agreeing bits between two fingerprints over shifts up to ``max_offset`` frames
    (or over ``offsets``: frame ``i`` of ``a`` against frame ``i + off`` of ``b``),
    counting frames active in both; 0.0 when no shift overlaps ``min_overlap`` of the longer
    clip's active frames."""
    na, nb = int(np.count_nonzero(a != INACTIVE)), int(np.count_nonzero(b != INACTIVE))
    # both clips mostly covered: a copy, not an excerpt of a longer recording
    need = max(1, int(np.ceil(min_overlap * max(na, nb))))
    if min(na, nb) == 0:
        return 0.0
    best = 0.0
    for off in offsets if offsets is not None else range(-max_offset, max_offset + 1):
        if abs(off) > max_offset:
            continue
        # frame i of a against frame i + off of b
        lo, hi = max(0, -off), min(a.size, b.size - off)
        if hi - lo < need:
            continue
        x, y = a[lo:hi], b[lo + off : hi + off]
        both = (x != INACTIVE) & (y != INACTIVE)
        n = int(np.count_nonzero(both))
        if n < need:
            continue
        agree = 1.0 - float(popcount16(x[both] ^ y[both]).sum()) / (BITS * n)
        best = max(best, agree)
    return best
