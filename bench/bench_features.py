"""Feature extraction speed: the 004 seed's per-feature librosa loop vs one shared STFT.

Run: ``python -m bench.bench_features`` (or ``make bench``). Single thread (BLAS limited to
one thread; scipy.fft uses one worker by default; librosa's numba code is serial).
Synthetic speech-like clips (harmonics on a moving f0, syllable envelope, noise bursts)
are generated with a seeded numpy Generator. Writes bench/results/features.json.

Timed, best of ``--repeats`` rounds, methods interleaved within each round:

* ``a_seed_loop``: the 004 seed's loop as written (chroma_stft, rms, spectral_centroid,
  spectral_bandwidth, spectral_rolloff, zero_crossing_rate, mfcc(n_mfcc=20) each called on
  ``y`` with librosa defaults, then means). chroma_stft estimates the tuning per clip.
* ``a0_seed_loop_tuning0``: the same loop with ``chroma_stft(tuning=0.0)`` (what (b) computes).
* ``b_feature_set``: FeatureSet with the same features and STFT (n_fft=2048, hop=512),
  ``summaries: [mean]``: ``fs.summarize(fs.compute(y))``.
* ``c_librosa_log_mel``: ``power_to_db(melspectrogram(y, n_fft=400, hop_length=160, n_mels=80))``.
* ``d_feature_set_log_mel``: FeatureSet with only ``log_mel`` (the same settings).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext

import numpy as np

RESULTS = pathlib.Path(__file__).parent / "results" / "features.json"


def speech_like(rng: np.random.Generator, seconds: float = 10.0, sample_rate: int = 16000) -> np.ndarray:
    """One synthetic utterance: voiced harmonics on a gliding f0, syllable AM, fricative bursts."""
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    f0_base = rng.uniform(90, 220)
    f0 = f0_base * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t + rng.uniform(0, 6.3)))
    f0 += 0.02 * f0_base * np.sin(2 * np.pi * 5.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = np.zeros(n)
    formants = rng.uniform([500, 1200, 2400], [800, 1800, 3000])
    for k in range(1, 30):
        fk = k * f0_base
        if fk > sample_rate / 2 - 500:
            break
        gain = sum(np.exp(-0.5 * ((fk - fm) / 150.0) ** 2) for fm in formants) + 0.3 / k
        voiced += gain * np.sin(k * phase)
    syllable = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6.3)), 0, None) ** 2
    y = voiced * syllable
    noise = rng.standard_normal(n)
    bursts = np.zeros(n)
    for start in rng.integers(0, n - sample_rate // 5, size=int(seconds * 2)):
        length = int(rng.integers(sample_rate // 40, sample_rate // 8))
        bursts[start : start + length] += np.hanning(length)
    y = y / np.abs(y).max() * 0.5 + 0.15 * noise * bursts + 0.002 * noise
    return (y / np.abs(y).max() * 0.8).astype(np.float32)


def seed_loop(y: np.ndarray, sr: int, tuning: float | None) -> np.ndarray:
    """The 004 seed's per-clip features (each librosa call recomputes its own STFT)."""
    import librosa

    rmse = librosa.feature.rms(y=y)
    chroma = librosa.feature.chroma_stft(y=y, sr=sr, tuning=tuning)
    cent = librosa.feature.spectral_centroid(y=y, sr=sr)
    bw = librosa.feature.spectral_bandwidth(y=y, sr=sr)
    rolloff = librosa.feature.spectral_rolloff(y=y, sr=sr)
    zcr = librosa.feature.zero_crossing_rate(y)
    mfcc = librosa.feature.mfcc(y=y, sr=sr)
    row = [np.mean(chroma), np.mean(rmse), np.mean(cent), np.mean(bw), np.mean(rolloff), np.mean(zcr)]
    return np.array(row + [np.mean(e) for e in mfcc])


def _single_thread():
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - env vars above then do the job for fresh processes
        return nullcontext()
    return threadpool_limits(limits=1)


def _time(fn: Callable[[np.ndarray], object], clips: list[np.ndarray]) -> float:
    t0 = time.perf_counter()
    for y in clips:
        fn(y)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS)
    args = parser.parse_args([] if argv is None else argv)

    with _single_thread():
        import librosa

        from pipeline.features import FeaturesConfig, build_feature_set

        sr = 16000
        rng = np.random.default_rng(4)
        clips = [speech_like(rng, args.seconds, sr) for _ in range(args.clips)]
        audio_seconds = sum(len(y) for y in clips) / sr

        seed_cfg = FeaturesConfig.model_validate(
            {
                "stft": {"n_fft": 2048, "hop_length": 512},
                "chroma": {},
                "rms": {},
                "spectral_centroid": {},
                "spectral_bandwidth": {},
                "spectral_rolloff": {},
                "zero_crossing_rate": {},
                "mfcc": {"n_mfcc": 20},
                "summaries": ["mean"],
            }
        )
        seed_fs = build_feature_set(seed_cfg, sr)
        logmel_fs = build_feature_set(
            FeaturesConfig.model_validate({"stft": {"n_fft": 400, "hop_length": 160}, "log_mel": {"n_mels": 80}}), sr
        )

        def librosa_log_mel(y: np.ndarray) -> np.ndarray:
            return librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_fft=400, hop_length=160, n_mels=80))

        methods: dict[str, Callable[[np.ndarray], object]] = {
            "a_seed_loop": lambda y: seed_loop(y, sr, None),
            "a0_seed_loop_tuning0": lambda y: seed_loop(y, sr, 0.0),
            "b_feature_set": lambda y: seed_fs.summarize(seed_fs.compute(y)),
            "c_librosa_log_mel": librosa_log_mel,
            "d_feature_set_log_mel": lambda y: logmel_fs.compute(y),
        }

        # Same answers: (b) vs (a0) on the first clip, (d) vs (c).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = seed_loop(clips[0], sr, 0.0)
        feats = seed_fs.compute(clips[0])
        mine = np.array(
            [feats["chroma"].mean(), feats["rms"].mean(), feats["spectral_centroid"].mean(),
             feats["spectral_bandwidth"].mean(), feats["spectral_rolloff"].mean(),
             feats["zero_crossing_rate"].mean(), *feats["mfcc"].mean(axis=0)]
        )
        max_rel_b = float(np.max(np.abs(mine - ref) / np.maximum(np.abs(ref), 1e-3)))
        max_abs_d_db = float(np.max(np.abs(logmel_fs.compute(clips[0])["log_mel"].T - librosa_log_mel(clips[0]))))

        best = {name: float("inf") for name in methods}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for fn in methods.values():  # warm-up: numba JIT, filterbank caches
                fn(clips[0])
            for _ in range(args.repeats):
                for name, fn in methods.items():
                    best[name] = min(best[name], _time(fn, clips))

    xrt = {name: audio_seconds / wall for name, wall in best.items()}
    result = {
        "clips": args.clips,
        "clip_seconds": args.seconds,
        "sample_rate": sr,
        "audio_seconds": audio_seconds,
        "repeats": args.repeats,
        "threads": 1,
        "wall_seconds_best": best,
        "x_realtime": xrt,
        "ratios": {
            "b_over_a": xrt["b_feature_set"] / xrt["a_seed_loop"],
            "b_over_a0": xrt["b_feature_set"] / xrt["a0_seed_loop_tuning0"],
            "d_over_c": xrt["d_feature_set_log_mel"] / xrt["c_librosa_log_mel"],
        },
        "targets": {"b_over_a": 5.0, "d_over_c": 1.0},
        "agreement": {"b_vs_a0_max_rel": max_rel_b, "d_vs_c_max_abs_db": max_abs_d_db},
        "env": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "librosa": librosa.__version__,
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{args.clips} clips x {args.seconds:g} s at {sr} Hz, 1 thread, best of {args.repeats}")
    print(f"{'method':<26}{'wall s':>9}{'x realtime':>12}")
    for name in methods:
        print(f"{name:<26}{best[name]:>9.3f}{xrt[name]:>12.0f}")
    r = result["ratios"]
    print(f"b/a = {r['b_over_a']:.1f}x (target >= 5), b/a0 = {r['b_over_a0']:.1f}x, d/c = {r['d_over_c']:.2f}x (target >= 1)")
    print(f"agreement: b vs a0 max rel {max_rel_b:.1e}; d vs c max |dB| {max_abs_d_db:.1e}; wrote {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
