"""Audio decoding (libsndfile via soundfile; PyAV for the containers libsndfile cannot
open), downmix, soxr resampling, fixed-length clipping.

Decoding reads the content, not the extension: a FLAC named ``.wav`` decodes as FLAC.
Header limits are checked before any sample is decoded (:func:`check_header`), and samples
are decoded in bounded blocks with a running total, so neither a crafted header nor a
highly compressible file (a "decompression bomb") can make a worker allocate more than
``max_seconds`` of audio.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from pipeline.errors import AudioDecodeError
from pipeline.io.av_reader import open_audio

MAX_SOURCE_SAMPLE_RATE = 384_000
"""Highest source sample rate decoded (the catalog key this stands for: ``audio.max_source_sample_rate``)."""
MAX_COMPRESSION_RATIO = 64
"""A compressed file whose header declares more PCM bytes than this times its size is refused."""
UNCOMPRESSED_SLACK = 1.1
"""An uncompressed file (other than a truncated WAV, whose length libsndfile clamps) may not
declare more PCM bytes than this times its size."""
PLAUSIBILITY_FLOOR_BYTES = 32 << 20
"""Files declaring less PCM than this are never refused for their ratio: they decode cheaply."""
DECODE_BLOCK_FRAMES = 1 << 16
"""Frames decoded per block."""
UNKNOWN_LENGTH_FRAMES = 1 << 62
"""libsndfile reports an unknown length (a FLAC written without its total samples) as 2**63-1."""

_UNCOMPRESSED_FORMATS = {
    "WAV", "WAVEX", "AIFF", "AU", "RAW", "W64", "RF64", "CAF", "NIST", "IRCAM", "SVX", "VOC", "PAF", "MAT4", "MAT5", "HTK", "SD2", "WVE", "AVR", "SDS",
}
_SAMPLE_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}
_NOT_AUDIO = "not a recognised audio format: text, or a file of another kind under an audio extension"


class SampleRateTooHigh(AudioDecodeError):
    """The header declares a sample rate above ``audio.max_source_sample_rate``."""


class ImplausibleHeader(AudioDecodeError):
    """The header declares far more audio than the file's bytes can hold."""


class TooFewChannels(AudioDecodeError):
    """Fewer channels than ``audio.channels`` keeps, with ``audio.pad_channels: reject``."""


class TooLong(AudioDecodeError):
    """Longer than ``audio.max_seconds`` (declared, or found while decoding)."""


def describe_open_error(exc: BaseException) -> str:
    """What libsndfile's refusal to open a file means, without its ``Error opening <path>:``
    prefix (a local path or a buffer's repr). Text named ``.wav`` ("Format not recognised")
    and text named ``.mp3`` ("possibly a pipe?", from the MPEG probe) read the same. The
    header probe and :func:`decode` both word their reject as :func:`unreadable_message`."""
    if isinstance(exc, sf.LibsndfileError) and exc.code in (1, 7):
        return _NOT_AUDIO
    text = getattr(exc, "error_string", None) or str(exc) or type(exc).__name__
    return text.strip()[:200]


def unreadable_message(exc: BaseException) -> str:
    """``not a readable audio file (<why>); check the file or remove it``."""
    return f"not a readable audio file ({describe_open_error(exc)}); check the file or remove it"


def length_unknown(frames: int) -> bool:
    """Whether libsndfile's frame count means "unknown" (a stream without its total length)."""
    return frames >= UNKNOWN_LENGTH_FRAMES


def planned_frames(frames: int, sample_rate: int, max_seconds: float) -> int:
    """Frames to plan for: the header's, or ``max_seconds`` worth when the length is unknown
    (decoding stops there)."""
    return int(np.floor(max_seconds * sample_rate)) if length_unknown(frames) else frames


def _is_uncompressed(fmt: str, subtype: str) -> bool:
    return fmt.upper() in _UNCOMPRESSED_FORMATS and subtype.upper() in _SAMPLE_BYTES


def check_header(
    path: str,
    *,
    sample_rate: int,
    channels: int,
    frames: int,
    format: str,
    subtype: str,
    size_bytes: int,
    max_seconds: float | None,
    max_channels: int,
    max_sample_rate: int = MAX_SOURCE_SAMPLE_RATE,
) -> None:
    """Refuse a header before any sample is decoded. ``max_seconds=None`` skips the length
    limit (long files that are split). Raises :class:`AudioDecodeError` (or a subclass) with
    stage ``header`` or ``limits``; the message starts with ``path``."""
    if sample_rate <= 0 or frames < 0 or channels <= 0:
        raise AudioDecodeError(path, "header", f"invalid header (sample_rate={sample_rate}, channels={channels}, frames={frames})")
    if channels > max_channels:
        raise AudioDecodeError(path, "limits", f"{channels} channels > audio.max_channels={max_channels}")
    if sample_rate > max_sample_rate:
        raise SampleRateTooHigh(
            path, "limits", f"sample rate {sample_rate} Hz > audio.max_source_sample_rate={max_sample_rate}; a corrupt or crafted header, or resample it first"
        )
    if length_unknown(frames):
        return  # decoded in blocks up to max_seconds
    if max_seconds is not None and frames > max_seconds * sample_rate:
        raise TooLong(path, "limits", f"{frames / sample_rate:.1f} s > audio.max_seconds={max_seconds:g}; raise the limit or split the file")
    declared = frames * channels * _SAMPLE_BYTES.get(subtype.upper(), 2)
    if size_bytes > 0:
        uncompressed = _is_uncompressed(format, subtype)
        ratio = UNCOMPRESSED_SLACK if uncompressed else MAX_COMPRESSION_RATIO
        floor = 0 if uncompressed else PLAUSIBILITY_FLOOR_BYTES
        if declared > ratio * size_bytes + 4096 and declared > floor:
            raise ImplausibleHeader(
                path,
                "limits",
                f"header declares {declared / 1e6:.1f} MB of samples ({frames / sample_rate:.1f} s x {sample_rate} Hz x {channels} ch) "
                f"from a {size_bytes / 1e3:.1f} KB {format} file (> {ratio:g}x): a corrupt or crafted header, or a decompression bomb",
            )


def header_limits_problem(header, size_bytes: int, *, max_channels: int, max_sample_rate: int = MAX_SOURCE_SAMPLE_RATE) -> tuple[str, str, str] | None:
    """:func:`check_header` for a probed header (anything with ``sample_rate``, ``channels``,
    ``frames``, ``format``, ``subtype``), length left to the caller: ``(stage, error_class,
    message)`` of the reject, message without the path, or ``None``."""
    try:
        check_header(
            "", sample_rate=header.sample_rate, channels=header.channels, frames=header.frames, format=header.format,
            subtype=header.subtype, size_bytes=size_bytes, max_seconds=None, max_channels=max_channels, max_sample_rate=max_sample_rate,
        )
    except AudioDecodeError as exc:
        return exc.stage, type(exc).__name__, str(exc)[len(f": {exc.stage}: ") :]
    return None


def wav_declared_frames(data: bytes) -> int | None:
    """Frames the ``data`` chunk of a RIFF/WAVE file declares (libsndfile clamps its own count
    to the bytes present, which hides truncation); ``None`` when not a WAV or not stated."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, block_align = 12, 0
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if cid == b"fmt " and pos + 22 <= len(data):
            block_align = int.from_bytes(data[pos + 20 : pos + 22], "little")
        elif cid == b"data":
            if size in (0, 0xFFFFFFFF) or block_align <= 0:
                return None
            return size // block_align
        pos += 8 + size + (size & 1)
    return None


@dataclass(frozen=True, slots=True)
class Decoded:
    """Samples of one file, shape (n_samples, n_channels), float32, at ``sample_rate``.

    ``channels`` is the file's; ``y`` has one column when decoded with ``mono=True``.
    ``truncated``: fewer frames decoded than the header declares (what decoded is kept)."""

    y: np.ndarray
    sample_rate: int
    channels: int
    frames: int
    truncated: bool = False
    decoder: str = "soundfile"
    """``soundfile`` (libsndfile) or ``pyav`` (FFmpeg)."""


def _read_blocks(f: sf.SoundFile, limit: int, *, mono: bool, block: int = DECODE_BLOCK_FRAMES):
    """Yield ``(y, error)`` blocks of at most ``block`` frames, ``limit`` frames in all; the last
    block may carry the libsndfile error that stopped decoding (a truncated or damaged stream),
    with the frames decoded before it."""
    ch = int(f.channels)
    got = 0
    while got < limit:
        want = min(block, limit - got)
        # NaN-filled: libsndfile writes decoded frames from the top, so when a read fails part
        # way (FLAC "lost sync", a failed seek) the rows it decoded are the ones not all NaN
        out = np.full((want, ch), np.nan, dtype=np.float32)
        err: BaseException | None = None
        try:
            n = f.read(out=out).shape[0]
        except sf.LibsndfileError as exc:
            err = exc
            touched = np.flatnonzero(~np.isnan(out).all(axis=1))
            n = int(touched[-1]) + 1 if touched.size else 0
        y = out[:n]
        if mono and ch > 1:
            y = y.mean(axis=1, dtype=np.float32, keepdims=True)
        got += n
        yield y, err
        if err is not None or n < want:
            return


def decode(
    data: bytes,
    path: str,
    *,
    max_seconds: float,
    max_channels: int,
    min_seconds: float = 0.0,
    max_sample_rate: int = MAX_SOURCE_SAMPLE_RATE,
    mono: bool = False,
) -> Decoded:
    """Decode one file's bytes, block by block.

    Parameters
    ----------
    data : bytes
        The whole file.
    path : str
        Used in error messages only.
    max_seconds, max_channels, min_seconds, max_sample_rate : limits checked against the
        header first; a file of unknown length is decoded up to ``max_seconds``.
    mono : bool
        Average the channels block by block (``y`` then has one column): the memory of one
        file is then one channel's worth.

    Raises
    ------
    AudioDecodeError
        With ``stage`` one of ``read``, ``header``, ``limits``, ``decode``, ``samples``.
    """
    if len(data) == 0:
        raise AudioDecodeError(path, "read", "zero-byte file; remove it or re-export it")
    f, sr, ch, frames = _open_checked(path, data, max_seconds=max_seconds, max_channels=max_channels, max_sample_rate=max_sample_rate)
    decoder = f.decoder
    with f:
        unknown = length_unknown(frames)
        cap = int(np.floor(max_seconds * sr))
        limit = cap + 1 if unknown else frames  # one more than allowed: tells "too long" from "exactly max"
        blocks: list[np.ndarray] = []
        failed: BaseException | None = None
        try:
            for y, err in _read_blocks(f, limit, mono=mono):
                if y.shape[0]:
                    blocks.append(y)
                failed = err
        except (RuntimeError, ValueError, TypeError) as exc:
            raise AudioDecodeError(path, "decode", f"decoding failed ({str(exc).strip()[:200]})") from None
    n = sum(b.shape[0] for b in blocks)
    if n == 0:
        if failed is not None:
            raise AudioDecodeError(path, "header", f"no frame decodes ({describe_open_error(failed)}); check the file or remove it")
        raise AudioDecodeError(path, "decode", "no samples (header only or truncated before the first frame)")
    if unknown and n > cap:
        raise TooLong(path, "limits", f"more than audio.max_seconds={max_seconds:g} s (the header does not state its length); raise the limit or split it")
    y = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
    del blocks
    declared = wav_declared_frames(data)
    # an unknown-length stream ends with a failed seek (code 39) after its last short read
    ended_cleanly = failed is None or (unknown and getattr(failed, "code", None) == 39)
    # a PyAV length is an upper-bound estimate: only a failed decode means truncated
    short = not unknown and n < frames and getattr(f, "exact_length", True)
    truncated = (not ended_cleanly) or short or (declared is not None and n < declared)
    if not np.isfinite(y).all():
        raise AudioDecodeError(path, "samples", "NaN or Inf samples; the file is corrupt")
    if n < min_seconds * sr:
        raise AudioDecodeError(path, "limits", f"{n / sr:.3f} s < audio.min_seconds={min_seconds:g}")
    return Decoded(y=y, sample_rate=sr, channels=ch, frames=n, truncated=truncated, decoder=decoder)


def decode_segments(
    data: bytes, path: str, *, segment_seconds: float, max_channels: int, max_sample_rate: int = MAX_SOURCE_SAMPLE_RATE, mono: bool = False
):
    """Decode a long file block by block: yields ``(start_frame, y (n, channels))`` (one
    column with ``mono=True``, averaged block by block).

    Memory stays bounded by one segment whatever the header claims. The first item is the
    header as ``(sample_rate, channels, frames, decoder)``.
    """
    f, sr, ch, frames = _open_checked(path, data, max_seconds=None, max_channels=max_channels, max_sample_rate=max_sample_rate)
    with f:
        yield sr, ch, frames, f.decoder
        block = max(1, int(segment_seconds * sr))
        start = 0
        for y, _err in _read_blocks(f, frames, mono=mono, block=block):
            if y.shape[0] == 0:
                break
            if not np.isfinite(y).all():
                raise AudioDecodeError(path, "samples", f"NaN or Inf samples after {start / sr:.1f} s; the file is corrupt")
            yield start, y
            start += y.shape[0]


def select_channels(y: np.ndarray, path: str, *, channels: tuple[int, ...] | None, kept: int, pad: str) -> np.ndarray:
    """The ``kept`` channels of ``y`` (n, file_channels) that ``audio.channels`` names (all,
    in order, when None), as ``(n, kept)`` float32.

    A file with too few channels repeats its channels cyclically (``pad="repeat"``), gets
    silent ones (``"zero"``), or raises :class:`AudioDecodeError` (``"reject"``).
    """
    have = y.shape[1]
    want = list(channels) if channels is not None else list(range(kept))
    if max(want) < have:
        return np.ascontiguousarray(y[:, want], dtype=np.float32)
    if pad == "reject":
        raise TooFewChannels(
            path, "limits", f"{have} channel(s), but audio.channels keeps {want} (audio.pad_channels: reject); "
            "choose other channels, or pad with `repeat` or `zero`"
        )
    out = np.zeros((y.shape[0], len(want)), np.float32)
    for k, c in enumerate(want):
        if c < have:
            out[:, k] = y[:, c]
        elif pad == "repeat":
            out[:, k] = y[:, c % have]
    return out


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
        return np.pad(y, [(0, n_samples - n)] + [(0, 0)] * (y.ndim - 1))
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


def _open_checked(path: str, data: bytes, *, max_seconds: float | None, max_channels: int, max_sample_rate: int):
    """Open ``data`` (libsndfile, else PyAV: :func:`pipeline.io.av_reader.open_audio`) and
    apply :func:`check_header` before any sample is decoded. Returns the open file and its
    ``(sample_rate, channels, frames)``; the file's ``decoder`` names the decoder."""
    try:
        f = open_audio(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        raise AudioDecodeError(path, "header", unreadable_message(exc)) from None
    sr, ch, frames = int(f.samplerate), int(f.channels), int(f.frames)
    try:
        check_header(
            path, sample_rate=sr, channels=ch, frames=frames, format=f.format, subtype=f.subtype, size_bytes=len(data),
            max_seconds=max_seconds, max_channels=max_channels, max_sample_rate=max_sample_rate,
        )
    except BaseException:
        f.close()
        raise
    return f, sr, ch, frames
