"""Augmentation throughput, one thread, 16 kHz ~10 s clips: ``python -m bench.bench_augment``.

Reports x-realtime (audio seconds processed per wall second) of each transform, of librosa's
``pitch_shift`` (``res_type="soxr_hq"``) and ``time_stretch`` side by side with ours, and
of two chains: the catalog example (each transform at its ``p``, averaged over copies)
and every transform on. Writes bench/results/augment.json.

Clips are synthetic speech-like signals (gliding harmonic voice with syllable envelope
plus noise), so the bench needs no data set. Each figure is the best of ``repeats`` runs
per clip, summed over clips.
"""

from __future__ import annotations

import json
import pathlib
import platform
import time
import zlib
from collections.abc import Callable

import numpy as np

SR = 16000
CLIP_SECONDS = 10.0
N_CLIPS = 6

EXAMPLE_CHAIN = {
    "copies": 2,
    "waveform": [
        {"name": "time_shift", "p": 0.5, "max_shift_seconds": 0.3, "mode": "wrap"},
        {"name": "pitch_shift", "p": 0.5, "min_semitones": -2, "max_semitones": 2},
        {"name": "time_stretch", "p": 0.3, "min_rate": 0.9, "max_rate": 1.1},
        {"name": "speed", "p": 0.3, "factors": [0.9, 1.0, 1.1]},
        {"name": "gain", "p": 0.5, "min_gain_db": -6, "max_gain_db": 6},
        {"name": "gaussian_noise", "p": 0.5, "min_snr_db": 10, "max_snr_db": 30},
        {"name": "background_noise", "p": 0.3, "source": "noise", "min_snr_db": 5, "max_snr_db": 20},
        {"name": "reverb", "p": 0.2, "source": "rirs"},
    ],
    "spec": [
        {"name": "freq_mask", "count": 2, "max_width_bins": 8, "features": ["log_mel"]},
        {"name": "time_mask", "count": 2, "max_width_frames": 20},
    ],
}


def speech_like(seed: int, seconds: float = CLIP_SECONDS, sr: int = SR) -> np.ndarray:
    """Harmonic 'voice' with a gliding f0 (90-250 Hz), 4 Hz syllable envelope, and noise."""
    r = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f0 = 90 + 160 * (0.5 + 0.5 * np.sin(2 * np.pi * r.uniform(0.1, 0.5) * t + r.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum(np.sin(k * phase) / k for k in range(1, 16))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t + r.uniform(0, 6)), 0, None) ** 2
    y = 0.1 * voice * envelope + 0.003 * r.standard_normal(n)
    return y.astype(np.float32)


def _timed(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _figure(seconds_audio: float, seconds_wall: float) -> dict:
    return {
        "x_realtime": round(seconds_audio / seconds_wall, 1),
        "ms_per_10s_clip": round(1000 * seconds_wall / seconds_audio * 10.0, 3),
    }


def run(repeats: int = 5, n_clips: int = N_CLIPS) -> dict:
    import librosa

    from pipeline.augment import (
        AugmentConfig,
        background_noise,
        build_chain,
        freq_mask,
        gain,
        gaussian_noise,
        pitch_shift,
        reverb,
        speed,
        time_mask,
        time_shift,
        time_stretch,
    )
    from pipeline.rng import example_rng

    clips = [speech_like(i) for i in range(n_clips)]
    r = np.random.default_rng(123)
    ir = (np.exp(-np.arange(int(0.4 * SR)) / (0.06 * SR)) * r.standard_normal(int(0.4 * SR))).astype(np.float32)
    banks = {"noise": [r.standard_normal(int(3.7 * SR)).astype(np.float32)], "rirs": [ir]}
    audio_s = n_clips * CLIP_SECONDS
    semitones = [-2.0, -1.0, 1.0, 2.0]
    rates = [0.9, 1.1]

    def over_clips(f: Callable[[np.ndarray, int], object], n_params: int = 1) -> dict:
        # Warm up caches (windows, imports) once, then time each clip and parameter.
        f(clips[0], 0)
        wall = sum(_timed(lambda y=y, j=j: f(y, j), repeats) for y in clips for j in range(n_params))
        return _figure(audio_s * n_params, wall)

    def step(mod, params, *extra):
        return lambda y, j: mod.apply(y, SR, np.random.default_rng(j), params, *extra)

    out: dict = {}
    out["time_shift"] = over_clips(step(time_shift, time_shift.TimeShiftParams(max_shift_seconds=0.3, mode="wrap")))
    out["pitch_shift"] = over_clips(lambda y, j: pitch_shift.pitch_shift(y, SR, semitones[j]), len(semitones))
    out["librosa.effects.pitch_shift"] = over_clips(
        lambda y, j: librosa.effects.pitch_shift(y, sr=SR, n_steps=semitones[j], res_type="soxr_hq"), len(semitones)
    )
    out["time_stretch"] = over_clips(lambda y, j: time_stretch.time_stretch(y, rates[j]), len(rates))
    out["librosa.effects.time_stretch"] = over_clips(
        lambda y, j: librosa.effects.time_stretch(y, rate=rates[j]), len(rates)
    )
    out["speed"] = over_clips(lambda y, j: speed.change_speed(y, SR, (0.9, 1.1)[j]), 2)
    out["gain"] = over_clips(step(gain, gain.GainParams()))
    out["gaussian_noise"] = over_clips(step(gaussian_noise, gaussian_noise.GaussianNoiseParams()))
    out["background_noise"] = over_clips(
        step(background_noise, background_noise.BackgroundNoiseParams(source="noise"), banks["noise"])
    )
    out["reverb (0.4 s IR)"] = over_clips(step(reverb, reverb.ReverbParams(source="rirs"), banks["rirs"]))

    n_frames = int(CLIP_SECONDS * SR) // 160 + 1  # 10 ms hop
    feats = {
        "log_mel": np.random.default_rng(0).standard_normal((n_frames, 80)).astype(np.float32),
        "mfcc": np.random.default_rng(1).standard_normal((n_frames, 13)).astype(np.float32),
    }
    out["freq_mask"] = over_clips(
        lambda y, j: freq_mask.apply(feats, np.random.default_rng(j), freq_mask.FreqMaskParams(count=2))
    )
    out["time_mask"] = over_clips(
        lambda y, j: time_mask.apply(feats, np.random.default_rng(j), time_mask.TimeMaskParams(count=2))
    )

    example = build_chain(AugmentConfig.model_validate(EXAMPLE_CHAIN))
    all_on = build_chain(
        AugmentConfig.model_validate(
            {**EXAMPLE_CHAIN, "waveform": [{**s, "p": 1.0} for s in EXAMPLE_CHAIN["waveform"]]}
        )
    )
    n_copies = 16

    def chain_fn(chain):
        def f(y, j):
            clip_id = f"clip-{zlib.crc32(y[:64].tobytes()):08x}"
            rng = example_rng(0, clip_id, j + 1, stream="augment")
            y2, _ = chain.augment_waveform(y, SR, rng, banks)
            chain.augment_features(feats, rng)

        return f

    out["chain: catalog example (each at its p, mean over copies)"] = over_clips(chain_fn(example), n_copies)
    out["chain: all 8 waveform transforms + 2 masks, p=1"] = over_clips(chain_fn(all_on), 2)

    speedup = {
        "pitch_shift vs librosa": round(out["pitch_shift"]["x_realtime"] / out["librosa.effects.pitch_shift"]["x_realtime"], 2),
        "time_stretch vs librosa": round(out["time_stretch"]["x_realtime"] / out["librosa.effects.time_stretch"]["x_realtime"], 2),
    }
    return {
        "what": "x_realtime = audio seconds processed per wall-clock second, one thread",
        "sample_rate": SR,
        "clip_seconds": CLIP_SECONDS,
        "n_clips": n_clips,
        "repeats": repeats,
        "pitch_shift_semitones": semitones,
        "time_stretch_rates": rates,
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
        "results": out,
        "speedup": speedup,
    }


def main() -> None:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=1):
            report = run()
    else:  # pragma: no cover
        report = run()
    path = pathlib.Path(__file__).parent / "results" / "augment.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)
    width = max(len(k) for k in report["results"])
    for name, fig in report["results"].items():
        print(f"{name:<{width}}  {fig['x_realtime']:>10.1f} x realtime  {fig['ms_per_10s_clip']:>9.3f} ms / 10 s clip")
    for name, x in report["speedup"].items():
        print(f"{name}: {x}x")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
