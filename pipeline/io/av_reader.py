"""The second decoder: PyAV (FFmpeg), for what libsndfile cannot open.

AAC in ``.m4a``/``.mp4``/``.aac``, Opus or Vorbis in Matroska/WebM, WMA in ASF, the audio
track of a video file. :func:`open_audio` chooses by content: libsndfile first (it sniffs the
bytes, whatever the extension), then FFmpeg's probe. :class:`AvReader` reads like a
``soundfile.SoundFile`` (``samplerate``, ``channels``, ``frames``, ``format``, ``subtype``,
``read(out=...)``), so both decoders go through the same header limits and the same
bounded block reading (pipeline.io.audio).
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import soundfile as sf

#: libsndfile's "format not recognised" (1) and "unsupported format" style refusals (7): the
#: bytes may still be a container FFmpeg reads
_SF_UNRECOGNISED = (1, 7)
LENGTH_SLACK_FRAMES = 4096
UNKNOWN_FRAMES = (1 << 63) - 1
"""What a reader reports when the container does not state its length (as libsndfile does)."""

#: extensions only PyAV reads; libsndfile's are in pipeline.config.catalog
AV_EXTENSIONS = ("m4a", "mp4", "m4b", "aac", "webm", "mkv", "mka", "wma", "asf", "mov", "3gp", "ac3", "amr")


class AvUnavailable(RuntimeError):
    """PyAV is not installed."""


class AvReader:
    """The first audio stream of a container, decoded by FFmpeg to float32 frames.

    Parameters
    ----------
    source : bytes path, str path, or a binary file object
    """

    decoder = "pyav"
    exact_length = False
    """Container durations are estimates (ADTS from the bit rate, Opus before its pre-skip):
    ``frames`` is the estimate plus :data:`LENGTH_SLACK_FRAMES` and 1%, an upper bound
    that plans enough room; fewer decoded frames do not mean a truncated file."""

    def __init__(self, source: Any) -> None:
        try:
            import av
        except ImportError:  # pragma: no cover - a declared dependency
            raise AvUnavailable("PyAV (the `av` package) is not installed") from None
        if isinstance(source, bytes | bytearray) and not isinstance(source, memoryview):
            source = os.fsdecode(bytes(source))
        self._container = av.open(source, mode="r")
        try:
            audio = self._container.streams.audio
            if not audio:
                raise ValueError("the container holds no audio stream")
            self._stream = audio[0]
            cc = self._stream.codec_context
            self.samplerate = int(cc.sample_rate or self._stream.rate or 0)
            self.channels = len(cc.layout.channels) if cc.layout is not None else int(getattr(cc, "channels", 0) or 0)
            self.frames = self._frames()
            self.format = self._container.format.name.split(",")[0].upper()
            self.subtype = (cc.name or "").upper()
            self._resampler = av.AudioResampler(format="fltp")
            self._frames_iter = None
            self._pending = np.empty((0, max(self.channels, 1)), np.float32)
            self._error = av.error.FFmpegError
        except BaseException:
            self._container.close()
            raise

    def _frames(self) -> int:
        s = self._stream
        if s.duration is not None and s.time_base is not None:
            seconds = float(s.duration * s.time_base)
        elif self._container.duration is not None:
            seconds = self._container.duration / 1_000_000  # av.time_base
        else:
            return UNKNOWN_FRAMES
        if seconds <= 0:
            return UNKNOWN_FRAMES
        estimate = seconds * self.samplerate
        return int(np.ceil(estimate * 1.01)) + LENGTH_SLACK_FRAMES

    def _decoded(self):
        for frame in self._container.decode(self._stream):
            for f in self._resampler.resample(frame):
                yield f
        for f in self._resampler.resample(None):  # flush
            yield f

    def read(self, out: np.ndarray) -> np.ndarray:
        """Fill ``out`` (frames, channels) from the top; return the filled part."""
        want = out.shape[0]
        if self._frames_iter is None:
            self._frames_iter = self._decoded()
        chunks = [self._pending]
        have = self._pending.shape[0]
        while have < want:
            try:
                frame = next(self._frames_iter)
            except StopIteration:
                break
            except self._error as exc:
                raise RuntimeError(f"FFmpeg: {exc}") from None
            arr = frame.to_ndarray()  # planar float32: (channels, samples)
            if arr.shape[0] != out.shape[1]:
                raise RuntimeError(f"the stream changed from {out.shape[1]} to {arr.shape[0]} channels part way")
            chunks.append(arr.T)
            have += arr.shape[1]
        block = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        n = min(want, block.shape[0])
        out[:n] = block[:n]
        self._pending = block[n:]
        return out[:n]

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> AvReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_audio(source: Any) -> Any:
    """An open reader for ``source`` (bytes path, or a binary file object): libsndfile's
    ``SoundFile`` when it recognises the content, else an :class:`AvReader`.

    The reader's ``decoder`` attribute names it (``soundfile`` or ``pyav``). Raises
    libsndfile's error when neither can open it (its message words the reject).
    """
    try:
        f = sf.SoundFile(source)
        f.decoder = "soundfile"  # type: ignore[attr-defined]
        return f
    except sf.LibsndfileError as exc:
        if exc.code not in _SF_UNRECOGNISED:
            raise
        first = exc
    if isinstance(source, io.IOBase) or hasattr(source, "seek"):
        source.seek(0)
    try:
        return AvReader(source)
    except AvUnavailable:
        raise first from None
    except Exception:  # noqa: BLE001 - FFmpeg cannot read it either: libsndfile's words say why
        raise first from None


__all__ = ["AV_EXTENSIONS", "AvReader", "AvUnavailable", "UNKNOWN_FRAMES", "open_audio"]
