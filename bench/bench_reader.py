"""Reader throughput: ``iter_batches`` (chunk-ordered, shuffled or not) vs random ``ds[i]``.

Run: ``python -m bench.bench_reader [--hours H] [--batch-size 64]`` (or ``make bench``;
``AUDIOPREP_BENCH_READER_HOURS``, default 1 h = 360 examples; 10 h = 3600). Writes
bench/results/reader-<H>h.json.

The store: the bench speech corpus (bench/corpus.py) prepared in-process
(``pipeline.run.steps.run_catalog``, no Prefect) with ``audio.clip: {mode: fixed, seconds: 1.0}``
and log_mel 80 (n_fft 400, hop 160): one (101, 80) float32 example per file, dense layout,
local disk. Reading is on one core (BLAS pools at 1 thread; zarr's own I/O event-loop thread
still exists). Each method repeats whole passes until ``--min-seconds`` elapsed and reports
examples/s and MB/s of float32 features delivered (normalized, as ``open_dataset`` defaults).
The page cache is warm for every method (the store was just written and read).
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import time

from bench import _util

WORK = pathlib.Path(__file__).parent / "corpus" / "_work"


def build_store(corpus: pathlib.Path, store: pathlib.Path) -> dict:
    from pipeline.config.catalog import load_catalog
    from pipeline.run.steps import run_catalog

    shutil.rmtree(store, ignore_errors=True)
    cat = _util.speech_catalog(corpus, store, partition_seconds=600, workers=1, clip={"mode": "fixed", "seconds": 1.0})
    path = _util.write_catalog(store.parent / f"{store.name}.yaml", cat)
    t0 = time.perf_counter()
    summary = run_catalog(load_catalog(str(path)))
    return {"build_seconds": time.perf_counter() - t0, "examples": summary.get("examples"), "store_bytes": _util.dir_bytes(store)}


def _passes(fn, min_seconds: float) -> tuple[int, int, float]:
    """Call fn() (one pass, returns (examples, bytes)) until min_seconds elapsed."""
    n = b = 0
    t0 = time.perf_counter()
    while True:
        dn, db = fn()
        n += dn
        b += db
        el = time.perf_counter() - t0
        if el >= min_seconds:
            return n, b, el


def measure_s3(store: pathlib.Path, args, n_total: int) -> dict:
    """The same reads against a copy of the store on a moto S3 endpoint on 127.0.0.1."""
    import numpy as np

    from pipeline.store.reader import open_dataset
    from tests.s3util import ACCESS_KEY, BUCKET, SECRET, make_bucket, moto_server, upload_tree

    with moto_server() as endpoint:
        make_bucket(endpoint, BUCKET)
        upload_tree(endpoint, store, BUCKET, "reader.zarr")
        opts = {"key": ACCESS_KEY, "secret": SECRET, "client_kwargs": {"endpoint_url": endpoint}}
        ds = open_dataset(f"s3://{BUCKET}/reader.zarr", storage_options=opts)
        rng = np.random.default_rng(1)

        def batches():
            n = b = 0
            for batch in ds.iter_batches(args.batch_size, shuffle=True, seed=n_total):
                n += batch["features"]["log_mel"].shape[0]
                b += batch["features"]["log_mel"].nbytes
            return n, b

        def random_pass():
            n = b = 0
            for i in rng.permutation(n_total)[: min(args.random_max, 300)]:
                x = ds[int(i)]["features"]["log_mel"]
                n += 1
                b += x.nbytes
            return n, b

        rates = {}
        for name, fn in {"iter_batches_shuffled": batches, "random_getitem": random_pass}.items():
            fn()
            n, b, el = _passes(fn, args.min_seconds)
            rates[name] = {"examples": n, "seconds": el, "examples_per_s": n / el, "mb_per_s": b / el / 1e6}
    return {"endpoint": "moto ThreadedMotoServer on 127.0.0.1", "rates": rates,
            "shuffled_over_random": rates["iter_batches_shuffled"]["examples_per_s"] / rates["random_getitem"]["examples_per_s"]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=_util.env_float("AUDIOPREP_BENCH_READER_HOURS", 1.0))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--min-seconds", type=float, default=3.0)
    p.add_argument("--random-max", type=int, default=2000, help="examples per random-access pass")
    p.add_argument("--out", type=pathlib.Path, default=None)
    p.add_argument("--no-s3", action="store_true", help="skip the same measurements on a moto S3 endpoint")
    args = p.parse_args([] if argv is None else argv)
    _util.set_one_thread()

    import numpy as np

    from bench.corpus import make_speech
    from pipeline.store.reader import open_dataset

    corpus = make_speech(args.hours)
    store = WORK / f"reader-{corpus.name}.zarr"
    build = build_store(corpus, store)
    ds = open_dataset(str(store))
    n_total = len(ds)
    first = ds[0]["features"]["log_mel"]

    def it_pass(shuffle: bool):
        def fn():
            n = b = 0
            for batch in ds.iter_batches(args.batch_size, shuffle=shuffle, seed=n_total):
                x = batch["features"]["log_mel"]
                n += x.shape[0]
                b += x.nbytes
            return n, b
        return fn

    rng = np.random.default_rng(0)

    def random_pass():
        n = b = 0
        for i in rng.permutation(n_total)[: args.random_max]:
            x = ds[int(i)]["features"]["log_mel"]
            n += 1
            b += x.nbytes
        return n, b

    with _util.RssSampler() as mem:
        methods = {"iter_batches_sequential": it_pass(False), "iter_batches_shuffled": it_pass(True), "random_getitem": random_pass}
        for fn in methods.values():  # warm-up: open arrays, page cache
            fn()
        rates = {}
        for name, fn in methods.items():
            n, b, el = _passes(fn, args.min_seconds)
            rates[name] = {"examples": n, "seconds": el, "examples_per_s": n / el, "mb_per_s": b / el / 1e6}
    s3 = {} if args.no_s3 else measure_s3(store, args, n_total)
    ratios = {
        "shuffled_over_random": rates["iter_batches_shuffled"]["examples_per_s"] / rates["random_getitem"]["examples_per_s"],
        "sequential_over_random": rates["iter_batches_sequential"]["examples_per_s"] / rates["random_getitem"]["examples_per_s"],
    }
    targets = {
        "shuffled_over_random>=10": ratios["shuffled_over_random"] >= 10,
        "shuffled_examples_per_s>=2000": rates["iter_batches_shuffled"]["examples_per_s"] >= 2000,
    }
    result = {"hours": args.hours, "examples": n_total, "example_shape": list(first.shape), "batch_size": args.batch_size,
              "store": {**build, "chunk": ds.layout.get("chunk")}, "rates": rates, "s3": s3, "ratios": ratios, "targets_met": targets,
              "reader_peak_rss_mb": mem.result()["driver_peak_mb"], "threads": 1, "env": _util.env_info(),
              "command": f"python -m bench.bench_reader --hours {args.hours:g} --batch-size {args.batch_size}"}
    tag = f"{args.hours:g}h".replace(".", "p")
    path = _util.save(f"reader-{tag}", result, args.out)
    shutil.rmtree(store, ignore_errors=True)

    print(f"{n_total} examples of {tuple(first.shape)} float32 log-mel (1 s), batch {args.batch_size}, local disk, 1 thread")
    print(f"{'method':<26}{'ex/s':>10}{'MB/s':>9}")
    for name, r in rates.items():
        print(f"{name:<26}{r['examples_per_s']:>10.0f}{r['mb_per_s']:>9.1f}")
    for name, r in s3.get("rates", {}).items():
        print(f"{'s3 ' + name:<26}{r['examples_per_s']:>10.0f}{r['mb_per_s']:>9.1f}")
    print(f"shuffled/random = {ratios['shuffled_over_random']:.1f}x (target >= 10), "
          f"shuffled {rates['iter_batches_shuffled']['examples_per_s']:.0f} ex/s (target >= 2000); wrote {path}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
