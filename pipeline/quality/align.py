"""Compiled comparison of two fingerprints at given alignments (the duplicate reduction's
inner loop: tens of thousands of candidate pairs on a corpus with many near copies)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def best_agreement(a: np.ndarray, b: np.ndarray, offsets: np.ndarray, max_offset: int, need: int, inactive: int,
                   bits: int) -> float:  # pragma: no cover - compiled
    """Best share of agreeing bits of int32 codes ``a`` (n,) and ``b`` (m,) over ``offsets``
    (frame ``i`` of ``a`` against ``i + off`` of ``b``), counting frames active in both; an
    offset beyond ``max_offset`` or with fewer than ``need`` such frames is skipped (0.0 if all are)."""
    best = 0.0
    for k in range(offsets.shape[0]):
        off = offsets[k]
        if abs(off) > max_offset:
            continue
        lo = max(0, -off)
        hi = min(a.shape[0], b.shape[0] - off)
        if hi - lo < need:
            continue
        n = 0
        diff = 0
        for i in range(lo, hi):
            x = a[i]
            y = b[i + off]
            if x != inactive and y != inactive:
                n += 1
                v = (x ^ y) & 0xFFFF
                v = v - ((v >> 1) & 0x5555)
                v = (v & 0x3333) + ((v >> 2) & 0x3333)
                v = (v + (v >> 4)) & 0x0F0F
                diff += (v + (v >> 8)) & 0x1F
        if n < need:
            continue
        agree = 1.0 - diff / (bits * n)
        if agree > best:
            best = agree
    return best


@numba.njit(cache=True, nogil=True)
def candidate_pairs(starts: np.ndarray, sizes: np.ndarray, member: np.ndarray, frame: np.ndarray):  # pragma: no cover - compiled
    """Pairs of clips that share a sketch key, with the alignment each shared key implies.

    ``starts``/``sizes``: groups of equal keys (in arrays sorted by key); ``member`` (int64)
    names the clip of each key, ``frame`` the frame it was taken at. Returns ``(a, b, offset)``
    int64 arrays with ``a < b``: frame ``i`` of ``a`` matches frame ``i + offset`` of ``b``
    (a pair sharing several keys appears once per key; the caller makes rows unique).
    """
    total = 0
    for g in range(starts.shape[0]):
        n = sizes[g]
        total += n * (n - 1) // 2
    pa = np.empty(total, np.int64)
    pb = np.empty(total, np.int64)
    po = np.empty(total, np.int64)
    k = 0
    for g in range(starts.shape[0]):
        s = starts[g]
        e = s + sizes[g]
        for i in range(s, e):
            for j in range(i + 1, e):
                a = member[i]
                b = member[j]
                if a == b:
                    continue
                fa = frame[i]
                fb = frame[j]
                if b < a:
                    a, b = b, a
                    fa, fb = fb, fa
                pa[k] = a
                pb[k] = b
                po[k] = fb - fa
                k += 1
    return pa[:k], pb[:k], po[:k]


@numba.njit(cache=True, nogil=True)
def pair_agreements(codes: np.ndarray, code_start: np.ndarray, code_len: np.ndarray, active: np.ndarray, ia: np.ndarray,
                    ib: np.ndarray, off_start: np.ndarray, offsets: np.ndarray, slack: int, max_offset: int, min_overlap: float,
                    min_active: int, inactive: int, bits: int) -> np.ndarray:  # pragma: no cover - compiled
    """:func:`best_agreement` of many pairs: pair ``p`` compares clips ``ia[p]`` and ``ib[p]``
    (their codes at ``codes[code_start[c] : code_start[c] + code_len[c]]``, ``active[c]``
    active frames) at every offset within ``slack`` of one of its sorted ``offsets[off_start[p]
    : off_start[p + 1]]``, each once; the overlap needed is ``max(min_active, ceil(min_overlap *
    max(active)))``, and a clip with fewer than ``min_active`` active frames matches nothing (0.0)."""
    out = np.zeros(ia.shape[0], np.float64)
    tries = np.empty(0, np.int64)
    for p in range(ia.shape[0]):
        a, b = ia[p], ib[p]
        na, nb = active[a], active[b]
        if min(na, nb) < min_active:
            continue
        need = max(min_active, int(np.ceil(min_overlap * max(na, nb))))
        lo, hi = off_start[p], off_start[p + 1]
        if tries.shape[0] < (hi - lo) * (2 * slack + 1):
            tries = np.empty((hi - lo) * (2 * slack + 1), np.int64)
        n = 0
        nxt = offsets[lo] - slack
        for q in range(lo, hi):  # the union of [o - slack, o + slack], in order
            first = max(offsets[q] - slack, nxt)
            for off in range(first, offsets[q] + slack + 1):
                tries[n] = off
                n += 1
            nxt = max(nxt, offsets[q] + slack + 1)
        ca = codes[code_start[a] : code_start[a] + code_len[a]]
        cb = codes[code_start[b] : code_start[b] + code_len[b]]
        out[p] = best_agreement(ca, cb, tries[:n], max_offset, need, inactive, bits)
    return out
