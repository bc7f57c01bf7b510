"""reverb: convolve with a room impulse response taken from another catalog source."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field

from pipeline.augment._params import StepParams


class ReverbParams(StepParams):
    """Impulse response drawn uniformly from the clips of catalog source ``source``.

    ``trim_to_peak`` drops the IR samples before its largest absolute value (the direct
    path), so the reverberant copy stays time-aligned with the original (labels and
    alignments keep their times).
    """

    name: Literal["reverb"] = "reverb"
    source: str = Field(min_length=1)
    trim_to_peak: bool = True


def normalise_ir(ir: np.ndarray, trim_to_peak: bool = True) -> np.ndarray:
    """Float32 IR, cut to start at its absolute peak if asked, scaled to unit energy (sum of squares 1).

    Unit energy keeps the output power close to the input's for broadband signals.
    A silent IR comes back as all zeros.
    """
    h = np.asarray(ir, dtype=np.float32)
    if len(h) == 0:
        return h.copy()
    if trim_to_peak:
        h = h[int(np.argmax(np.abs(h))) :]
    norm = float(np.sqrt(np.sum(np.square(h, dtype=np.float64))))
    if norm == 0.0:
        return np.zeros_like(h)
    return (h / np.float32(norm)).astype(np.float32, copy=False)


def convolve_ir(y: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``scipy.signal.fftconvolve(y, h)[:len(y)]`` as float32: causal, same length, tail cut."""
    y = np.asarray(y, dtype=np.float32)
    if len(y) == 0 or len(h) == 0:
        return np.zeros(len(y), dtype=np.float32)
    import scipy.signal  # imported on first use (slow import)

    return np.ascontiguousarray(scipy.signal.fftconvolve(y, h)[: len(y)], dtype=np.float32)


def apply(
    y: np.ndarray,
    sample_rate: int,
    rng: np.random.Generator,
    params: ReverbParams,
    clips: Sequence[np.ndarray],
) -> tuple[np.ndarray, dict]:
    """Draw an IR index and convolve ``y`` with the normalised IR.

    A silent (all-zero) IR leaves ``y`` unchanged and is reported with ``"silent_ir": true``.
    """
    clip_index = int(rng.integers(len(clips)))
    h = normalise_ir(clips[clip_index], params.trim_to_peak)
    drawn = {"name": "reverb", "source": params.source, "clip_index": clip_index, "ir_samples": len(h)}
    if not np.any(h):
        drawn["silent_ir"] = True
        return np.array(y, dtype=np.float32, copy=True), drawn
    return convolve_ir(y, h), drawn
