"""Benchmark corpus generator: LibriSpeech-shaped speech-like FLAC plus a music-like set.

Run: ``python -m bench.corpus --hours 10`` (writes ``bench/corpus/speech-10h/``, gitignored).

* speech: ``--hours`` of ~10 s clips (9-11 s), 16 kHz mono FLAC (PCM_16), laid out like
  LibriSpeech: ``<root>/<speaker>/<chapter>/<speaker>-<chapter>-<utt:04d>.flac``.
* music (``--music-hours``): ~10 s clips, 44.1 kHz stereo FLAC, ``<root>/music/<genre>/trk-NNNNN.flac``.
* tiny (``--tiny N``): N files of 0.1 s 16 kHz WAV (for the driver-memory figure on large catalogs).

Fast: a handful of base signals are synthesized once (``bench.bench_features.speech_like``),
then each file is a random window of a base signal with random gain, a random resampling
factor (pitch/speed), and fresh noise, written with soundfile from a process pool.
A corpus directory with a complete ``_corpus.json`` is reused, not regenerated.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

ROOT = pathlib.Path(__file__).parent / "corpus"
SR_SPEECH = 16000
SR_MUSIC = 44100
N_BASES = 8
BASE_SECONDS = 24.0

_BASES: list[np.ndarray] | None = None


def _speech_bases() -> list[np.ndarray]:
    global _BASES
    if _BASES is None:
        from bench.bench_features import speech_like

        rng = np.random.default_rng(2024)
        _BASES = [speech_like(rng, BASE_SECONDS, SR_SPEECH) for _ in range(N_BASES)]
    return _BASES


def _speech_clip(rng: np.random.Generator) -> np.ndarray:
    base = _speech_bases()[int(rng.integers(N_BASES))]
    seconds = rng.uniform(9.0, 11.0)
    factor = rng.uniform(0.9, 1.1)  # speed/pitch variation by index stretching
    n = int(seconds * SR_SPEECH)
    start = rng.uniform(0, len(base) - n * factor - 2)
    pos = start + np.arange(n) * factor
    y = np.interp(pos, np.arange(len(base)), base)
    y = y * rng.uniform(0.3, 1.0) + rng.standard_normal(n) * rng.uniform(1e-4, 3e-3)
    return np.clip(y, -1, 1).astype(np.float32)


def _music_clip(rng: np.random.Generator, seconds: float = 10.0) -> np.ndarray:
    n = int(seconds * SR_MUSIC)
    t = np.arange(n) / SR_MUSIC
    y = np.zeros((n, 2), np.float32)
    beat = rng.uniform(1.5, 2.5)
    root = rng.uniform(110, 220)
    for k, ratio in enumerate((1.0, 1.25, 1.5, 2.0)):
        f = root * ratio * (1 + 0.002 * np.sin(2 * np.pi * 5 * t))
        env = np.exp(-((t * beat + k * 0.25) % 1.0) * 4)
        tone = np.sin(2 * np.pi * np.cumsum(f) / SR_MUSIC) + 0.3 * np.sin(4 * np.pi * np.cumsum(f) / SR_MUSIC)
        pan = rng.uniform(0.2, 0.8)
        y[:, 0] += (tone * env * pan).astype(np.float32)
        y[:, 1] += (tone * env * (1 - pan)).astype(np.float32)
    y += 0.01 * rng.standard_normal((n, 2)).astype(np.float32)
    return (0.8 * y / np.abs(y).max()).astype(np.float32)


def _write_speech(job: tuple[str, int, int]) -> float:
    import soundfile as sf

    path, index, seed = job
    rng = np.random.default_rng([seed, index])
    y = _speech_clip(rng)
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y, SR_SPEECH, format="FLAC", subtype="PCM_16")
    return len(y) / SR_SPEECH


def _write_music(job: tuple[str, int, int]) -> float:
    import soundfile as sf

    path, index, seed = job
    rng = np.random.default_rng([seed, index, 1])
    y = _music_clip(rng)
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y, SR_MUSIC, format="FLAC", subtype="PCM_16")
    return len(y) / SR_MUSIC


def _write_tiny(job: tuple[str, int, int]) -> float:
    import soundfile as sf

    path, index, seed = job
    rng = np.random.default_rng([seed, index, 2])
    y = (0.1 * rng.standard_normal(1600)).astype(np.float32)
    sf.write(path, y, SR_SPEECH, format="WAV", subtype="PCM_16")
    return 0.1


def speech_paths(root: pathlib.Path, n_files: int) -> list[pathlib.Path]:
    """LibriSpeech layout: 20 utterances per chapter, 4 chapters per speaker."""
    out = []
    for i in range(n_files):
        spk = 100 + i // 80
        chap = 1000 + (i // 20) % 4 + 10 * (i // 80)
        utt = i % 20
        out.append(root / str(spk) / str(chap) / f"{spk}-{chap}-{utt:04d}.flac")
    return out


def _pool_map(fn, jobs, processes: int) -> float:
    if processes <= 1 or len(jobs) < 64:
        return float(sum(map(fn, jobs)))
    with ProcessPoolExecutor(processes) as ex:
        return float(sum(ex.map(fn, jobs, chunksize=64)))


def make_speech(hours: float, *, root: pathlib.Path | None = None, seed: int = 0, processes: int | None = None) -> pathlib.Path:
    """~``hours`` of 10 s 16 kHz FLAC clips under ``root`` (default bench/corpus/speech-<hours>h)."""
    n_files = max(1, int(round(hours * 3600 / 10.0)))
    root = root or ROOT / f"speech-{_tag(hours)}"
    return _make(root, "speech", [str(p) for p in speech_paths(root, n_files)], _write_speech, seed, processes, SR_SPEECH)


def make_music(hours: float, *, root: pathlib.Path | None = None, seed: int = 0, processes: int | None = None) -> pathlib.Path:
    n_files = max(1, int(round(hours * 3600 / 10.0)))
    root = root or ROOT / f"music-{_tag(hours)}"
    genres = ("ambient", "pop", "folk", "drone")
    paths = [str(root / "music" / genres[i % 4] / f"trk-{i:05d}.flac") for i in range(n_files)]
    return _make(root, "music", paths, _write_music, seed, processes, SR_MUSIC)


def make_tiny(n_files: int, *, root: pathlib.Path | None = None, seed: int = 0, processes: int | None = None) -> pathlib.Path:
    root = root or ROOT / f"tiny-{n_files}"
    paths = [str(root / f"d{i // 1000:03d}" / f"t{i:06d}.wav") for i in range(n_files)]
    for d in {os.path.dirname(p) for p in paths}:
        os.makedirs(d, exist_ok=True)
    return _make(root, "tiny", paths, _write_tiny, seed, processes, SR_SPEECH)


def _tag(hours: float) -> str:
    return f"{hours:g}h".replace(".", "p")


def _make(root: pathlib.Path, kind: str, paths: list[str], fn, seed: int, processes: int | None, sr: int) -> pathlib.Path:
    marker = root / "_corpus.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("files") == len(paths) and info.get("seed") == seed:
            return root
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    total = _pool_map(fn, [(p, i, seed) for i, p in enumerate(paths)], processes or os.cpu_count() or 1)
    info = {"kind": kind, "files": len(paths), "audio_seconds": total, "sample_rate": sr, "seed": seed,
            "generate_seconds": time.perf_counter() - t0}
    marker.write_text(json.dumps(info, indent=2) + "\n")
    print(f"generated {kind} corpus {root}: {len(paths)} files, {total / 3600:.2f} h in {info['generate_seconds']:.1f} s", file=sys.stderr)
    return root


def corpus_info(root: pathlib.Path) -> dict:
    return json.loads((root / "_corpus.json").read_text())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=1.0, help="hours of 16 kHz speech-like FLAC")
    p.add_argument("--music-hours", type=float, default=0.0, help="hours of 44.1 kHz stereo music-like FLAC")
    p.add_argument("--tiny", type=int, default=0, help="number of 0.1 s WAV files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--processes", type=int, default=None)
    args = p.parse_args(argv)
    if args.hours > 0:
        print(make_speech(args.hours, seed=args.seed, processes=args.processes))
    if args.music_hours > 0:
        print(make_music(args.music_hours, seed=args.seed, processes=args.processes))
    if args.tiny > 0:
        print(make_tiny(args.tiny, seed=args.seed, processes=args.processes))


if __name__ == "__main__":
    main(sys.argv[1:])
