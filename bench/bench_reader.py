"""Reader throughput for 1 s, 10 s and 30 s clips: ``iter_batches`` (with the rank and bucket
machinery on) next to random ``ds[i]``, on a local store and on a moto S3 endpoint.

Run: ``python -m bench.bench_reader [--hours H] [--lengths 1,10,30] [--no-s3]`` (or
``make bench``; ``AUDIOPREP_BENCH_READER_HOURS``, default 1 h of audio per clip length).
Writes bench/results/reader-<H>h.json.

Stores: speech-like clips of exactly 1, 10 or 30 s, and of lengths drawn uniformly in
1-20 s (16 kHz FLAC, LibriSpeech layout, generated here), prepared in-process (``pipeline.run.steps.run_catalog``, no Prefect) with
log_mel 80 (n_fft 400, hop 160), float32: the 1 s store in the dense layout
(``audio.clip: {mode: fixed, seconds: 1}``, 101 frames per row), the others ragged
(1001 and 3001 frames per clip; 101-2001).

One core: the bench process is pinned to one CPU (``sched_setaffinity``, inherited by the
reader's prefetch threads and zarr's I/O thread) and BLAS pools use one thread. The moto
server runs in a child process (not pinned), as a real endpoint would. Each method repeats
whole passes until ``--min-seconds`` elapsed and reports examples/s and MB/s of decoded
float32 features delivered (the clips' real frames; ``batch_mb_per_s`` counts the padded
batch arrays), per second of wall clock and per CPU second of this process (all its
threads): on a shared host the CPU the process did not get does not count against it, so
``*_per_cpu_s`` is one core's throughput; the targets are read on it. The page cache is
warm for every local method.

Methods:
- ``iter_batches``: ``iter_batches(64, shuffle=True)``, one process;
- ``iter_batches_rank0_of_2``: the same epoch split over 2 ranks, rank 0 measured;
- ``iter_batches_buckets``: ``max_frames = 64 x mean frames``, 16 buckets, 2 ranks, rank 0
  (its padding efficiency is the issue's target on the 1-20 s store);
- ``iter_batches_zarr_path``: ``iter_batches`` with every read through zarr's ``arr[lo:hi]``
  (the reader's fallback, and what it did before the bulk decoder);
- ``random_getitem``: ``ds[i]`` in a random order; ``random_getitem_zarr_path`` likewise.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import pathlib
import shutil
import sys
import time

from bench import _util

WORK = pathlib.Path(__file__).parent / "corpus" / "_work"
SR = 16000


def clip_seconds(spec: str, n: int) -> list[float]:
    """``"10"``: n clips of 10 s; ``"1-20"``: n clips of uniformly drawn lengths in [1, 20] s."""
    import numpy as np

    if "-" in spec:
        lo, hi = (float(x) for x in spec.split("-"))
        return np.round(np.random.default_rng(20).uniform(lo, hi, n), 2).tolist()
    return [float(spec)] * n


def make_clips(spec: str, n: int, root: pathlib.Path) -> pathlib.Path:
    """``n`` speech-like FLAC clips of ``spec`` seconds under ``root`` (reused when complete)."""
    import numpy as np
    import soundfile as sf

    from bench.bench_features import speech_like
    from bench.corpus import speech_paths

    done = root / "_complete"
    if done.exists() and done.read_text() == str(n):
        return root
    shutil.rmtree(root, ignore_errors=True)
    for i, (path, seconds) in enumerate(zip(speech_paths(root, n), clip_seconds(spec, n))):
        y = speech_like(np.random.default_rng([len(spec), i]), seconds, SR)
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), np.clip(y, -1, 1).astype(np.float32), SR, format="FLAC", subtype="PCM_16")
    done.write_text(str(n))
    return root


def build_store(spec: str, hours: float) -> tuple[pathlib.Path, dict]:
    from pipeline.config.catalog import load_catalog
    from pipeline.run.steps import run_catalog

    mean = sum(float(x) for x in spec.split("-")) / len(spec.split("-"))
    n = max(64, int(round(hours * 3600 / mean)))
    tag = f"{spec}s-{n}"
    corpus = make_clips(spec, n, WORK / f"clips-{tag}")
    store = WORK / f"reader-{tag}.zarr"
    shutil.rmtree(store, ignore_errors=True)
    clip = {"mode": "fixed", "seconds": 1.0} if spec == "1" else None
    cat = _util.speech_catalog(corpus, store, partition_seconds=600, workers=1, clip=clip)
    cat["splits"] = {"train": 1.0, "val": 0.0, "test": 0.0}
    path = _util.write_catalog(WORK / f"reader-{tag}.yaml", cat)
    t0 = time.perf_counter()
    summary = run_catalog(load_catalog(str(path)))
    return store, {"build_seconds": round(time.perf_counter() - t0, 1), "examples": summary.get("examples"), "store_bytes": _util.dir_bytes(store)}


def _passes(fn, min_seconds: float) -> tuple[int, int, int, float, float]:
    """Call fn() (one pass -> (examples, real bytes, batch bytes)) until min_seconds elapsed;
    also the CPU seconds of this process (every thread) over those passes."""
    n = b = bb = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while True:
        dn, db, dbb = fn()
        n, b, bb = n + dn, b + db, bb + dbb
        el = time.perf_counter() - t0
        if el >= min_seconds:
            return n, b, bb, el, time.process_time() - c0


def _rate(fn, min_seconds: float) -> dict:
    fn()  # warm-up: open arrays, shard indexes, page cache
    n, b, bb, el, cpu = _passes(fn, min_seconds)
    return {"examples": n, "seconds": round(el, 3), "cpu_seconds": round(cpu, 3),
            "examples_per_s": n / el, "mb_per_s": b / el / 1e6, "batch_mb_per_s": bb / el / 1e6,
            "examples_per_cpu_s": n / cpu, "mb_per_cpu_s": b / cpu / 1e6}


def methods(ds, *, batch_size: int, random_max: int, prefetch: int, block_bytes: int | None = None, seed: int = 0) -> dict:
    """The measured passes over one opened dataset."""
    import numpy as np

    frames = ds.frames
    per_frame = 4 * sum(int(np.prod(ds.layout["feature_shapes"][f])) for f in ds.feature_names)
    max_frames = int(batch_size * frames.mean())
    epoch = [0]
    kw_block = {"block_bytes": block_bytes} if block_bytes else {}

    def batches(**kw):
        def fn():
            n = b = bb = 0
            epoch[0] += 1
            stream = ds.iter_batches(batch_size=None if kw.get("max_frames") else batch_size, seed=seed, epoch=epoch[0], prefetch=prefetch,
                                     **kw_block, **kw)
            for batch in stream:
                x = batch["features"]["log_mel"]
                n += x.shape[0]
                b += int(batch["lengths"].sum()) * per_frame
                bb += x.nbytes
            fn.stats = stream.stats.to_dict()
            return n, b, bb
        return fn

    rng = np.random.default_rng(seed)

    def random_pass():
        n = b = 0
        for i in rng.permutation(len(ds))[:random_max]:
            x = ds[int(i)]["features"]["log_mel"]
            n += 1
            b += x.nbytes
        return n, b, b

    return {
        "iter_batches": batches(),
        "iter_batches_rank0_of_2": batches(rank=0, world_size=2),
        "iter_batches_buckets": batches(rank=0, world_size=2, max_frames=max_frames, buckets=16),
        "random_getitem": random_pass,
    }, max_frames


def zarr_path(ds, on: bool) -> None:
    """Route every read of ``ds`` through zarr (``on``) or the bulk decoder."""
    from pipeline.read.chunks import bulk_format

    for name in ds.feature_names:
        r = ds._reader(name)
        r.format = None if on else bulk_format(r.arr)


def measure(ds, args, *, prefetch: int, zarr_too: bool) -> dict:
    fns, max_frames = methods(ds, batch_size=args.batch_size, random_max=args.random_max, prefetch=prefetch, block_bytes=args.block_bytes)
    rates = {}
    for name, fn in fns.items():
        rates[name] = _rate(fn, args.min_seconds)
        if getattr(fn, "stats", None):
            rates[name]["padding_efficiency"] = round(fn.stats["padding_efficiency"], 4)
    if zarr_too:
        zarr_path(ds, True)
        try:
            rates["iter_batches_zarr_path"] = _rate(fns["iter_batches"], args.min_seconds)
            rates["random_getitem_zarr_path"] = _rate(fns["random_getitem"], args.min_seconds)
        finally:
            zarr_path(ds, False)
    return {"rates": rates, "max_frames": max_frames}


def _serve_moto(queue) -> None:
    sys.path.insert(0, str(pathlib.Path(__file__).parent.parent))
    from tests.s3util import moto_server

    with moto_server() as endpoint:
        queue.put(endpoint)
        while True:
            time.sleep(3600)


def measure_s3(store: pathlib.Path, args, endpoint: str) -> dict:
    from pipeline.store.reader import open_dataset
    from tests.s3util import ACCESS_KEY, BUCKET, SECRET, upload_tree

    prefix = store.name
    upload_tree(endpoint, store, BUCKET, prefix)
    opts = {"key": ACCESS_KEY, "secret": SECRET, "client_kwargs": {"endpoint_url": endpoint}}
    ds = open_dataset(f"s3://{BUCKET}/{prefix}", storage_options=opts)
    out = {}
    for prefetch in (0, args.s3_prefetch):
        small = argparse.Namespace(**{**vars(args), "random_max": min(args.random_max, 200)})
        res = measure(ds, small, prefetch=prefetch, zarr_too=False)
        out[f"prefetch_{prefetch}"] = res["rates"]
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=_util.env_float("AUDIOPREP_BENCH_READER_HOURS", 1.0), help="audio per clip length")
    p.add_argument("--lengths", default="1,10,30,1-20", help="clip lengths in seconds (a range: lengths drawn uniformly)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--min-seconds", type=float, default=3.0)
    p.add_argument("--random-max", type=int, default=1000, help="examples per random-access pass")
    p.add_argument("--prefetch", type=int, default=0, help="blocks fetched ahead, local (the reader's default there: 0)")
    p.add_argument("--s3-prefetch", type=int, default=8, help="blocks read ahead from S3")
    p.add_argument("--block-bytes", type=int, default=None, help="iter_batches(block_bytes=...); default the reader's")
    p.add_argument("--cpu", type=int, default=None, help="the CPU to pin to (default: the last one allowed)")
    p.add_argument("--out", type=pathlib.Path, default=None)
    p.add_argument("--no-s3", action="store_true", help="skip the same measurements on a moto S3 endpoint")
    args = p.parse_args([] if argv is None else argv)
    _util.set_one_thread()
    allowed = sorted(os.sched_getaffinity(0))
    cpu = args.cpu if args.cpu is not None else allowed[-1]

    specs = args.lengths.split(",")
    stores = {s: build_store(s, args.hours) for s in specs}  # built on every core, before pinning

    moto = queue = None
    if not args.no_s3:
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        moto = ctx.Process(target=_serve_moto, args=(queue,), daemon=True)
        moto.start()
        endpoint = queue.get(timeout=60)
        from tests.s3util import BUCKET, make_bucket

        make_bucket(endpoint, BUCKET)
    os.sched_setaffinity(0, {cpu})

    import psutil

    from pipeline.store.reader import open_dataset

    results = {}
    try:
        with _util.RssSampler() as mem:
            for spec, (store, build) in stores.items():
                ds = open_dataset(str(store))
                rss0 = psutil.Process().memory_info().rss
                local = measure(ds, args, prefetch=args.prefetch, zarr_too=True)
                r = local["rates"]
                entry = {"clip_seconds": spec, "examples": len(ds), "frames_per_example": float(ds.frames.mean()),
                         "layout": ds.layout["mode"], "chunk": ds.layout["chunk"], "store": build, "max_frames": local["max_frames"],
                         "local": r,
                         "ratios": {"iter_batches_over_random": _ratio(r, "iter_batches", "random_getitem"),
                                    "iter_batches_over_random_zarr_path": _ratio(r, "iter_batches", "random_getitem_zarr_path"),
                                    "bulk_over_zarr_path": _ratio(r, "iter_batches", "iter_batches_zarr_path")}}
                if not args.no_s3:
                    entry["s3"] = measure_s3(store, args, endpoint)
                entry["reader_rss_growth_mb"] = round((mem.result()["driver_peak_mb"] * 2**20 - rss0) / 2**20, 1)
                results[f"{spec}s"] = entry
                print(_table(entry), flush=True)
        peak = mem.result()["driver_peak_mb"]
    finally:
        if moto is not None:
            moto.terminate()
            moto.join(10)
    targets = {}
    for key, e in results.items():
        r = e["local"]
        worst_mb = min(r[m]["mb_per_cpu_s"] for m in ("iter_batches", "iter_batches_rank0_of_2", "iter_batches_buckets"))
        targets[f"{key}: iter_batches >= 1 GB/s (every variant)"] = worst_mb >= 1000
        targets[f"{key}: iter_batches >= 10x random ds[i]"] = e["ratios"]["iter_batches_over_random"] >= 10
        targets[f"{key}: iter_batches >= 10x random ds[i] through zarr"] = e["ratios"]["iter_batches_over_random_zarr_path"] >= 10
        if "-" in e["clip_seconds"]:
            targets[f"{key}: bucket padding efficiency >= 0.90"] = r["iter_batches_buckets"]["padding_efficiency"] >= 0.90
        if e["clip_seconds"] == "1":
            worst = min(r[m]["examples_per_cpu_s"] for m in ("iter_batches", "iter_batches_rank0_of_2", "iter_batches_buckets"))
            targets[f"{key}: >= 10,000 examples/s (every variant)"] = worst >= 10000
            if "s3" in e:
                targets[f"{key}: S3 >= 2,000 examples/s"] = e["s3"][f"prefetch_{args.s3_prefetch}"]["iter_batches"]["examples_per_cpu_s"] >= 2000
    result = {"hours_per_length": args.hours, "batch_size": args.batch_size, "cpu_pinned": cpu, "results": results, "targets_met": targets,
              "reader_peak_rss_mb": peak, "env": _util.env_info(),
              "command": f"python -m bench.bench_reader --hours {args.hours:g} --lengths {args.lengths}" + (" --no-s3" if args.no_s3 else "")}
    tag = f"{args.hours:g}h".replace(".", "p")
    path = _util.save(f"reader-{tag}", result, args.out)
    for store, _ in stores.values():
        shutil.rmtree(store, ignore_errors=True)
    for name, ok in targets.items():
        print(f"{'met ' if ok else 'MISS'}  {name}")
    print(f"wrote {path}")
    return result


def _ratio(r: dict, a: str, b: str) -> float:
    """Per CPU second (wall-clock ratios are in the rates)."""
    return r[a]["examples_per_cpu_s"] / r[b]["examples_per_cpu_s"]


def _cols(r: dict) -> str:
    return f"{r['examples_per_s']:>10.0f}{r['mb_per_s']:>9.0f}{r['examples_per_cpu_s']:>10.0f}{r['mb_per_cpu_s']:>10.0f}"


def _table(e: dict) -> str:
    lines = [f"{e['examples']} clips of {e['clip_seconds']} s ({e['frames_per_example']:.0f} frames, {e['layout']}), batch 64, 1 core",
             f"{'method':<34}{'ex/s':>10}{'MB/s':>9}{'ex/cpu-s':>10}{'MB/cpu-s':>10}"]
    for name, r in e["local"].items():
        eff = f"  padding efficiency {r['padding_efficiency']:.3f}" if "padding_efficiency" in r else ""
        lines.append(f"{name:<34}{_cols(r)}{eff}")
    for pf, rates in e.get("s3", {}).items():
        for name, r in rates.items():
            lines.append(f"{'s3 ' + pf + ' ' + name:<34}{_cols(r)}")
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
