"""Quality metrics and the duplicate index: cost, accuracy and driver memory (issue 20).

Run: ``python -m bench.bench_quality`` (``make bench``). One thread, under the workers'
allocator settings (it re-runs itself with them). Writes bench/results/quality.json. Three parts:

* ``cost``: per clip, what :func:`pipeline.quality.analyze.measure` (every metric, the PCM
  hash, the fingerprint and its sketch) adds to the log-mel featurize of the same clip
  (FeatureSet with ``log_mel``, n_fft 400, hop 160, 80 mels), as a partition does it: the
  featurize alone (``log_mel``) against ``analyze`` + ``measure(..., analysis=)`` +
  ``compute(..., analysis=)`` (``log_mel_with_quality``), each clip timed on its own, the
  two alternating, the minimum of ``--repeats`` per clip averaged over the clips;
  ``quality`` is the difference (``best_round``: the same from the best of whole rounds, the
  method before, noisier on a shared host). Target: ratio <= 0.10. ``--baseline REF`` times
  REF's code with the same code in the same run. Also timed: ``measure`` with no analysis
  (it takes its own STFT: tests, or a catalog whose features take none).
* ``duplicates``: precision and recall of the near-duplicate index on the generated set of
  pipeline.quality.testset (copies: 64 kbit/s MP3 through libsndfile's LAME, 16 -> 8 -> 16 kHz,
  +-6 dB, 0.1 s trimmed; negatives: the other clips of the same speakers), pairwise.
* ``driver_memory``: the coordinator's side of the reduction at ``--files`` files: synthetic
  fingerprints in partition files (1 % planted near copies), the reducers in a process pool,
  the driver collecting edges and joining clusters; its Python-heap peak (tracemalloc) and RSS.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import pathlib
import tempfile
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import soundfile as sf

from bench._util import env_info, set_one_thread

RESULTS = pathlib.Path(__file__).parent / "results" / "quality.json"
SR = 16000


#: The cost of measuring, timed by the same code for this checkout (in this process) and for
#: a baseline git ref (a child process reading that ref's ``pipeline/``): per clip, the
#: log-mel featurize alone against ``analyze`` + ``measure(..., analysis=)`` +
#: ``compute(..., analysis=)`` (a partition's order; without ``analysis=`` where the ref's
#: ``measure`` takes none), each clip timed on its own, the two in alternating order, the
#: minimum of ``repeats`` per clip, averaged over the clips.
_COST = """
import inspect, json, sys, time
import numpy as np
from threadpoolctl import threadpool_limits
threadpool_limits(1)
from pipeline.features import FeaturesConfig, build_feature_set
from pipeline.quality.analyze import measure
from pipeline.quality.config import QualityConfig
from pipeline.quality.testset import speech_like


def cost(n, seconds, repeats):
    rng = np.random.default_rng(0)
    clips = [speech_like(rng, f0_hz=rng.uniform(90, 240), tract=rng.uniform(0.85, 1.2), seconds=seconds) for _ in range(n)]
    fset = build_feature_set(FeaturesConfig.model_validate({"stft": {"n_fft": 400, "hop_length": 160}, "log_mel": {"n_mels": 80}}), 16000)
    cfg = QualityConfig()
    reuses = "analysis" in inspect.signature(measure).parameters

    def with_quality(y):
        if reuses:
            ana = fset.analyze(y)
            measure(y, y, 16000, cfg, analysis=ana)
            fset.compute(y, analysis=ana)
        else:
            measure(y, y, 16000, cfg)
            fset.compute(y)

    runs = {"log_mel": fset.compute, "log_mel_with_quality": with_quality}
    for f in runs.values():
        f(clips[0])  # compile the quality kernels (numba caches them on disk after the first process)
    best = {name: np.full(n, np.inf) for name in runs}
    rounds = {name: np.inf for name in runs}
    for r in range(repeats):
        took = dict.fromkeys(runs, 0.0)
        for i, y in enumerate(clips):
            for name in (list(runs) if (r + i) % 2 else list(runs)[::-1]):
                t0 = time.perf_counter()
                runs[name](y)
                dt = time.perf_counter() - t0
                best[name][i] = min(best[name][i], dt)
                took[name] += dt
        for name in runs:
            rounds[name] = min(rounds[name], took[name] / n)
    ms = {name: float(np.mean(v)) * 1e3 for name, v in best.items()}
    quality = ms["log_mel_with_quality"] - ms["log_mel"]
    rounds_quality = (rounds["log_mel_with_quality"] - rounds["log_mel"]) * 1e3
    return {
        "clips": n, "clip_seconds": seconds, "repeats": repeats, "reuses_analysis": reuses,
        "log_mel_ms_per_clip": ms["log_mel"], "log_mel_with_quality_ms_per_clip": ms["log_mel_with_quality"],
        "quality_ms_per_clip": quality, "ratio": quality / ms["log_mel"],
        "best_round": {"log_mel_ms_per_clip": rounds["log_mel"] * 1e3, "quality_ms_per_clip": rounds_quality,
                       "ratio": rounds_quality / (rounds["log_mel"] * 1e3)},
    }


if __name__ == "__main__":
    print(json.dumps(cost(int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]))))
"""


def bench_cost(n_clips: int, seconds: float, repeats: int) -> dict:
    from pipeline.io.audio import resample
    from pipeline.quality.analyze import measure
    from pipeline.quality.config import QualityConfig
    from pipeline.quality.testset import speech_like

    ns: dict = {"__name__": "bench_quality_cost"}
    exec(compile(_COST, "bench_quality._COST", "exec"), ns)  # the very code the baseline runs
    out = ns["cost"](n_clips, seconds, repeats)
    rng = np.random.default_rng(0)
    clips = [speech_like(rng, f0_hz=rng.uniform(90, 240), tract=rng.uniform(0.85, 1.2), seconds=seconds) for _ in range(n_clips)]
    cfg = QualityConfig()
    # what a worker does per clip besides: decode a 22.05 kHz FLAC and resample it to 16 kHz
    flacs = []
    for y in clips:
        buf = io.BytesIO()
        sf.write(buf, resample(y, SR, 22050), 22050, format="FLAC")
        flacs.append(buf.getvalue())

    def decode_resample(data: bytes) -> np.ndarray:
        z, sr = sf.read(io.BytesIO(data), dtype="float32")
        return resample(z, sr, SR)

    best = {"quality_standalone": np.inf, "decode_resample": np.inf}
    for _ in range(repeats):
        t0 = time.perf_counter()
        for y in clips:
            measure(y, y, SR, cfg)  # no analysis: its own STFT (tests, or a catalog whose features take none)
        best["quality_standalone"] = min(best["quality_standalone"], (time.perf_counter() - t0) / n_clips)
        t0 = time.perf_counter()
        for data in flacs:
            decode_resample(data)
        best["decode_resample"] = min(best["decode_resample"], (time.perf_counter() - t0) / n_clips)
    ms = {k: v * 1e3 for k, v in best.items()}
    return {
        **out, "target_ratio": 0.10,
        "quality_standalone_ms_per_clip": ms["quality_standalone"], "decode_resample_ms_per_clip": ms["decode_resample"],
        "ratio_standalone": ms["quality_standalone"] / out["log_mel_ms_per_clip"],
        "ratio_to_decode_resample_log_mel": out["quality_ms_per_clip"] / (out["log_mel_ms_per_clip"] + ms["decode_resample"]),
    }


def bench_baseline(ref: str, n_clips: int, seconds: float, repeats: int) -> dict:
    """The same cost, measured by the same code (:data:`_COST`) on the code of git ``ref``
    (its ``pipeline/`` in a temporary tree, in a child process with this one's environment):
    the before of a change, in the same bench run."""
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        commit = subprocess.run(["git", "rev-parse", ref], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        archive = subprocess.run(["git", "archive", commit, "pipeline"], cwd=root, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        out = subprocess.run([sys.executable, "-c", _COST, str(n_clips), str(seconds), str(repeats)],
                             env={**os.environ, "PYTHONPATH": tmp}, cwd=tmp, capture_output=True, text=True, check=True).stdout
    return {"ref": ref, "commit": commit, **json.loads(out.strip().splitlines()[-1])}


def bench_duplicates(speakers: int, clips: int) -> dict:
    from pipeline.quality.analyze import measure
    from pipeline.quality.config import DuplicatesConfig, QualityConfig
    from pipeline.quality.duplicates import clusters, pack, reduce_bucket, write_fingerprints
    from pipeline.quality.testset import make_set
    from pipeline.store.location import StoreLocation

    items = make_set(speakers, clips, seed=2026)
    out: dict = {"speakers": speakers, "clips_per_speaker": clips, "items": len(items), "by_threshold": {}}
    with tempfile.TemporaryDirectory() as tmp:
        loc = StoreLocation(tmp)
        ms = [measure(y, y, SR, QualityConfig()) for _, _, y in items]
        write_fingerprints(loc, "p0", pack([c for c, _, _ in items], [m.pcm_hash for m in ms], [m.codes for m in ms], [m.keys for m in ms],
                                           ms[0].frame_seconds))
        truth = {p for k, g in itertools.groupby(sorted(range(len(items)), key=lambda i: items[i][1]), key=lambda i: items[i][1])
                 for p in itertools.combinations(sorted(g), 2)}
        index_of = {("p0", c): i for i, (c, _, _) in enumerate(items)}
        # the margin: copies' lowest similarity to their original, distinct clips' highest (same speaker)
        from pipeline.quality.fingerprint import similarity

        cfg = DuplicatesConfig()
        max_off = int(round(cfg.max_offset_seconds / ms[0].frame_seconds))
        sim = {}
        by_id = {c: i for i, (c, _, _) in enumerate(items)}
        for i, (cid, cl, _) in enumerate(items):
            if "~" in cid:
                t = cid.split("~")[1]
                v = similarity(ms[by_id[cl]].codes, ms[i].codes, max_offset=max_off, min_overlap=cfg.min_overlap)
                sim.setdefault(t, []).append(v)
        originals = [i for i, (c, _, _) in enumerate(items) if "~" not in c]
        distinct = [similarity(ms[i].codes, ms[j].codes, max_offset=max_off, min_overlap=cfg.min_overlap)
                    for i, j in itertools.combinations(originals, 2) if items[i][0].split("_")[0] == items[j][0].split("_")[0]]
        out["copy_similarity_min"] = {t: float(np.min(v)) for t, v in sim.items()}
        out["same_speaker_distinct_similarity_max"] = float(np.max(distinct))
        out["same_speaker_distinct_pairs"] = len(distinct)
        for thr in (0.6, 0.65, 0.7, 0.75, 0.8, 0.85):
            found = clusters(reduce_bucket(loc, ["p0"], 0, 1, DuplicatesConfig(similarity=thr)), index_of)
            pairs = {p for c in found for p in itertools.combinations(c, 2)}
            tp = len(pairs & truth)
            per_transform = {}
            for cid, cl, _ in items:
                if "~" in cid:
                    t = cid.split("~")[1]
                    i, j = next(k for k, it in enumerate(items) if it[0] == cl), next(k for k, it in enumerate(items) if it[0] == cid)
                    per_transform.setdefault(t, []).append((min(i, j), max(i, j)) in pairs)
            out["by_threshold"][str(thr)] = {
                "precision": tp / len(pairs) if pairs else 1.0, "recall": tp / len(truth), "true_pairs": len(truth), "found_pairs": len(pairs),
                "recall_per_transform": {t: float(np.mean(v)) for t, v in per_transform.items()},
            }
    return out


def _synthetic_partition(args) -> None:
    """Write one partition file of random fingerprints; every 100th row a noisy copy of the row before."""
    from pipeline.quality.duplicates import pack, write_fingerprints
    from pipeline.quality.fingerprint import sketch
    from pipeline.store.location import StoreLocation

    root, k, n, frames = args
    rng = np.random.default_rng(k)
    ids, pcm, codes, keys = [], [], [], []
    prev = None
    for i in range(n):
        if i % 100 == 1 and prev is not None:
            c = prev ^ (rng.random((prev.size, 16)) < 0.1).astype(np.int32).dot(1 << np.arange(16)).astype(np.int32)
        else:
            c = rng.integers(0, 1 << 16, frames, dtype=np.int32)
        prev = c
        ids.append(f"{k:04d}-{i:05d}")
        pcm.append(f"{rng.integers(0, 2**63):016x}")
        codes.append(c)
        keys.append(sketch(c))
    write_fingerprints(StoreLocation(root), f"p{k:05d}", pack(ids, pcm, codes, keys, 0.016))


def _reduce(args):
    from pipeline.quality.config import DuplicatesConfig
    from pipeline.quality.duplicates import reduce_bucket
    from pipeline.store.location import StoreLocation

    root, ids, b, n = args
    tracemalloc.start()
    edges = reduce_bucket(StoreLocation(root), ids, b, n, DuplicatesConfig())
    peak = tracemalloc.get_traced_memory()[1]
    return edges, peak


def bench_driver_memory(files: int, per_partition: int, frames: int, workers: int) -> dict:
    import psutil

    from pipeline.quality.duplicates import clusters

    n_parts = -(-files // per_partition)
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(workers) as pool:
        t0 = time.perf_counter()
        list(pool.map(_synthetic_partition, [(tmp, k, per_partition, frames) for k in range(n_parts)]))
        gen_s = time.perf_counter() - t0
        ids = [f"p{k:05d}" for k in range(n_parts)]
        n_buckets = max(2, workers)
        rss0 = psutil.Process().memory_info().rss
        tracemalloc.start()
        t0 = time.perf_counter()
        edges, reducer_peaks = [], []
        for e, peak in pool.map(_reduce, [(tmp, ids, b, n_buckets) for b in range(n_buckets)]):
            edges.extend(e)
            reducer_peaks.append(peak)
        index_of: dict = {}
        for e in edges:
            for key in (e.a, e.b):
                index_of.setdefault(key, len(index_of))
        found = clusters(edges, index_of)
        reduce_s = time.perf_counter() - t0
        driver_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rss1 = psutil.Process().memory_info().rss
        disk = sum(f.stat().st_size for f in pathlib.Path(tmp, "_quality").iterdir())
    planted = sum(1 for k in range(n_parts) for i in range(per_partition) if i % 100 == 1)
    return {
        "files": n_parts * per_partition, "partitions": n_parts, "frames_per_file": frames, "buckets": n_buckets, "workers": workers,
        "fingerprint_files_mb": disk / 2**20, "generate_seconds": gen_s, "reduce_seconds": reduce_s,
        "planted_copies": planted, "clusters_found": len(found), "edges": len(edges),
        "driver_python_peak_mb": driver_peak / 2**20, "driver_rss_growth_mb": (rss1 - rss0) / 2**20,
        "reducer_python_peak_mb": [p / 2**20 for p in reducer_peaks],
    }


def _as_worker() -> int | None:
    """Re-run this benchmark under the glibc settings the product gives its workers
    (pipeline.run.allocator): they are read at process start, and without them every clip's
    multi-megabyte arrays cost page faults that no worker pays."""
    import subprocess
    import sys

    from pipeline.run.allocator import worker_malloc_environ

    want = worker_malloc_environ()
    if all(os.environ.get(k) == v for k, v in want.items()):
        return None
    args = sys.argv[1:] if __name__ == "__main__" else []  # run_all's arguments are not ours
    return subprocess.run([sys.executable, "-m", "bench.bench_quality", *args], env={**os.environ, **want}).returncode


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        rc = _as_worker()
        if rc is not None:
            return rc
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--speakers", type=int, default=20)
    ap.add_argument("--clips-per-speaker", type=int, default=5)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--per-partition", type=int, default=500)
    ap.add_argument("--frames", type=int, default=300, help="fingerprint frames per synthetic file (300 = 4.8 s)")
    ap.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    ap.add_argument("--baseline", default=None, help="also time the cost with the code of this git ref (the before of a change)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    set_one_thread()
    result = {"env": env_info()}
    if args.baseline:
        result["cost_baseline"] = bench_baseline(args.baseline, args.clips, args.seconds, args.repeats)
        print(json.dumps(result["cost_baseline"], indent=1), flush=True)
    result["cost"] = bench_cost(args.clips, args.seconds, args.repeats)
    print(json.dumps(result["cost"], indent=1), flush=True)
    result["duplicates"] = bench_duplicates(args.speakers, args.clips_per_speaker)
    d = result["duplicates"]
    print(json.dumps({k: d[k] for k in ("copy_similarity_min", "same_speaker_distinct_similarity_max")}, indent=1), flush=True)
    print(json.dumps({t: (v["precision"], v["recall"]) for t, v in d["by_threshold"].items()}), flush=True)
    result["driver_memory"] = bench_driver_memory(args.files, args.per_partition, args.frames, args.workers)
    print(json.dumps(result["driver_memory"], indent=1), flush=True)
    pathlib.Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
