"""Containers written by FFmpeg (through PyAV's bundled build) for the decoder tests and bench."""

from __future__ import annotations

import io

import numpy as np

#: name -> (container format, audio codec, options): what VoxCeleb, podcasts and web audio come as
CONTAINERS = {
    "aac.m4a": ("ipod", "aac", {"bit_rate": 128_000}),
    "alac.m4a": ("ipod", "alac", {}),
    "adts.aac": ("adts", "aac", {"bit_rate": 128_000}),
    "opus.webm": ("webm", "libopus", {"bit_rate": 96_000}),
    "pcm.mka": ("matroska", "pcm_s16le", {}),
    "wmav2.wma": ("asf", "wmav2", {"bit_rate": 128_000}),
    "video.mp4": ("mp4", "aac", {"bit_rate": 128_000, "video": True}),
}


def encode(y: np.ndarray, sample_rate: int, fmt: str, codec: str, *, bit_rate: int | None = None, video: bool = False) -> bytes:
    """``y`` (n, channels) float32 in [-1, 1] as a ``fmt`` container of ``codec`` (with a
    small MPEG-4 video track when ``video``)."""
    import av

    buf = io.BytesIO()
    layout = "stereo" if y.shape[1] == 2 else "mono"
    with av.open(buf, mode="w", format=fmt) as c:
        s = c.add_stream(codec, rate=sample_rate)
        s.layout = layout
        if bit_rate:
            s.bit_rate = bit_rate
        if video:
            v = c.add_stream("mpeg4", rate=25)
            v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
            for _ in range(int(25 * y.shape[0] / sample_rate)):
                for p in v.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")):
                    c.mux(p)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(y.T, dtype=np.float32), format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        cc = s.codec_context
        resampler = av.AudioResampler(format=cc.format.name, layout=layout, rate=cc.sample_rate)
        for f in [*resampler.resample(frame), *resampler.resample(None)]:
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
        if video:
            for p in v.encode(None):
                c.mux(p)
    return buf.getvalue()


def aligned_snr_db(decoded: np.ndarray, reference: np.ndarray, max_lag: int = 4096) -> tuple[int, float]:
    """(lag, SNR in dB) of ``decoded`` against ``reference`` (both (n, channels)), after the
    lag (codec priming) that best aligns their first channel."""
    a, b = decoded[:, 0].astype(np.float64), reference[:, 0].astype(np.float64)
    n = min(a.size, b.size) - max_lag
    lags = np.arange(-max_lag, max_lag + 1)
    scores = [np.dot(a[max(k, 0) : max(k, 0) + n], b[max(-k, 0) : max(-k, 0) + n]) for k in lags]
    lag = int(lags[int(np.argmax(scores))])
    x, r = decoded[max(lag, 0) :], reference[max(-lag, 0) :]
    m = min(len(x), len(r))
    err = x[:m] - r[:m]
    return lag, float(10 * np.log10(np.sum(r[:m] ** 2) / max(np.sum(err**2), 1e-20)))
