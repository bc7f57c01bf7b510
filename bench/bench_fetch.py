"""Many small objects from S3: batched concurrent ``fetch_many`` vs one blocking open per file.

Run: ``python -m bench.bench_fetch`` (or ``make bench``). Starts a moto S3 server in its own
process on 127.0.0.1 (so its request handling does not share this process's GIL), uploads
``--files`` objects of ``--kib`` KiB, then times, interleaved in each of ``--repeats``
rounds:

* ``fetch_many_cN``: :func:`pipeline.io.fetch.fetch_many` with ``concurrency=N`` (the
  partition worker's path; the catalog default is 16): one GET per file, N in flight.
  ``fetch_many_c1`` is one GET at a time, which separates the gain from concurrency from
  the saved request.
* ``fetch_sequential``: :func:`pipeline.io.fetch.fetch_sequential`, ``fs.open`` + ``read``
  per file (a HEAD for the size, then a GET), one file at a time: the baseline.

``--latency-ms`` puts a loopback proxy in front of the server that delays the start of every
response by that much, to imitate an object store's first-byte latency (tens of ms on real
S3), where concurrency matters most; those cases use the first ``--latency-files`` objects.
Every method must return exactly the uploaded bytes (checked). Writes
bench/results/fetch.json with the best round (files/s) and the median of each method.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from bench import _util

RESULTS = pathlib.Path(__file__).parent / "results" / "fetch.json"
BUCKET = "bench"


@contextmanager
def moto_process() -> Iterator[str]:
    """A moto server in a child process; yields its endpoint URL."""
    import urllib.request

    port = _util.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start on {url}") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def latency_proxy(upstream: str, latency_ms: float) -> Iterator[str]:
    """TCP proxy on loopback that holds back the first byte of every response for ``latency_ms``.

    Each request (however many packets it takes) costs one extra ``latency_ms`` before its
    response starts, like the first-byte latency of a real object store.
    """
    if latency_ms <= 0:
        yield upstream
        return
    host, port = upstream.rsplit("//", 1)[1].split(":")
    delay = latency_ms / 1000.0
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {"tasks": set()}

    async def handle(c_reader, c_writer) -> None:
        state["tasks"].add(asyncio.current_task())
        u_reader, u_writer = await asyncio.open_connection(host, int(port))
        waiting = asyncio.Event()  # a request went up and its response has not started

        async def up() -> None:
            while data := await c_reader.read(1 << 16):
                waiting.set()
                u_writer.write(data)
                await u_writer.drain()
            u_writer.close()

        async def down() -> None:
            while data := await u_reader.read(1 << 16):
                if waiting.is_set():
                    await asyncio.sleep(delay)
                    waiting.clear()
                c_writer.write(data)
                await c_writer.drain()
            c_writer.close()

        try:
            await asyncio.gather(up(), down())
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            for w in (u_writer, c_writer):
                w.close()
            state["tasks"].discard(asyncio.current_task())

    async def start() -> None:
        state["server"] = await asyncio.start_server(handle, "127.0.0.1", 0)
        state["port"] = state["server"].sockets[0].getsockname()[1]
        ready.set()

    async def stop() -> None:
        state["server"].close()
        tasks = list(state["tasks"])
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield f"http://127.0.0.1:{state['port']}"
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def upload(endpoint: str, n_files: int, size_bytes: int, seed: int = 0) -> dict[str, bytes]:
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    rng = np.random.default_rng(seed)
    blobs = {f"s3://{BUCKET}/audio/f{i:05d}.wav": rng.bytes(size_bytes) for i in range(n_files)}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: client.put_object(Bucket=BUCKET, Key=kv[0].split("/", 3)[3], Body=kv[1]), blobs.items()))
    return blobs


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--kib", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 20.0])
    parser.add_argument("--latency-files", type=int, default=100)
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS)
    args = parser.parse_args([] if argv is None else argv)

    from pipeline.io.fetch import fetch_many, fetch_sequential
    from pipeline.io.fs import filesystem

    cases = []
    with moto_process() as endpoint:
        t0 = time.perf_counter()
        blobs = upload(endpoint, args.files, args.kib * 1024)
        upload_seconds = time.perf_counter() - t0
        for latency in args.latency_ms:
            urls = list(blobs)[: args.latency_files] if latency > 0 else list(blobs)
            expected = {u: blobs[u] for u in urls}
            with latency_proxy(endpoint, latency) as url:
                opts = {"key": "bench", "secret": "bench", "client_kwargs": {"endpoint_url": url, "region_name": "us-east-1"}}
                fs, _ = filesystem(urls[0], opts)
                methods = {f"fetch_many_c{c}": (lambda c=c, u=urls, o=opts: fetch_many(u, o, concurrency=c)) for c in args.concurrency}
                methods["fetch_sequential"] = lambda u=urls, o=opts: fetch_sequential(u, o)
                # warm-up: connection pool, credentials, imports
                assert fetch_many(urls[:20], opts) == {u: blobs[u] for u in urls[:20]}
                times: dict[str, list[float]] = {name: [] for name in methods}
                for _ in range(args.repeats):
                    for name, fn in methods.items():
                        fs.invalidate_cache()
                        t = time.perf_counter()
                        got = fn()
                        times[name].append(time.perf_counter() - t)
                        if got != expected:
                            raise AssertionError(f"{name} returned other bytes than were uploaded")
                best = {k: len(urls) / min(v) for k, v in times.items()}
                median = {k: len(urls) / statistics.median(v) for k, v in times.items()}
                primary = "fetch_many_c16" if "fetch_many_c16" in best else f"fetch_many_c{args.concurrency[0]}"
                cases.append(
                    {
                        "added_latency_ms": latency,
                        "files": len(urls),
                        "files_per_second_best": best,
                        "files_per_second_median": median,
                        "wall_seconds": times,
                        "primary": primary,
                        "ratio_fetch_many_over_sequential": best[primary] / best["fetch_sequential"],
                        "ratio_median_fetch_many_over_sequential": median[primary] / median["fetch_sequential"],
                    }
                )

    result = {
        "files": args.files,
        "object_kib": args.kib,
        "repeats": args.repeats,
        "server": "moto (child process) on 127.0.0.1",
        "upload_seconds": upload_seconds,
        "cases": cases,
        "env": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            **_util.versions("s3fs", "fsspec", "aiobotocore", "moto"),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"objects of {args.kib} KiB from moto on loopback, best of {args.repeats}, files/s")
    for case in cases:
        rates = "  ".join(f"{k} {v:,.0f}" for k, v in case["files_per_second_best"].items())
        print(
            f"{case['files']} files, +{case['added_latency_ms']:g} ms: {rates}  ->  {case['primary']} / fetch_sequential = "
            f"{case['ratio_fetch_many_over_sequential']:.1f}x (median {case['ratio_median_fetch_many_over_sequential']:.1f}x)"
        )
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
