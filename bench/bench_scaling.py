"""Memory at scale: worker peak RSS vs corpus size, and driver memory for a 100,000-file catalog.

Run: ``python -m bench.bench_scaling [--small-hours 1] [--large-hours H] [--files N]`` (or
``make bench``; ``AUDIOPREP_BENCH_LARGE_HOURS`` default 2, ``AUDIOPREP_BENCH_CATALOG_FILES``
default 100000). Writes bench/results/scaling.json.

* worker memory: ``audioprep run --workers 2 --no-report`` (``bench.bench_pipeline`` child
  ``pipeline_w2``) on the small and the large speech corpus; peak RSS per worker process
  (psutil sampling, 50 ms). Target: the same within 10%.
* driver memory: in a fresh process, ``pipeline.run.steps.discover`` +
  ``pipeline.io.discovery.probe_headers`` (all batches, in-process) +
  ``pipeline.run.planner.build_plan`` for a catalog of N tiny files (0.1 s 16 kHz WAV,
  bench/corpus.py ``--tiny``); peak RSS of that process and the RSS after imports. The
  full flow (partitions, commit) on 100k files is not run here (it would take too long on
  2 cores); discovery, probing and planning are the driver's share that grows with the file
  count. Target: under 1 GiB.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys
import time

from bench import _util

WORK = pathlib.Path(__file__).parent / "corpus" / "_work"


def child_driver(corpus: pathlib.Path, work: pathlib.Path) -> dict:
    import psutil

    from pipeline.config.catalog import load_catalog
    from pipeline.io.discovery import probe_headers
    from pipeline.run import planner, steps

    base_rss = psutil.Process().memory_info().rss / 2**20
    cat = _util.speech_catalog(corpus, work / "tiny.zarr", partition_seconds=600, workers=2)
    cat["sources"][0]["pattern"] = "**/*.wav"
    cat["sources"][0]["label"] = {"from": "parent_dir"}
    cat["sources"][0]["group"] = {"from": "parent_dir"}
    path = _util.write_catalog(work / "tiny.yaml", cat)
    with _util.RssSampler(interval=0.02) as mem:
        t0 = time.perf_counter()
        loaded = load_catalog(str(path))
        refs, banks = steps.discover(loaded)
        t1 = time.perf_counter()
        opts = steps.source_options(loaded)
        headers = {}
        for batch in steps.probe_batches(refs, loaded.catalog.execution.probe_batch_files):
            headers.update((h.example_id, h) for h in probe_headers(batch, opts))
        t2 = time.perf_counter()
        loc = steps.store_location(loaded)
        plan = planner.build_plan(loaded, refs, headers, banks, location=loc, run_id=planner.new_run_id())
        t3 = time.perf_counter()
    return {"files": len(refs), "partitions": len(plan.partitions), "rss_after_imports_mb": base_rss,
            "driver_peak_mb": mem.result()["driver_peak_mb"], "discover_seconds": t1 - t0, "probe_seconds": t2 - t1,
            "plan_seconds": t3 - t2}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small-hours", type=float, default=1.0)
    p.add_argument("--large-hours", type=float, default=_util.env_float("AUDIOPREP_BENCH_LARGE_HOURS", 2.0))
    p.add_argument("--files", type=int, default=_util.env_int("AUDIOPREP_BENCH_CATALOG_FILES", 100_000))
    p.add_argument("--partition-seconds", type=float, default=_util.env_float("AUDIOPREP_BENCH_PARTITION_SECONDS", 300.0))
    p.add_argument("--skip", default="", help="comma-separated: workers,driver")
    p.add_argument("--out", type=pathlib.Path, default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--corpus", default=None, help=argparse.SUPPRESS)
    p.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = p.parse_args([] if argv is None else argv)
    if args.child:
        work = pathlib.Path(args.work)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        print(json.dumps(child_driver(pathlib.Path(args.corpus).resolve(), work)), flush=True)
        return {}

    from bench.bench_pipeline import _run
    from bench.corpus import make_speech, make_tiny

    skip = set(args.skip.split(","))
    result: dict = {"env": _util.env_info(),
                    "command": f"python -m bench.bench_scaling --small-hours {args.small_hours:g} --large-hours {args.large_hours:g} --files {args.files}"}
    if "workers" not in skip:
        mem = {}
        for h in (args.small_hours, args.large_hours):
            r = _run("pipeline_w2", make_speech(h), args.partition_seconds, timeline=False)
            mem[f"{h:g}h"] = {k: r[k] for k in ("worker_peak_mb", "workers_peak_mb", "driver_peak_mb", "prefect_server_peak_mb",
                                                "audio_seconds", "partitions", "steady_x_realtime") if k in r}
        small, large = mem[f"{args.small_hours:g}h"]["worker_peak_mb"], mem[f"{args.large_hours:g}h"]["worker_peak_mb"]
        result["worker_memory"] = {"runs": mem, "large_over_small": large / small, "target_within": 0.10,
                                   "met": abs(large / small - 1) <= 0.10}
    if "driver" not in skip:
        corpus = make_tiny(args.files)
        r = _util.run_child(["-m", "bench.bench_scaling", "--child", "driver", "--corpus", str(corpus), "--work", str(WORK / "tiny")])
        shutil.rmtree(WORK / "tiny", ignore_errors=True)
        r["target_mb"] = 1024
        r["met"] = r["driver_peak_mb"] < 1024
        r["scope"] = "discover + probe_headers + build_plan in one process (no partitions, no commit)"
        result["driver_memory"] = r
    path = _util.save("scaling", result, args.out)

    if "worker_memory" in result:
        wm = result["worker_memory"]
        for k, v in wm["runs"].items():
            print(f"pipeline w2 {k:>6}: worker peak {v['worker_peak_mb']:.0f} MB, driver peak {v['driver_peak_mb']:.0f} MB")
        print(f"worker peak large/small = {wm['large_over_small']:.3f} (target within 10%: {'met' if wm['met'] else 'NOT met'})")
    if "driver_memory" in result:
        d = result["driver_memory"]
        print(f"driver for {d['files']} files: peak {d['driver_peak_mb']:.0f} MB (after imports {d['rss_after_imports_mb']:.0f} MB); "
              f"discover {d['discover_seconds']:.1f} s, probe {d['probe_seconds']:.1f} s, plan {d['plan_seconds']:.1f} s "
              f"(target < 1024 MB: {'met' if d['met'] else 'NOT met'})")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
