"""A small labelled corpus synthesised with numpy: several classes, several speakers,
two sample rates and two formats (WAV and FLAC). Used by ``make demo`` and the tests.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

import numpy as np
import soundfile as sf

CLASSES = ("tone", "chirp", "noise", "pulse")


@dataclass(frozen=True)
class DemoFile:
    path: pathlib.Path
    label: str
    speaker: str
    sample_rate: int
    seconds: float


def synth(label: str, speaker_index: int, seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One clip of a class; the speaker shifts the base pitch so groups differ audibly."""
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    f0 = 140.0 * (1.0 + 0.12 * speaker_index) * rng.uniform(0.95, 1.05)
    if label == "tone":
        y = sum((0.5 / k) * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) for k in range(1, 6))
    elif label == "chirp":
        f1 = f0 * rng.uniform(4, 8)
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
        y = 0.6 * np.sin(phase)
    elif label == "noise":
        w = rng.standard_normal(n)
        k = max(1, int(sample_rate / (4 * f0)))
        y = 0.3 * np.convolve(w, np.ones(k) / k, mode="same")
    elif label == "pulse":
        y = np.zeros(n)
        period = int(sample_rate / (f0 / 20))
        for s in range(0, n, max(period, 1)):
            m = min(n - s, int(0.01 * sample_rate))
            y[s : s + m] += np.hanning(2 * m)[m:] * rng.uniform(0.5, 0.9)
        y += 0.01 * rng.standard_normal(n)
    else:
        raise ValueError(f"unknown class {label!r}")
    env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
    return (0.8 * y * env / max(np.max(np.abs(y)), 1e-9)).astype(np.float32)


def make_corpus(
    out: str | pathlib.Path,
    *,
    speakers: int = 6,
    files_per_speaker_and_class: int = 3,
    classes: tuple[str, ...] = CLASSES,
    min_seconds: float = 1.0,
    max_seconds: float = 3.0,
    seed: int = 0,
) -> list[DemoFile]:
    """Write ``<out>/<label>/spkNN_<label>_<k>.<wav|flac>`` files; return what was written.

    Even speakers record WAV at 16 kHz, odd ones FLAC at 22.05 kHz (some in stereo), so a
    corpus always mixes two sample rates and two formats.
    """
    out = pathlib.Path(out)
    rng = np.random.default_rng(seed)
    files = []
    for s in range(speakers):
        sr, ext = (16000, "wav") if s % 2 == 0 else (22050, "flac")
        for label in classes:
            for k in range(files_per_speaker_and_class):
                seconds = float(np.round(rng.uniform(min_seconds, max_seconds), 2))
                y = synth(label, s, seconds, sr, rng)
                if s % 4 == 3:
                    y = np.stack([y, 0.9 * y], axis=1)
                path = out / label / f"spk{s:02d}_{label}_{k}.{ext}"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, y, sr, subtype="PCM_16")
                files.append(DemoFile(path, label, f"spk{s:02d}", sr, seconds))
    return files
