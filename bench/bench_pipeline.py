"""End to end, side by side: the seeds' librosa loop, lhotse, and this pipeline (1 and 2 workers).

Run: ``python -m bench.bench_pipeline [--hours H] [--partition-seconds S] [--skip lhotse,...]``
(or ``make bench``; ``AUDIOPREP_BENCH_HOURS`` sets the default size, 1 h). Writes
bench/results/pipeline-<H>h.json.

Same corpus (bench/corpus.py: ~10 s 16 kHz FLAC speech, LibriSpeech layout), same machine,
same thread budget (every BLAS/OpenMP/torch pool limited to 1 thread per process; at most 2
processes compute at once, the machine's 2 cores). Each method runs in a fresh Python
process (so imports and start-up are counted, and memory is its own):

* ``bare``: decode (``pipeline.io.audio.decode``) + to_mono + resample + ``FeatureSet.compute``
  (log_mel 80, n_fft 400, hop 160), one process, no orchestration, no store. The reference
  for per-core efficiency.
* ``bare_x2``: the bare loop as two processes at once, each on half the files: the same 2
  cores busy as with 2 workers, so the per-core reference for them.
* ``seeds``: the seeds' loop as written: ``librosa.load(sr=16000)`` + ``melspectrogram`` +
  ``power_to_db``, ``np.save`` per file. One process (the seed is a serial loop).
* ``lhotse``: ``RecordingSet.from_dir`` + ``CutSet.from_manifests`` +
  ``compute_and_store_features(Fbank(80 bins), LilcomChunkyWriter, num_jobs=2)``.
* ``pipeline_wN``: the Prefect flow ``flows.prepare.prepare`` (catalog -> store, report=False)
  with N Dask worker processes, in ``audioprep run``'s runtime (``flows.runtime.local_runtime``:
  the process starts a local Prefect API and an embedded LocalCluster, together). Cold start.
  ``pipeline_w1``'s worker process is pinned to one CPU (``_util.pin_workers``): its
  shard-writing thread would otherwise use the idle second core.
* ``pipeline_w2_api``: the same, with a Prefect API already running (``PREFECT_API_URL``, as
  under a deployment or ``audioprep serve``); the process still starts its cluster.
* ``pipeline_w2_cluster``: the API and a 2-worker ``dask scheduler``/``dask worker`` cluster
  already run (``--scheduler``): the product's "scale across a cluster that already exists".

Figures: x-realtime = audio seconds / process wall seconds (imports, API and cluster start
included); per-core = x-realtime / processes computing; start-up = wall of the same method on
a 10-file corpus; steady state (pipeline) = audio of the partitions completed after the first
N (one per worker) / time between the N-th and the last completion (the workers' clock:
``finished_unix`` of each partition result); in-task per-core = audio /
sum of the partitions' compute_seconds; peak RSS of the driver and of each worker process
(psutil, sampled every 50 ms); output bytes per audio hour.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import pathlib
import shutil
import statistics
import sys
import time

T_PROCESS = time.perf_counter()

from bench import _util  # noqa: E402

WORK = pathlib.Path(__file__).parent / "corpus" / "_work"


def _files(corpus: pathlib.Path) -> list[str]:
    return sorted(glob.glob(str(corpus / "**" / "*.flac"), recursive=True))


# --- children: one method each, print one JSON line ------------------------------------------
def child_bare(corpus: pathlib.Path, work: pathlib.Path, part: tuple[int, int] = (0, 1)) -> dict:
    _util.set_one_thread()
    from pipeline.features import FeaturesConfig, build_feature_set
    from pipeline.io.audio import decode, resample, to_mono

    sr = 16000
    fset = build_feature_set(FeaturesConfig.model_validate({"stft": {"n_fft": 400, "hop_length": 160}, "log_mel": {"n_mels": 80}}), sr)
    files = _files(corpus)[part[0] :: part[1]]
    audio = 0.0
    t0 = time.perf_counter()
    t_first = None
    for f in files:
        with open(f, "rb") as fh:
            data = fh.read()
        d = decode(data, f, max_seconds=600, max_channels=8)
        y = resample(to_mono(d.y), d.sample_rate, sr)
        fset.compute(y)
        audio += d.frames / d.sample_rate
        if t_first is None:
            t_first = time.perf_counter()
    t1 = time.perf_counter()
    n = len(files)
    steady = audio * (n - 1) / n / (t1 - t_first) if n > 1 else audio / (t1 - t0)
    return {"audio_seconds": audio, "files": n, "loop_seconds": t1 - t0, "steady_x_realtime": steady, "processes": 1}


def child_seeds(corpus: pathlib.Path, work: pathlib.Path) -> dict:
    _util.set_one_thread()
    import librosa
    import numpy as np

    out = work / "seeds"
    files = _files(corpus)
    audio = 0.0
    t0 = time.perf_counter()
    t_first = None
    for f in files:
        y, sr = librosa.load(f, sr=16000)
        S = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=400, hop_length=160, n_mels=80)
        log_S = librosa.power_to_db(S, ref=np.max)
        dst = out / (os.path.relpath(f, corpus) + ".npy")
        dst.parent.mkdir(parents=True, exist_ok=True)
        np.save(dst, log_S)
        audio += len(y) / sr
        if t_first is None:
            t_first = time.perf_counter()
    t1 = time.perf_counter()
    n = len(files)
    steady = audio * (n - 1) / n / (t1 - t_first) if n > 1 else audio / (t1 - t0)
    return {"audio_seconds": audio, "files": n, "loop_seconds": t1 - t0, "steady_x_realtime": steady, "processes": 1,
            "output_bytes": _util.dir_bytes(out)}


def child_lhotse(corpus: pathlib.Path, work: pathlib.Path) -> dict:
    _util.set_one_thread()
    from lhotse import CutSet, Fbank, FbankConfig, LilcomChunkyWriter, RecordingSet

    t0 = time.perf_counter()
    recordings = RecordingSet.from_dir(corpus, "*.flac", num_jobs=2)
    cuts = CutSet.from_manifests(recordings=recordings)
    t_manifest = time.perf_counter()
    out = work / "lhotse"
    cuts = cuts.compute_and_store_features(
        extractor=Fbank(FbankConfig(num_mel_bins=80)),
        storage_path=str(out / "feats"),
        num_jobs=2,
        storage_type=LilcomChunkyWriter,
    )
    cuts.to_file(out / "cuts.jsonl.gz")
    t1 = time.perf_counter()
    audio = float(sum(c.duration for c in cuts))
    return {"audio_seconds": audio, "files": len(cuts), "loop_seconds": t1 - t0, "manifest_seconds": t_manifest - t0,
            "features_seconds": t1 - t_manifest, "features_x_realtime": audio / (t1 - t_manifest), "processes": 2,
            "output_bytes": _util.dir_bytes(out / "feats") if (out / "feats").is_dir() else sum(
                os.path.getsize(p) for p in glob.glob(str(out / "feats*"))),
            "manifest_bytes": os.path.getsize(out / "cuts.jsonl.gz")}


def child_pipeline(corpus: pathlib.Path, work: pathlib.Path, workers: int, partition_seconds: float, scheduler: str | None = None,
                   dtype: str = "float32") -> dict:
    from flows import hooks
    from flows.runtime import local_runtime

    store = work / f"store-w{workers}.zarr"
    cat = _util.write_catalog(work / f"catalog-w{workers}.yaml",
                              _util.speech_catalog(corpus, store, partition_seconds=partition_seconds, workers=workers, dtype=dtype))
    done: list[tuple[float, float, float]] = []
    # completion times as the workers saw them: the flow may take a result only after it has
    # submitted every partition (seconds at 100+ partitions)
    t0, t0_unix = time.perf_counter(), time.time()
    hooks.install(partition=lambda r: done.append((t0 + r["finished_unix"] - t0_unix, r["audio_seconds"], r["compute_seconds"])))
    # the same runtime as `audioprep run`: cluster workers start while the API boots
    marks: dict[str, float] = {}
    hooks.install(plan=lambda plan: marks.setdefault("plan", time.perf_counter()))
    pin = os.environ.get("AUDIOPREP_BENCH_PIN_WORKERS_TO_CPU")
    with local_runtime(workers, scheduler) as rt, (_util.pin_workers(int(pin)) if pin else contextlib.nullcontext()):
        t_api = time.perf_counter()
        from flows.prepare import prepare  # imported while the API booted, as in `audioprep run`

        summary = prepare(str(cat), workers=workers, scheduler=rt["scheduler"], report=False)
        marks["flow_done"] = time.perf_counter()
    t1 = time.perf_counter()
    done.sort()
    audio = sum(a for _, a, _ in done)
    res = {"audio_seconds": audio, "files": summary.get("examples"), "loop_seconds": t1 - t0, "runtime_start_seconds": t_api - t0,
           "plan_ready_seconds": marks.get("plan", t1) - t0, "teardown_seconds": t1 - marks.get("flow_done", t1),
           "partitions": len(done), "processes": workers, "partition_seconds": partition_seconds,
           "first_partition_seconds": (done[0][0] - t0) if done else None,
           "in_task_x_realtime_per_core": audio / sum(c for *_, c in done) if done else None,
           "output_bytes": _util.dir_bytes(store), "features_bytes": _util.dir_bytes(store / "features"),
           "partition_times": [round(t - t0, 3) for t, _, _ in done],
           "partition_starts": sorted(round(t - c - t0, 3) for t, _, c in done)}
    if len(done) > workers:
        tail = done[workers:]
        res["steady_x_realtime"] = sum(a for _, a, _ in tail) / (done[-1][0] - done[workers - 1][0])
    return res


def _child_main(args) -> None:
    corpus, work = pathlib.Path(args.corpus).resolve(), pathlib.Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with _util.RssSampler() as mem:
        if args.child == "bare":
            k, n = (int(v) for v in args.part.split("/"))
            res = child_bare(corpus, work, (k, n))
        elif args.child == "seeds":
            res = child_seeds(corpus, work)
        elif args.child == "lhotse":
            res = child_lhotse(corpus, work)
        elif args.child.startswith("pipeline_w"):
            from pipeline.run.warmup import skip_final_collection

            skip_final_collection()  # as `audioprep run` does
            workers = int(args.child.removeprefix("pipeline_w").split("_")[0])
            res = child_pipeline(corpus, work, workers, args.partition_seconds, scheduler=args.scheduler, dtype=args.dtype)
        else:
            raise SystemExit(f"unknown method {args.child}")
    res.update(mem.result())
    res["process_seconds_in_child"] = time.perf_counter() - T_PROCESS
    print(json.dumps(res, default=str), flush=True)


# --- parent ----------------------------------------------------------------------------------
def _run(method: str, corpus: pathlib.Path, partition_seconds: float, dtype: str = "float32") -> dict:
    """One method in a fresh process. ``pipeline_wN_api``: a Prefect API already runs (as under a
    deployment); ``pipeline_wN_cluster``: the API and an N-worker Dask cluster already run."""
    if method == "bare_x2":
        return _run_bare_x2(corpus)
    work = WORK / f"{corpus.name}-{method}"
    env = _util.one_thread_env(PREFECT_HOME=str(WORK / f"prefect-{os.getpid()}"))
    args = ["-m", "bench.bench_pipeline", "--child", method, "--corpus", str(corpus), "--work", str(work),
            "--partition-seconds", str(partition_seconds), "--dtype", dtype]
    if method == "pipeline_w1" and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        # 1 worker = 1 core: its shard-writing thread must not borrow the idle second core
        env["AUDIOPREP_BENCH_PIN_WORKERS_TO_CPU"] = "1"
    with contextlib.ExitStack() as stack:
        if method.endswith(("_api", "_cluster")):
            from flows.server import prefect_api

            os.environ.update(PREFECT_HOME=env["PREFECT_HOME"])
            env["PREFECT_API_URL"] = stack.enter_context(prefect_api())
        if method.endswith("_cluster"):
            workers = int(method.removeprefix("pipeline_w").split("_")[0])
            args += ["--scheduler", stack.enter_context(_util.ExternalCluster(workers, env)).address]
        res = _util.run_child(args, env=env)
    res["load_before"] = os.getloadavg()[0]
    shutil.rmtree(work, ignore_errors=True)
    return res


def _run_bare_x2(corpus: pathlib.Path) -> dict:
    """The bare loop as two processes at once, each on half the files: the reference for the
    per-core figures of 2 workers (the same 2 cores busy, sharing caches and memory bandwidth)."""
    import concurrent.futures

    def half(k: int) -> dict:
        work = WORK / f"{corpus.name}-bare_x2-{k}"
        args = ["-m", "bench.bench_pipeline", "--child", "bare", "--part", f"{k}/2", "--corpus", str(corpus), "--work", str(work)]
        try:
            return _util.run_child(args, env=_util.one_thread_env())
        finally:
            shutil.rmtree(work, ignore_errors=True)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        a, b = pool.map(half, (0, 1))
    return {"audio_seconds": a["audio_seconds"] + b["audio_seconds"], "files": a["files"] + b["files"],
            "steady_x_realtime": a["steady_x_realtime"] + b["steady_x_realtime"], "processes": 2,
            "process_wall_seconds": max(a["process_wall_seconds"], b["process_wall_seconds"]),
            "driver_peak_mb": max(a["driver_peak_mb"], b["driver_peak_mb"]), "worker_peak_mb": None, "halves": [a, b]}


def _prefect_first_use() -> float:
    """Create and migrate the Prefect database of this benchmark's PREFECT_HOME once, as the first
    ``audioprep run`` on a machine does (about 5 s here); measured runs then find it, as every
    later run on a user's machine does. Returns the seconds it took."""
    env = _util.one_thread_env(PREFECT_HOME=str(WORK / f"prefect-{os.getpid()}"))
    code = "from flows.server import prefect_api\nwith prefect_api():\n    pass\nprint('{}')"
    return _util.run_child(["-c", code], env=env)["process_wall_seconds"]


def _table(runs: dict[str, dict], startup: dict[str, float]) -> dict[str, dict]:
    table = {}
    for m, r in runs.items():
        xrt = r["audio_seconds"] / r["process_wall_seconds"]
        table[m] = {
            "x_realtime": xrt,
            "x_realtime_per_core": xrt / r["processes"],
            "steady_x_realtime": r.get("steady_x_realtime"),
            "steady_x_realtime_per_core": (r["steady_x_realtime"] / r["processes"]) if r.get("steady_x_realtime") else None,
            "startup_10_files_seconds": startup.get(m),
            "driver_peak_mb": r["driver_peak_mb"],
            "worker_peak_mb": r["worker_peak_mb"],
            "output_bytes_per_audio_hour": (r["output_bytes"] * 3600 / r["audio_seconds"]) if r.get("output_bytes") else None,
        }
    return table


def _ratios(t: dict[str, dict], runs: dict[str, dict]) -> dict[str, float]:
    """The target ratios of one round (``t`` its table, ``runs`` its raw results)."""
    ratios = {}
    for variant in ("pipeline_w2", "pipeline_w2_api", "pipeline_w2_cluster"):
        if variant not in t:
            continue
        suffix = variant.removeprefix("pipeline_w2")
        if "lhotse" in t:
            ratios[f"e2e_w2{suffix}_over_lhotse"] = t[variant]["x_realtime"] / t["lhotse"]["x_realtime"]
        if "seeds" in t:
            ratios[f"e2e_w2{suffix}_over_seeds"] = t[variant]["x_realtime"] / t["seeds"]["x_realtime"]
    if "pipeline_w2" in t:
        if "lhotse" in t and runs["pipeline_w2"].get("features_bytes"):
            ours = runs["pipeline_w2"]["features_bytes"] * 3600 / runs["pipeline_w2"]["audio_seconds"]
            ratios["store_bytes_ours_over_lilcom"] = ours / t["lhotse"]["output_bytes_per_audio_hour"]
        if "pipeline_w1" in t and t["pipeline_w1"]["steady_x_realtime"] and t["pipeline_w2"]["steady_x_realtime"]:
            ratios["steady_w2_over_w1"] = t["pipeline_w2"]["steady_x_realtime"] / t["pipeline_w1"]["steady_x_realtime"]
    if "bare" in t:
        bare = runs["bare"]["steady_x_realtime"]
        for w in ("pipeline_w1", "pipeline_w2", "pipeline_w2_api", "pipeline_w2_cluster"):
            if w in t and t[w]["steady_x_realtime_per_core"]:
                ratios[f"{w}_steady_per_core_over_bare"] = t[w]["steady_x_realtime_per_core"] / bare
                ratios[f"{w}_in_task_per_core_over_bare"] = runs[w]["in_task_x_realtime_per_core"] / bare
    if "bare_x2" in t:
        bare2 = t["bare_x2"]["steady_x_realtime_per_core"]
        for w in ("pipeline_w2", "pipeline_w2_api", "pipeline_w2_cluster"):
            if w in t and t[w]["steady_x_realtime_per_core"]:
                ratios[f"{w}_steady_per_core_over_bare_x2"] = t[w]["steady_x_realtime_per_core"] / bare2
        if "bare" in t:
            ratios["bare_x2_per_core_over_bare"] = bare2 / runs["bare"]["steady_x_realtime"]
    return ratios


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=_util.env_float("AUDIOPREP_BENCH_HOURS", 1.0))
    p.add_argument("--partition-seconds", type=float, default=_util.env_float("AUDIOPREP_BENCH_PARTITION_SECONDS", 300.0))
    p.add_argument("--skip", default=os.environ.get("AUDIOPREP_BENCH_SKIP", ""), help="comma-separated methods to skip")
    p.add_argument("--no-startup", action="store_true", help="skip the 10-file start-up runs")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="output.dtype of the pipeline runs")
    p.add_argument("--repeat", type=int, default=_util.env_int("AUDIOPREP_BENCH_REPEAT", 1),
                   help="rounds of every method; ratios are per round, their median is reported")
    p.add_argument("--out", type=pathlib.Path, default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--corpus", default=None, help=argparse.SUPPRESS)
    p.add_argument("--work", default=None, help=argparse.SUPPRESS)
    p.add_argument("--scheduler", default=None, help=argparse.SUPPRESS)
    p.add_argument("--part", default="0/1", help=argparse.SUPPRESS)
    args = p.parse_args([] if argv is None else argv)
    if args.child:
        _child_main(args)
        return {}

    from bench.corpus import ROOT, make_speech

    corpus = make_speech(args.hours)
    small = make_speech(100 / 3600, root=ROOT / "speech-10files")
    methods = ["bare", "bare_x2", "seeds", "lhotse", "pipeline_w1", "pipeline_w2", "pipeline_w2_api", "pipeline_w2_cluster"]
    skip = {s for s in args.skip.split(",") if s}
    try:
        import lhotse  # noqa: F401
        import lilcom  # noqa: F401
    except ImportError:
        print("lhotse/lilcom not installed (pip install torch==2.13.0 then '.[bench]'): skipping lhotse", file=sys.stderr)
        skip.add("lhotse")
    methods = [m for m in methods if m not in skip]

    startup: dict[str, float] = {}
    setup_seconds = _prefect_first_use() if any(m.startswith("pipeline") for m in methods) else None
    # rounds of every method back to back: each ratio is taken within a round, and the median
    # over rounds is reported (the machine is shared; one round can catch a busy neighbour)
    rounds: list[dict[str, dict]] = []
    for rep in range(args.repeat):
        runs: dict[str, dict] = {}
        for m in methods:
            print(f"  round {rep + 1}/{args.repeat}: {m} on {corpus.name} ...", file=sys.stderr, flush=True)
            runs[m] = _run(m, corpus, args.partition_seconds, args.dtype)
            if rep == 0 and not args.no_startup and not m.startswith("bare"):
                startup[m] = _run(m, small, args.partition_seconds, args.dtype)["process_wall_seconds"]
        rounds.append(runs)
    ratio_rounds = [_ratios(_table(r, startup), r) for r in rounds]
    ratios = {k: statistics.median(rr[k] for rr in ratio_rounds if k in rr) for k in ratio_rounds[0]}
    # the table shows, per method, its run of median x-realtime
    runs = {m: sorted((r[m] for r in rounds), key=lambda r: r["audio_seconds"] / r["process_wall_seconds"])[len(rounds) // 2] for m in methods}
    table = _table(runs, startup)
    targets = {"e2e_w2_over_lhotse": 1.5, "e2e_w2_over_seeds": 1.8, "e2e_w2_api_over_lhotse": 1.5, "e2e_w2_api_over_seeds": 1.8,
               "e2e_w2_cluster_over_lhotse": 1.5, "e2e_w2_cluster_over_seeds": 1.8, "pipeline_w1_steady_per_core_over_bare": 0.85,
               "pipeline_w2_steady_per_core_over_bare": 0.85, "steady_w2_over_w1": 1.8, "store_bytes_ours_over_lilcom": None}
    result = {"hours": args.hours, "corpus": str(corpus), "partition_seconds": args.partition_seconds, "dtype": args.dtype, "table": table, "ratios": ratios,
              "targets": {k: {"target": v, "met": (ratios[k] >= v) if (v is not None and k in ratios) else None} for k, v in targets.items()},
              "runs": runs, "repeat": args.repeat, "ratios_by_round": ratio_rounds,
              "x_realtime_by_round": [{m: r["audio_seconds"] / r["process_wall_seconds"] for m, r in rnd.items()} for rnd in rounds],
              "steady_x_realtime_by_round": [{m: r.get("steady_x_realtime") for m, r in rnd.items()} for rnd in rounds],
              "startup_10_files_seconds": startup, "prefect_db_first_use_seconds": setup_seconds, "threads_per_process": 1, "env": _util.env_info(),
              "command": f"python -m bench.bench_pipeline --hours {args.hours:g} --partition-seconds {args.partition_seconds:g}"
                         + (f" --dtype {args.dtype}" if args.dtype != "float32" else "") + (f" --repeat {args.repeat}" if args.repeat > 1 else "")}
    tag = f"{args.hours:g}h".replace(".", "p") + ("" if args.dtype == "float32" else f"-{args.dtype}")
    path = _util.save(f"pipeline-{tag}", result, args.out)

    print(f"{args.hours:g} h corpus ({runs[methods[0]]['files']} files), 1 BLAS thread per process, partitions {args.partition_seconds:g} s")
    print(f"{'method':<20}{'xRT':>8}{'xRT/core':>10}{'steady':>9}{'st/core':>9}{'start s':>9}{'drv MB':>8}{'wrk MB':>8}{'MB/h':>8}")
    for m, r in table.items():
        f = lambda v, fmt: format(v, fmt) if v is not None else format("-", ">" + fmt.split(".")[0].rstrip("fd"))  # noqa: E731
        mbh = r["output_bytes_per_audio_hour"] / 2**20 if r["output_bytes_per_audio_hour"] else None
        print(f"{m:<20}{f(r['x_realtime'], '8.0f')}{f(r['x_realtime_per_core'], '10.0f')}{f(r['steady_x_realtime'], '9.0f')}"
              f"{f(r['steady_x_realtime_per_core'], '9.0f')}{f(r['startup_10_files_seconds'], '9.1f')}{f(r['driver_peak_mb'], '8.0f')}"
              f"{f(r['worker_peak_mb'], '8.0f')}{f(mbh, '8.1f')}")
    for k, v in ratios.items():
        tg = targets.get(k)
        per_round = ", ".join(f"{rr[k]:.2f}" for rr in ratio_rounds if k in rr) if len(ratio_rounds) > 1 else ""
        print(f"  {k} = {v:.2f}" + (f" (target >= {tg}: {'met' if v >= tg else 'NOT met'})" if tg else "") + (f"  rounds: {per_round}" if per_round else ""))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
