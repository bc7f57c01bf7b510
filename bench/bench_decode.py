"""Decode throughput of each container, PyAV (FFmpeg) beside libsndfile on WAV and FLAC.

One 30 s stereo 48 kHz signal (tones plus noise) written in every container the tests
use; each is decoded with :func:`pipeline.io.audio.decode` (mono mix, as a run does) the
same number of times in one process, one thread, side by side. Figures: seconds of audio
decoded per second of CPU (x realtime) and MB of float32 samples out per second.
"""

from __future__ import annotations

import io
import time

import numpy as np
import soundfile as sf
from threadpoolctl import threadpool_limits

from bench._util import env_info, env_int, save, versions
from pipeline.io.audio import decode
from tests.av_util import CONTAINERS, encode

SR = 48_000


def _signal(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(0)
    y = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)], axis=1) + 0.05 * rng.standard_normal((t.size, 2))
    return (np.round(y * 32767) / 32768).astype(np.float32)


def _sndfile(y: np.ndarray, fmt: str) -> bytes:
    b = io.BytesIO()
    sf.write(b, y, SR, format=fmt, subtype="PCM_16")
    return b.getvalue()


def main() -> None:
    seconds, repeats = float(env_int("BENCH_DECODE_SECONDS", 30)), env_int("BENCH_DECODE_REPEATS", 5)
    y = _signal(seconds)
    files = {"pcm16.wav (soundfile)": _sndfile(y, "WAV"), "flac (soundfile)": _sndfile(y, "FLAC")}
    files.update({f"{name} (pyav)": encode(y, SR, fmt, codec, **opts) for name, (fmt, codec, opts) in CONTAINERS.items()})
    rows = {}
    with threadpool_limits(1):
        for name, data in files.items():
            decode(data, name, max_seconds=3600, max_channels=8, mono=True)  # warm
            t0 = time.process_time()
            for _ in range(repeats):
                d = decode(data, name, max_seconds=3600, max_channels=8, mono=True)
            cpu = (time.process_time() - t0) / repeats
            rows[name] = {
                "decoder": d.decoder,
                "file_kb": round(len(data) / 1e3, 1),
                "cpu_seconds": round(cpu, 4),
                "x_realtime": round(seconds / cpu, 1),
                "mb_per_s_out": round(d.y.nbytes / 1e6 / cpu, 1),
            }
            print(f"{name:28s} {rows[name]['x_realtime']:8.1f}x realtime  {rows[name]['mb_per_s_out']:7.1f} MB/s", flush=True)
    wav = rows["pcm16.wav (soundfile)"]["cpu_seconds"]
    for r in rows.values():
        r["cpu_vs_wav"] = round(r["cpu_seconds"] / wav, 2)
    env = {**env_info(), **versions("av", "soundfile")}
    save("decode", {"bench": "decode", "seconds": seconds, "repeats": repeats, "sample_rate": SR, "channels": 2, "env": env, "rows": rows})


if __name__ == "__main__":
    main()
