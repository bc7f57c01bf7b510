"""XXH3-128 (xxHash 0.8, seed 0, default secret) of long inputs, compiled with numba.

The exact PCM hash (:func:`pipeline.quality.fingerprint.pcm_hash`) hashes every byte of a
clip's samples: at the metrics' budget that must run near memory speed. XXH3 is built for
that (SIMD-friendly 32x32->64-bit multiply-accumulate over 64-byte stripes), and its output
is specified: any xxHash binding gives the same digest of the same bytes
(``xxhash.xxh3_128_intdigest(y.astype("<f4").tobytes())``). Only inputs over 240 bytes take
XXH3's "long" path implemented here; callers hash shorter ones otherwise.

Each 1 KiB block's 16 stripes are summed lane-wise (adds wrap modulo 2**64, so any order
gives the same sums) before the block's scramble: contiguous loops that the compiler
vectorises, where the textbook stripe-by-stripe loop does not.
"""

from __future__ import annotations

import numba
import numpy as np

_SECRET = bytes.fromhex(
    "b8fe6c3923a44bbe7c01812cf721ad1cded46de9839097db7240a4a4b7b3671f"
    "cb79e64eccc0e578825ad07dccff7221b8084674f743248ee03590e6813a264c"
    "3c2852bb91c300cb88d0658b1b532ea371644897a20df94e3819ef46a9deacd8"
    "a8fa763fe39c343ff9dcbbc7c70b4f1d8a51e04bcdb45931c89f7ec9d9787364"
    "eac5ac8334d3ebc3c581a0fffa1363eb170ddd51b7f0da49d316552629d4689e"
    "2b16be587d47a1fc8ff8b8d17ad031ce45cb3a8f95160428afd7fbcabb4b407e"
)
#: the secret's little-endian 64-bit word starting at each byte offset (merges read odd offsets)
_WORD_AT = np.array([int.from_bytes(_SECRET[o : o + 8], "little") for o in range(len(_SECRET) - 7)], np.uint64)
#: key of the j-th 64-bit word of a block: stripe j // 8 reads the secret from byte 8 * (j // 8)
_BLOCK_KEYS = np.array([_WORD_AT[8 * (j // 8) + 8 * (j % 8)] for j in range(128)], np.uint64)
_SCRAMBLE_KEYS = _WORD_AT[128:192:8].copy()

_P32_1, _P32_2, _P32_3 = 0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D
_P64_1, _P64_2, _P64_3, _P64_4, _P64_5 = (0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x85EBCA77C2B2AE63,
                                         0x27D4EB2F165667C5)
_MX1 = 0x165667919E3779F9
#: XXH3 reads up to this many bytes on its short paths; longer inputs take the path here
MIN_BYTES = 241


@numba.njit(cache=True, nogil=True, inline="always")
def _stripe(acc, w, at, key_at):  # pragma: no cover - compiled
    """Accumulate the 64-byte stripe at 32-bit word ``at`` of ``w`` with the secret from byte ``key_at``."""
    for i in range(8):
        v = np.uint64(w[at + 2 * i]) | (np.uint64(w[at + 2 * i + 1]) << np.uint64(32))
        k = v ^ _WORD_AT[key_at + 8 * i]
        acc[i ^ 1] += v
        acc[i] += (k & np.uint64(0xFFFFFFFF)) * (k >> np.uint64(32))


@numba.njit(cache=True, nogil=True, inline="always")
def _fold128(a, b):  # pragma: no cover - compiled
    """Low 64 bits xor high 64 bits of the 128-bit product ``a * b``."""
    m = np.uint64(0xFFFFFFFF)
    s = np.uint64(32)
    lo_lo = (a & m) * (b & m)
    hi_lo = (a >> s) * (b & m)
    lo_hi = (a & m) * (b >> s)
    hi_hi = (a >> s) * (b >> s)
    cross = (lo_lo >> s) + (hi_lo & m) + lo_hi
    return ((cross << s) | (lo_lo & m)) ^ ((hi_lo >> s) + (cross >> s) + hi_hi)


@numba.njit(cache=True, nogil=True, inline="always")
def _merge(acc, key_at, start):  # pragma: no cover - compiled
    r = start
    for i in range(4):
        r += _fold128(acc[2 * i] ^ _WORD_AT[key_at + 16 * i], acc[2 * i + 1] ^ _WORD_AT[key_at + 16 * i + 8])
    r ^= r >> np.uint64(37)
    r *= np.uint64(_MX1)
    return r ^ (r >> np.uint64(32))


@numba.njit(cache=True, nogil=True)
def xxh3_128_words(w: np.ndarray) -> tuple[int, int]:  # pragma: no cover - compiled
    """``(high64, low64)`` of XXH3-128 of the bytes of ``w`` (uint32, C-contiguous, at least
    :data:`MIN_BYTES` bytes)."""
    d = w[: w.shape[0] & ~1].view(np.uint64)
    n_bytes = 4 * w.shape[0]
    acc = np.empty(8, np.uint64)
    acc[0], acc[1], acc[2], acc[3] = _P32_3, _P64_1, _P64_2, _P64_3
    acc[4], acc[5], acc[6], acc[7] = _P64_4, _P32_2, _P64_5, _P32_1
    n_blocks = (n_bytes - 1) // 1024
    p = np.empty(64, np.uint64)  # data words, lane-wise sums
    q = np.empty(64, np.uint64)  # keyed products, lane-wise sums
    lane_p = np.empty(8, np.uint64)
    lane_q = np.empty(8, np.uint64)
    m = np.uint64(0xFFFFFFFF)
    s = np.uint64(32)
    for blk in range(n_blocks):
        base = 128 * blk
        for j in range(64):
            x0 = d[base + j]
            x1 = d[base + 64 + j]
            k0 = x0 ^ _BLOCK_KEYS[j]
            k1 = x1 ^ _BLOCK_KEYS[64 + j]
            p[j] = x0 + x1
            q[j] = (k0 & m) * (k0 >> s) + (k1 & m) * (k1 >> s)
        for i in range(8):  # lane sums: eight contiguous loads and adds per array (vectorised)
            lane_p[i] = p[i] + p[i + 8] + p[i + 16] + p[i + 24] + p[i + 32] + p[i + 40] + p[i + 48] + p[i + 56]
            lane_q[i] = q[i] + q[i + 8] + q[i + 16] + q[i + 24] + q[i + 32] + q[i + 40] + q[i + 48] + q[i + 56]
        for i in range(8):
            a = acc[i] + lane_p[i ^ 1] + lane_q[i]
            a ^= a >> np.uint64(47)
            a ^= _SCRAMBLE_KEYS[i]
            acc[i] = a * np.uint64(_P32_1)
    for st in range(((n_bytes - 1) - 1024 * n_blocks) // 64):
        _stripe(acc, w, 256 * n_blocks + 16 * st, 8 * st)
    _stripe(acc, w, w.shape[0] - 16, len(_SECRET) - 64 - 7)
    length = np.uint64(n_bytes)
    low = _merge(acc, 11, length * np.uint64(_P64_1))
    high = _merge(acc, len(_SECRET) - 64 - 11, ~(length * np.uint64(_P64_2)))
    return high, low


def xxh3_128(x: np.ndarray) -> int:
    """XXH3-128 of the bytes of a C-contiguous ``x`` whose size in bytes is a multiple of 4 and
    at least :data:`MIN_BYTES` (little-endian hosts: the bytes as stored)."""
    w = x.reshape(-1).view(np.uint32)
    if 4 * w.size < MIN_BYTES:
        raise ValueError(f"XXH3's long path needs at least {MIN_BYTES} bytes, not {4 * w.size}")
    high, low = xxh3_128_words(w)
    return (int(high) << 64) | int(low)
