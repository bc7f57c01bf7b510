"""Audio decoding (libsndfile via soundfile), downmix, soxr resampling, fixed-length clipping.

Decoding reads the content, not the extension: a FLAC named ``.wav`` decodes as FLAC.
Header limits are checked before any sample is decoded, so a crafted header cannot make a
worker allocate unbounded memory.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from pipeline.errors import AudioDecodeError


@dataclass(frozen=True, slots=True)
class Decoded:
    """Samples of one file, shape (n_samples, n_channels), float32, at ``sample_rate``."""

    y: np.ndarray
    sample_rate: int
    channels: int
    frames: int


def decode(data: bytes, path: str, *, max_seconds: float, max_channels: int, min_seconds: float = 0.0) -> Decoded:
    """Decode one file's bytes.

    Parameters
    ----------
    data : bytes
        The whole file.
    path : str
        Used in error messages only.
    max_seconds, max_channels, min_seconds : limits checked against the header first.

    Raises
    ------
    AudioDecodeError
        With ``stage`` one of ``read``, ``header``, ``limits``, ``decode``, ``samples``.
    """
    if len(data) == 0:
        raise AudioDecodeError(path, "read", "zero-byte file; remove it or re-export it")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            sr, ch, frames = int(f.samplerate), int(f.channels), int(f.frames)
            if sr <= 0 or frames < 0:
                raise AudioDecodeError(path, "header", f"invalid header (sample_rate={sr}, frames={frames})")
            if ch > max_channels:
                raise AudioDecodeError(path, "limits", f"{ch} channels > audio.max_channels={max_channels}")
            if frames > max_seconds * sr:
                raise AudioDecodeError(
                    path, "limits", f"{frames / sr:.1f} s > audio.max_seconds={max_seconds:g}; raise the limit or split the file"
                )
            y = f.read(dtype="float32", always_2d=True)
    except AudioDecodeError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        raise AudioDecodeError(path, "header", f"not a readable audio file ({str(exc).strip()[:200]})") from None
    n = y.shape[0]
    if n == 0:
        raise AudioDecodeError(path, "decode", "no samples (header only or truncated before the first frame)")
    if n < frames:
        # libsndfile stops at the end of a truncated data chunk; keep what decoded
        frames = n
    if not np.isfinite(y).all():
        raise AudioDecodeError(path, "samples", "NaN or Inf samples; the file is corrupt")
    if n < min_seconds * sr:
        raise AudioDecodeError(path, "limits", f"{n / sr:.3f} s < audio.min_seconds={min_seconds:g}")
    return Decoded(y=y, sample_rate=sr, channels=ch, frames=frames)


def decode_segments(data: bytes, path: str, *, segment_seconds: float, max_channels: int):
    """Decode a long file block by block: yields ``(start_frame, y (n, channels))``.

    Memory stays bounded by one segment whatever the header claims. The first item is the
    header as ``(sample_rate, channels, frames)``.
    """
    try:
        f = sf.SoundFile(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        raise AudioDecodeError(path, "header", f"not a readable audio file ({str(exc).strip()[:200]})") from None
    with f:
        sr, ch = int(f.samplerate), int(f.channels)
        if ch > max_channels:
            raise AudioDecodeError(path, "limits", f"{ch} channels > audio.max_channels={max_channels}")
        yield sr, ch, int(f.frames)
        block = max(1, int(segment_seconds * sr))
        start = 0
        while True:
            y = f.read(block, dtype="float32", always_2d=True)
            if y.shape[0] == 0:
                break
            if not np.isfinite(y).all():
                raise AudioDecodeError(path, "samples", f"NaN or Inf samples after {start / sr:.1f} s; the file is corrupt")
            yield start, y
            start += y.shape[0]
            if y.shape[0] < block:
                break


def to_mono(y: np.ndarray) -> np.ndarray:
    """(n, channels) -> (n,) by averaging channels, as ``librosa.to_mono`` does."""
    if y.ndim == 1:
        return y.astype(np.float32, copy=False)
    if y.shape[1] == 1:
        return np.ascontiguousarray(y[:, 0], dtype=np.float32)
    return y.mean(axis=1, dtype=np.float32)


def resample(y: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """soxr HQ resampling (what ``librosa.resample(res_type="soxr_hq")`` calls)."""
    if sr_in == sr_out:
        return y.astype(np.float32, copy=False)
    return soxr.resample(y, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def resampled_length(n_samples: int, sr_in: int, sr_out: int) -> int:
    """Upper bound of soxr's output length (it returns ceil(n * out / in) or one fewer)."""
    if sr_in == sr_out:
        return n_samples
    return -(-n_samples * sr_out // sr_in)


def fix_length(y: np.ndarray, n_samples: int, crop: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """Crop or zero-pad (at the end) to exactly ``n_samples``.

    ``crop`` is ``start`` (keep the beginning), ``center`` or ``random`` (needs ``rng``).
    """
    n = y.shape[0]
    if n == n_samples:
        return y
    if n < n_samples:
        return np.pad(y, (0, n_samples - n))
    excess = n - n_samples
    if crop == "start":
        start = 0
    elif crop == "center":
        start = excess // 2
    elif crop == "random":
        if rng is None:
            raise ValueError("crop='random' needs a generator")
        start = int(rng.integers(0, excess + 1))
    else:
        raise ValueError(f"unknown crop {crop!r}")
    return y[start : start + n_samples]


def peak_dbfs(y: np.ndarray) -> float:
    # max and -min: no |y| temporary (a NaN still propagates, from y.max())
    peak = max(float(y.max()), -float(y.min())) if y.size else 0.0
    return -np.inf if peak == 0 else 20.0 * np.log10(peak)
