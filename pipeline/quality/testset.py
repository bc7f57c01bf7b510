"""A generated set for measuring duplicate detection (tests and bench_quality).

Speech-like clips (voiced segments through a speaker's formants, fricatives, pauses; each
speaker with its own pitch and vocal-tract length), their copies under the transforms of
issue 20 (64 kbit/s MP3, 16 -> 8 -> 16 kHz, gain +-6 dB, 0.1 s trimmed), and other clips
of the same speakers, which must not match.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

from pipeline.io.audio import resample

VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (530, 1840, 2480), (570, 840, 2410), (300, 870, 2240), (660, 1720, 2410))
TRANSFORMS = ("mp3_64k", "resample_8k", "gain_plus6", "gain_minus6", "trim_0.1s")


def _resonator(x: np.ndarray, f: float, bw: float, sr: int) -> np.ndarray:
    r = np.exp(-np.pi * bw / sr)
    a = [1.0, -2.0 * r * np.cos(2 * np.pi * f / sr), r * r]
    return lfilter([1.0 - r], a, x)


def speech_like(rng: np.random.Generator, *, f0_hz: float, tract: float, seconds: float, sr: int = 16000) -> np.ndarray:
    """One utterance of a speaker (``f0_hz`` pitch, ``tract`` formant scale), float32 (n,)."""
    out = []
    total = 0
    n_target = int(seconds * sr)
    while total < n_target:
        kind = rng.choice(3, p=[0.6, 0.2, 0.2])
        n = int(rng.uniform(0.06, 0.25) * sr)
        if kind == 0:  # voiced: a pulse train with a drifting pitch through three formants
            f0 = f0_hz * rng.uniform(0.85, 1.15) * np.linspace(1.0, rng.uniform(0.9, 1.1), n)
            phase = np.cumsum(f0 / sr)
            src = (np.diff(np.floor(phase), prepend=0.0) > 0).astype(np.float64) + 0.02 * rng.standard_normal(n)
            v = VOWELS[rng.integers(len(VOWELS))]
            seg = sum(_resonator(src, f * tract, 80 + 0.05 * f, sr) * g for f, g in zip(v, (1.0, 0.6, 0.3)))
            seg *= np.hanning(n)
        elif kind == 1:  # fricative: high-passed noise
            seg = np.diff(rng.standard_normal(n + 1)) * 0.15 * np.hanning(n)
        else:  # pause with a low room noise
            seg = 0.001 * rng.standard_normal(n)
        out.append(seg)
        total += n
    y = np.concatenate(out)[:n_target]
    return (0.5 * y / max(np.max(np.abs(y)), 1e-9)).astype(np.float32)


def transform(y: np.ndarray, name: str, sr: int = 16000) -> np.ndarray:
    """``y`` after one of :data:`TRANSFORMS`, decoded back to float32 at ``sr``."""
    if name == "mp3_64k":
        buf = io.BytesIO()
        # libsndfile's LAME: compression level 0.6 at constant bit rate is 64 kbit/s at 16 kHz mono
        sf.write(buf, y, sr, format="MP3", subtype="MPEG_LAYER_III", compression_level=0.6, bitrate_mode="CONSTANT")
        z, sr2 = sf.read(io.BytesIO(buf.getvalue()), dtype="float32")
        return resample(z, sr2, sr) if sr2 != sr else z
    if name == "resample_8k":
        return resample(resample(y, sr, 8000), 8000, sr)
    if name == "gain_plus6":
        return np.clip(y * 10 ** (6 / 20), -1, 1).astype(np.float32)
    if name == "gain_minus6":
        return (y * 10 ** (-6 / 20)).astype(np.float32)
    if name == "trim_0.1s":
        return y[int(0.1 * sr) :]
    raise ValueError(f"unknown transform {name!r}")


def make_set(n_speakers: int, clips_per_speaker: int, *, seed: int = 0, sr: int = 16000) -> list[tuple[str, str, np.ndarray]]:
    """``[(clip_id, cluster_id, y)]``: every original, each copy under each transform (same
    cluster id), and all other clips of the speaker (their own clusters)."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(n_speakers):
        f0, tract = rng.uniform(90, 240), rng.uniform(0.85, 1.2)
        for c in range(clips_per_speaker):
            y = speech_like(rng, f0_hz=f0, tract=tract, seconds=rng.uniform(3.0, 5.0), sr=sr)
            cid = f"spk{s:02d}_utt{c:02d}"
            out.append((cid, cid, y))
            if c == 0:  # the first clip of each speaker gets copies; the others must not match it
                out.extend((f"{cid}~{t}", cid, transform(y, t, sr)) for t in TRANSFORMS)
    return out
