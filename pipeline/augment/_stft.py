"""Float32 STFT, inverse STFT and phase vocoder shared by time_stretch and pitch_shift.

Same algorithm and conventions as librosa (``center=True`` with zero padding, periodic
Hann window, ``hop_length = n_fft // 4``, linear magnitude interpolation, phase
accumulation from the first frame), but in float32 / complex64, time-major
``(n_frames, n_bins)``, with windows cached per ``n_fft``, and processed in blocks of
``BLOCK_FRAMES`` frames so that temporaries stay small and in cache (librosa's own
``phase_vocoder`` loops over output frames in Python; one whole-signal temporary per
numpy operation costs more here in page faults than the arithmetic does).

The phase vocoder is librosa 0.10 / 0.11's: two zero frames after the last input frame.
librosa 1.0 rewrote its ``phase_vocoder`` (the magnitude extrapolated from the last two
frames, a zero last phase increment), which changes only the output frames at or after
step ``n_frames - 1``. Ours does not follow, so augmented copies do not depend on the
librosa installed; tests/test_augment_stft.py compares the frames both compute alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np

N_FFT = 2048
"""STFT size used by time_stretch and pitch_shift (librosa's default)."""

BLOCK_FRAMES = 64
"""Frames per block: 64 x 1025 bins x 4 bytes = 262 kB per float32 temporary."""

_TWO_PI = 2.0 * np.pi


@lru_cache(maxsize=8)
def _window(n_fft: int) -> np.ndarray:
    import scipy.signal  # imported on first use: 0.5-1.6 s that runs without augmentation never pay

    w = scipy.signal.get_window("hann", n_fft, fftbins=True).astype(np.float32)
    w.flags.writeable = False
    return w


@lru_cache(maxsize=8)
def _phase_advance(n_fft: int, hop_length: int) -> np.ndarray:
    """Expected phase advance per hop of each bin, wrapped to [0, 2 pi) (float32)."""
    adv = _TWO_PI * hop_length * np.arange(n_fft // 2 + 1, dtype=np.float64) / n_fft
    out = np.mod(adv, _TWO_PI).astype(np.float32)
    out.flags.writeable = False
    return out


def _hop(n_fft: int, hop_length: int | None) -> int:
    hop_length = n_fft // 4 if hop_length is None else hop_length
    if n_fft % hop_length:
        raise ValueError(f"n_fft ({n_fft}) must be a multiple of hop_length ({hop_length})")
    return hop_length


def _analysis_blocks(y: np.ndarray, n_fft: int, hop_length: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, stop, spectrum block)`` of the centred, Hann-windowed STFT of ``y``."""
    import scipy.fft  # here, not at import: the flow's process builds the registry without it

    pad = n_fft // 2
    yp = np.zeros(len(y) + 2 * pad, dtype=np.float32)
    yp[pad : pad + len(y)] = y
    frames = np.lib.stride_tricks.sliding_window_view(yp, n_fft)[::hop_length]
    win = _window(n_fft)
    buf = np.empty((BLOCK_FRAMES, n_fft), dtype=np.float32)
    for s in range(0, len(frames), BLOCK_FRAMES):
        e = min(s + BLOCK_FRAMES, len(frames))
        np.multiply(frames[s:e], win, out=buf[: e - s])
        yield s, e, scipy.fft.rfft(buf[: e - s], axis=-1)


def stft(y: np.ndarray, n_fft: int = N_FFT, hop_length: int | None = None) -> np.ndarray:
    """Centred STFT of a mono float32 signal.

    Returns
    -------
    np.ndarray [shape=(1 + len(y) // hop_length, n_fft // 2 + 1), dtype=complex64]
        Time-major spectrogram.
    """
    hop_length = _hop(n_fft, hop_length)
    spec = np.empty((1 + len(y) // hop_length, n_fft // 2 + 1), dtype=np.complex64)
    for s, e, block in _analysis_blocks(np.asarray(y, dtype=np.float32), n_fft, hop_length):
        spec[s:e] = block
    return spec


class _OverlapAdd:
    """Weighted overlap-add of windowed frames into a signal, block by block."""

    def __init__(self, n_frames: int, n_fft: int, hop_length: int):
        self.ratio = n_fft // hop_length
        self.n_fft, self.hop = n_fft, hop_length
        self.n_frames = n_frames
        self.out = np.zeros((n_frames + self.ratio - 1, hop_length), dtype=np.float32)

    def add(self, start: int, spec_block: np.ndarray) -> None:
        import scipy.fft

        frames = scipy.fft.irfft(spec_block, n=self.n_fft, axis=-1).astype(np.float32, copy=False)
        frames *= _window(self.n_fft)
        nb = len(frames)
        blocks = frames.reshape(nb, self.ratio, self.hop)
        for j in range(self.ratio):
            self.out[start + j : start + j + nb] += blocks[:, j]

    def finish(self, length: int) -> np.ndarray:
        """Divide by the summed squared window and crop (or zero-pad) to ``length``."""
        win_sq = np.square(_window(self.n_fft)).reshape(self.ratio, self.hop)
        env = np.zeros_like(self.out)
        for j in range(self.ratio):
            env[j : j + self.n_frames] += win_sq[j]
        out, env = self.out.reshape(-1), env.reshape(-1)
        nonzero = env > np.finfo(np.float32).tiny
        out[nonzero] /= env[nonzero]
        y = out[self.n_fft // 2 : self.n_fft // 2 + length]
        if len(y) < length:
            y = np.pad(y, (0, length - len(y)))
        return np.ascontiguousarray(y)


def istft(spec: np.ndarray, length: int, n_fft: int = N_FFT, hop_length: int | None = None) -> np.ndarray:
    """Inverse of :func:`stft`, cropped or zero-padded to ``length`` samples (float32).

    ``n_fft`` must be a multiple of ``hop_length``: the overlap-add is then
    ``n_fft // hop_length`` vectorised additions per block instead of a loop over frames.
    """
    hop_length = _hop(n_fft, hop_length)
    ola = _OverlapAdd(spec.shape[0], n_fft, hop_length)
    for s in range(0, spec.shape[0], BLOCK_FRAMES):
        ola.add(s, spec[s : s + BLOCK_FRAMES])
    return ola.finish(length)


def _mag_phase(blocks: Iterator[tuple[int, int, np.ndarray]], n_frames: int, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude and phase of every frame, plus two zero frames at the end (as librosa)."""
    mag = np.zeros((n_frames + 2, n_bins), dtype=np.float32)
    phase = np.zeros((n_frames + 2, n_bins), dtype=np.float32)
    for s, e, block in blocks:
        np.abs(block, out=mag[s:e])
        np.arctan2(block.imag, block.real, out=phase[s:e])
    return mag, phase


def _increments(phase: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """Phase increment from frame i to i + 1: expected advance + deviation wrapped to [-pi, pi].

    The expected advance is pre-wrapped to [0, 2 pi), so the float32 running sum of
    increments stays small (a few thousand radians at most).
    """
    adv = _phase_advance(n_fft, hop_length)
    d = np.empty((phase.shape[0] - 1, phase.shape[1]), dtype=np.float32)
    tmp = np.empty((BLOCK_FRAMES, phase.shape[1]), dtype=np.float32)
    for s in range(0, len(d), BLOCK_FRAMES):
        e = min(s + BLOCK_FRAMES, len(d))
        blk, t = d[s:e], tmp[: e - s]
        np.subtract(phase[s + 1 : e + 1], phase[s:e], out=blk)
        blk -= adv
        np.multiply(blk, np.float32(1.0 / _TWO_PI), out=t)
        np.round(t, out=t)
        t *= np.float32(_TWO_PI)
        blk -= t
        blk += adv
    return d


def _vocoded_blocks(mag: np.ndarray, phase: np.ndarray, d: np.ndarray, rate: float) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, spectrum block)`` of the time-scaled STFT (librosa's phase_vocoder)."""
    n_frames = mag.shape[0] - 2
    n_bins = mag.shape[1]
    steps = np.arange(0, n_frames, rate, dtype=np.float64)
    idx = steps.astype(np.intp)
    alpha = (steps - idx).astype(np.float32)[:, None]
    m0 = np.empty((BLOCK_FRAMES, n_bins), dtype=np.float32)
    m1 = np.empty_like(m0)
    acc = np.empty_like(m0)
    current = phase[0].copy()
    for s in range(0, len(steps), BLOCK_FRAMES):
        e = min(s + BLOCK_FRAMES, len(steps))
        nb, ib = e - s, idx[s:e]
        a, b, ph = m0[:nb], m1[:nb], acc[:nb]
        np.take(mag, ib, axis=0, out=a)
        np.take(mag, ib + 1, axis=0, out=b)
        b -= a
        b *= alpha[s:e]
        a += b  # linearly interpolated magnitude
        # Running phase sum: a row loop of in-place adds (np.cumsum(axis=0) is ~10x slower).
        for t in range(nb):
            ph[t] = current
            np.add(current, d[ib[t]], out=current)
        out = np.empty((nb, n_bins), dtype=np.complex64)
        np.cos(ph, out=b)
        np.multiply(a, b, out=out.real)
        np.sin(ph, out=b)
        np.multiply(a, b, out=out.imag)
        yield s, out


def phase_vocoder(spec: np.ndarray, rate: float, n_fft: int = N_FFT, hop_length: int | None = None) -> np.ndarray:
    """Time-scale a time-major STFT by ``rate`` (> 1 is faster), as ``librosa.phase_vocoder``.

    Parameters
    ----------
    spec : np.ndarray [shape=(n_frames, n_fft // 2 + 1), dtype=complex64]
    rate : float > 0

    Returns
    -------
    np.ndarray [shape=(ceil(n_frames / rate), n_fft // 2 + 1), dtype=complex64]
    """
    hop_length = _hop(n_fft, hop_length)
    n_frames, n_bins = spec.shape
    blocks = ((s, min(s + BLOCK_FRAMES, n_frames), spec[s : s + BLOCK_FRAMES]) for s in range(0, n_frames, BLOCK_FRAMES))
    mag, phase = _mag_phase(blocks, n_frames, n_bins)
    d = _increments(phase, n_fft, hop_length)
    return np.concatenate([blk for _, blk in _vocoded_blocks(mag, phase, d, rate)])


def stretch(y: np.ndarray, rate: float, n_fft: int = N_FFT) -> np.ndarray:
    """Phase-vocoder time stretch of a mono float32 signal to ``round(len(y) / rate)`` samples.

    Equals ``istft(phase_vocoder(stft(y), rate), length)`` without materialising either
    complex spectrogram.
    """
    length = int(round(len(y) / rate))
    if len(y) == 0 or length == 0:
        return np.zeros(length, dtype=np.float32)
    hop_length = _hop(n_fft, None)
    n_frames = 1 + len(y) // hop_length
    mag, phase = _mag_phase(_analysis_blocks(np.asarray(y, dtype=np.float32), n_fft, hop_length), n_frames, n_fft // 2 + 1)
    d = _increments(phase, n_fft, hop_length)
    n_out = len(np.arange(0, n_frames, rate, dtype=np.float64))
    ola = _OverlapAdd(n_out, n_fft, hop_length)
    for s, block in _vocoded_blocks(mag, phase, d, rate):
        ola.add(s, block)
    return ola.finish(length)
