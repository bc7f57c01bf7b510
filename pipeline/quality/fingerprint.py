"""Fingerprints for duplicate detection: an exact PCM hash and a robust binary fingerprint.

The near-duplicate fingerprint is the Philips (Haitsma & Kalker) sub-fingerprint on the
features' power spectrum: the energies of 17 log-spaced bands from 300 to 3000 Hz are
summed over :data:`POOL_STEPS` 32 ms steps of STFT frames, every step (a long analysis
window from short frames: a trim's shift by part of a step flips few bits); per step,
16 bits, the sign of the time derivative of the energy difference between adjacent bands.
Below 3 kHz it survives 8 kHz resampling and MP3 low-pass; differences of energies ignore gain.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np

from pipeline.quality import _kernels, _xxh3
from pipeline.quality.align import pair_agreements
from pipeline.quality.spectrum import Spectra

N_BANDS = 17
BITS = N_BANDS - 1
BAND_LOW_HZ = 300.0
BAND_HIGH_HZ = 3000.0
LAG_FRAMES = 1
#: a fingerprint frame: band energies summed over this many metric steps (of
#: pipeline.quality.spectrum.STEP_SECONDS), one frame per step
POOL_STEPS = 3
#: frames more than this far below the clip's loudest frame (in the fingerprint bands) are inactive
ACTIVE_RANGE_DB = 45.0
#: a frame is also inactive when fewer than MIN_BANDS bands are within BAND_RANGE_DB of its
#: strongest: a tone or a chirp fills one or two bands, and the others hold only the STFT
#: window's leakage, whose bits follow the tone's motion alike in every such clip
BAND_RANGE_DB = 30.0
MIN_BANDS = 6
#: fewer frames active in both clips than this tell nothing (a few bits agree by chance)
MIN_ACTIVE_FRAMES = 8
#: the value of an inactive frame (no 16-bit pattern has it)
INACTIVE = -1
#: bump when the fingerprint or the PCM hash changes: the duplicate index compares only
#: partition files of the current version (2: on the features' STFT, CRC-32C hash; 3: XXH3-128 hash)
FINGERPRINT_VERSION = 3
#: sub-fingerprints kept as a clip's index keys (the smallest by hash: a bottom-k sketch)
SKETCH_KEYS = 64


def pcm_hash(y: np.ndarray) -> str:
    """32 hex digits of the decoded, resampled float32 PCM: identical audio in any container.

    XXH3-128 (xxHash 0.8, seed 0) of the samples' float32 little-endian bytes, as the
    canonical hex of any xxHash binding (``xxhash.xxh3_128_hexdigest(y.astype("<f4").tobytes())``);
    a clip of 60 samples or fewer (under 241 bytes, XXH3's short paths) takes BLAKE2b-128
    of the same bytes instead. The length enters the hash. XXH3 is not cryptographic: any
    two different clips collide with odds of about 2**-128 (the duplicate index keys on the
    first 16 digits, 64 bits: about 3e-8 odds of any accidental collision among a million
    clips), but two colliding clips can be crafted on purpose. Compiled
    (:mod:`pipeline.quality._xxh3`): about 10 us per 8 s clip at 16 kHz, where BLAKE2b takes 360.
    """
    x = np.ascontiguousarray(y, dtype=np.float32)  # the buffer itself when it already is
    if 4 * x.size < _xxh3.MIN_BYTES:
        return hashlib.blake2b(x.tobytes(), digest_size=16).hexdigest()
    return f"{_xxh3.xxh3_128(x):032x}"


def xxh3_hex(high: int, low: int) -> str:
    """:func:`pcm_hash`'s digits from XXH3-128's two halves (computed with the levels:
    :func:`pipeline.quality._kernels.sample_metrics`)."""
    return f"{high:016x}{low:016x}"


@lru_cache(maxsize=8)
def band_matrix(n_bins: int, bin_hz: float) -> np.ndarray:
    """(n_bins, :data:`N_BANDS`) float32: which bins each fingerprint band sums."""
    edges = np.geomspace(BAND_LOW_HZ, BAND_HIGH_HZ, N_BANDS + 1)
    f = np.arange(n_bins) * bin_hz
    m = np.zeros((n_bins, N_BANDS), np.float32)
    for b in range(N_BANDS):
        m[(f >= edges[b]) & (f < edges[b + 1]), b] = 1.0
    return m




@lru_cache(maxsize=8)
def band_ranges(n_bins: int, bin_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` int64 (N_BANDS,): band ``j`` sums bins ``lo[j]:hi[j]`` (as :func:`band_matrix`)."""
    m = band_matrix(n_bins, bin_hz)
    lo, hi = np.zeros(N_BANDS, np.int64), np.zeros(N_BANDS, np.int64)
    for j in range(N_BANDS):
        nz = np.flatnonzero(m[:, j])
        if nz.size:
            lo[j], hi[j] = nz[0], nz[-1] + 1
    return lo, hi


def fingerprint(spectra: Spectra) -> tuple[np.ndarray, float]:
    """``(codes, frame_seconds)``: one int32 per step, a 16-bit pattern or :data:`INACTIVE`."""
    r = spectra.reduced
    codes = _kernels.philips_codes(r.bands, POOL_STEPS, 1, LAG_FRAMES, 10.0 ** (-ACTIVE_RANGE_DB / 10.0),
                                   abs_floor(r.stride, spectra.scale), 10.0 ** (-BAND_RANGE_DB / 10.0), MIN_BANDS)
    return codes, r.stride * spectra.hop / spectra.sample_rate


def abs_floor(stride: int, scale: float) -> float:
    """A fingerprint frame's absolute floor in unscaled band power: 1e-10 of the density."""
    return 1e-10 * POOL_STEPS * stride / scale


def _mix64(x: np.ndarray) -> np.ndarray:
    """A fixed 64-bit mixing function (splitmix64's finaliser): the sketch's hash order."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def sketch(codes: np.ndarray, k: int = SKETCH_KEYS) -> tuple[np.ndarray, np.ndarray]:
    """Index keys of a clip: ``(keys uint64 (<=k,), frames int32 (<=k,))``, the ``k`` smallest
    hashes (:func:`_mix64`) of its distinct pairs of adjacent sub-fingerprints, and the frame
    of each. Clips sharing a key are candidate duplicates, aligned by the difference of their frames."""
    if codes.size < 2:
        return np.zeros(0, np.uint64), np.zeros(0, np.int32)
    return _kernels.sketch_keys(np.ascontiguousarray(codes, dtype=np.int32), k, INACTIVE)


def similarity(a: np.ndarray, b: np.ndarray, *, max_offset: int, min_overlap: float, offsets: range | None = None) -> float:
    """Best share of agreeing bits between two fingerprints over shifts up to ``max_offset`` frames
    (or over ``offsets``: frame ``i`` of ``a`` against frame ``i + off`` of ``b``),
    counting frames active in both; 0.0 when no shift overlaps ``min_overlap`` of the longer
    clip's active frames, or :data:`MIN_ACTIVE_FRAMES` frames."""
    offs = np.arange(-max_offset, max_offset + 1) if offsets is None else np.unique(np.asarray(list(offsets), dtype=np.int64))
    if offs.size == 0:
        return 0.0
    # one pair of the duplicate reduction's compiled comparison (the same overlap rule)
    codes = np.concatenate([np.asarray(a, dtype=np.int32), np.asarray(b, dtype=np.int32)])
    active = np.array([np.count_nonzero(a != INACTIVE), np.count_nonzero(b != INACTIVE)], dtype=np.int64)
    one = np.zeros(1, np.int64)
    return float(pair_agreements(codes, np.array([0, a.size], np.int64), np.array([a.size, b.size], np.int64), active, one, one + 1,
                                 np.array([0, offs.size], np.int64), offs, 0, int(max_offset), float(min_overlap), MIN_ACTIVE_FRAMES,
                                 INACTIVE, BITS)[0])
