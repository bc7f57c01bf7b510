"""Mixing a noise signal into a clean one at an exact signal-to-noise ratio."""

from __future__ import annotations

import numpy as np


def power(y: np.ndarray) -> float:
    """Mean square of ``y`` (accumulated in float64)."""
    return float(np.mean(np.square(y, dtype=np.float64))) if len(y) else 0.0


def mix_at_snr(y: np.ndarray, noise: np.ndarray, snr_db: float) -> tuple[np.ndarray, float]:
    """Return ``(y + g * noise, g)`` with ``g`` such that power(y) / power(g * noise) is ``snr_db`` dB.

    ``noise`` has the length of ``y``. If ``y`` or ``noise`` is silent (zero power) the SNR
    is undefined: ``y`` comes back unchanged (as a copy) with ``g = 0``.
    """
    p_signal = power(y)
    p_noise = power(noise)
    if p_signal == 0.0 or p_noise == 0.0:
        return np.array(y, dtype=np.float32, copy=True), 0.0
    g = float(np.sqrt(p_signal / (p_noise * 10.0 ** (snr_db / 10.0))))
    out = np.asarray(noise, dtype=np.float32) * np.float32(g)
    out += y
    return out, g
