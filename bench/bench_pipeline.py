"""End to end, side by side: the bare loop (1 and 2 processes), the seeds' librosa loop, lhotse,
and ``audioprep run`` as a user runs it.

Run: ``python -m bench.bench_pipeline [--hours H] [--skip lhotse,...] [--out PATH]`` (or
``make bench``; ``AUDIOPREP_BENCH_HOURS`` sets the default size, 1 h). Writes
bench/results/pipeline-<H>h.json unless ``--out`` says otherwise.

Same corpus (bench/corpus.py: ~10 s 16 kHz FLAC speech, LibriSpeech layout), same machine,
same thread budget (every BLAS/OpenMP/torch pool limited to 1 thread per process; at most 2
processes compute at once, the machine's 2 cores). Each method runs in fresh processes (so
imports and start-up are counted, and memory is its own):

* ``bare``: decode (``pipeline.io.audio.decode``) + to_mono + resample + ``FeatureSet.compute``
  (log_mel 80, n_fft 400, hop 160), one process, no orchestration, no store. The reference
  for per-core efficiency.
* ``bare_q`` (opt-in): the bare loop plus what a partition computes per example by default
  beyond the features: the quality metrics and the duplicate fingerprint
  (``pipeline.quality.analyze.measure`` on the features' own STFT). The reference for what
  orchestration, store and commit cost, apart from the per-example work.
* ``bare_x2``: the bare loop as two processes at once, each on half the files: the same 2
  cores busy as with 2 workers, so the per-core reference for them.
* ``seeds``: the seeds' loop as written: ``librosa.load(sr=16000)`` + ``melspectrogram`` +
  ``power_to_db``, ``np.save`` per file. One process (the seed is a serial loop).
* ``lhotse``: ``RecordingSet.from_dir`` + ``CutSet.from_manifests`` +
  ``compute_and_store_features(Fbank(80 bins), LilcomChunkyWriter, num_jobs=2)``.
* ``pipeline_w2``: ``audioprep run catalog.yaml --workers 2 --no-report`` as a subprocess, the
  catalog without an ``execution`` block (default partitioning: 1800 s of audio per
  partition). Cold, as a user's first run of the day: the command starts its Prefect API
  (``prefect server start``) and, while it boots, its embedded LocalCluster. The Prefect database of the bench's PREFECT_HOME exists already (created once
  before the measured runs, as after a user's first run).
* ``pipeline_w2_report``: the same command without ``--no-report`` (a user's default:
  report figures are written beside the store).
* opt-in (``--methods``): ``inproc`` (``pipeline.run.steps.run_catalog`` in one process: the
  pipeline's own work, store writes included, without Prefect or Dask), ``pipeline_w1`` (1 worker, nothing pinned: the worker's zarr I/O
  threads may use the second core), ``pipeline_w2_api`` (``PREFECT_API_URL`` of an API the
  bench started before: a deployment's shape).

Figures: x-realtime = audio seconds / wall seconds of the measured process from its start
until it exits (imports, API and cluster start included); per-core = x-realtime / processes
computing. For ``audioprep run`` the partitions are timed by the workers' clock: each
partition's manifest (``<store>/_partitions/*.json``) is written as the partition ends (its
mtime) and records the partition's ``compute_seconds``, so it started at mtime -
compute_seconds. Time to the first partition = the earliest partition start - the moment the
bench started ``audioprep run``. Steady state = audio of the partitions completed after the
first one per worker / time between those completions; fixed cost = time to the first
partition + time from the last partition's end to the process's exit (the commit, closing
the cluster and the API). In-task per core = audio / sum of the partitions' compute_seconds.
After the run, the bench reads the run's flow and task runs from its Prefect database
(``prefect_timeline``: a Prefect API started on the same PREFECT_HOME after the measured
process exited, so outside the measured time). Peak RSS and CPU seconds of every process of
the run by role (psutil, sampled every 50 ms); output bytes per audio hour.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

T_PROCESS = time.perf_counter()

from bench import _util  # noqa: E402

WORK = pathlib.Path(__file__).parent / "corpus" / "_work"
DEFAULT_METHODS = ("bare", "bare_x2", "seeds", "lhotse", "pipeline_w2", "pipeline_w2_report")
OPTIONAL_METHODS = ("bare_q", "inproc", "pipeline_w1", "pipeline_w2_api")
TARGETS = {"pipeline_w2_steady_per_core_over_bare": 0.9, "e2e_w2_over_lhotse": 1.5, "e2e_w2_report_over_lhotse": 1.5,
           "e2e_w2_over_seeds": 1.8, "steady_w2_over_w1": 1.8}


def _files(corpus: pathlib.Path) -> list[str]:
    return sorted(glob.glob(str(corpus / "**" / "*.flac"), recursive=True))


# --- children: one method each, print one JSON line ------------------------------------------
def child_bare(corpus: pathlib.Path, work: pathlib.Path, part: tuple[int, int] = (0, 1), quality: bool = False) -> dict:
    _util.set_one_thread()
    from pipeline.features import FeaturesConfig, build_feature_set
    from pipeline.io.audio import decode, resample, to_mono
    from pipeline.quality.analyze import measure
    from pipeline.quality.config import QualityConfig

    qcfg = QualityConfig()

    sr = 16000
    fset = build_feature_set(FeaturesConfig.model_validate({"stft": {"n_fft": 400, "hop_length": 160}, "log_mel": {"n_mels": 80}}), sr)
    files = _files(corpus)[part[0] :: part[1]]
    audio = 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    t_first = None
    for f in files:
        with open(f, "rb") as fh:
            data = fh.read()
        d = decode(data, f, max_seconds=600, max_channels=8)
        y_mono = to_mono(d.y)
        y = resample(y_mono, d.sample_rate, sr)
        if quality:  # what a partition computes per example by default: the metrics on the features' STFT
            ana = fset.analyze(y)
            measure(y_mono, y, sr, qcfg, analysis=ana)
            fset.compute(y, analysis=ana)
        else:
            fset.compute(y)
        audio += d.frames / d.sample_rate
        if t_first is None:
            t_first = time.perf_counter()
    t1, c1 = time.perf_counter(), time.process_time()
    n = len(files)
    steady = audio * (n - 1) / n / (t1 - t_first) if n > 1 else audio / (t1 - t0)
    return {"audio_seconds": audio, "files": n, "loop_seconds": t1 - t0, "loop_cpu_seconds": c1 - c0, "steady_x_realtime": steady, "processes": 1}


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


def child_inproc(corpus: pathlib.Path, work: pathlib.Path, dtype: str = "float32") -> dict:
    """The pipeline's own work without orchestration: ``pipeline.run.steps.run_catalog`` (discover,
    probe, plan, every partition, commit) in this one process, no Prefect, no Dask."""
    _util.set_one_thread()
    from pipeline.config.catalog import load_catalog
    from pipeline.run.steps import run_catalog

    store = work / "store-inproc.zarr"
    cat = _util.write_catalog(work / "catalog-inproc.yaml", _util.speech_catalog(corpus, store, partition_seconds=None, workers=None, dtype=dtype))
    done: list[tuple[float, float, float]] = []
    t0, c0 = time.perf_counter(), time.process_time()
    summary = run_catalog(load_catalog(str(cat)), on_partition=lambda r: done.append((r["finished_unix"], r["audio_seconds"], r["compute_seconds"])))
    t1, c1 = time.perf_counter(), time.process_time()
    done.sort()
    audio = sum(a for _, a, _ in done)
    res = {"audio_seconds": audio, "files": summary.get("examples"), "loop_seconds": t1 - t0, "loop_cpu_seconds": c1 - c0, "processes": 1,
           "partitions": len(done), "in_task_x_realtime_per_core": audio / sum(c for *_, c in done) if done else None,
           "output_bytes": _util.dir_bytes(store), "features_bytes": _util.dir_bytes(store / "features")}
    if len(done) > 1:
        res["steady_x_realtime"] = sum(a for _, a, _ in done[1:]) / (done[-1][0] - done[0][0])
    return res


def _audioprep() -> str:
    exe = pathlib.Path(sys.executable).parent / "audioprep"
    return str(exe) if exe.exists() else "audioprep"


def _partition_times(store: pathlib.Path) -> list[tuple[float, float, float]]:
    """(end unix time, audio seconds, compute seconds) of every partition of the store, from its
    manifest: written when the partition ends (mtime), it records the partition's compute time."""
    out = []
    for path in glob.glob(str(store / "_partitions" / "*.json")):
        m = json.loads(pathlib.Path(path).read_text())
        out.append((os.stat(path).st_mtime, float(m["audio_seconds"]), float(m["compute_seconds"])))
    return sorted(out)


def child_pipeline(corpus: pathlib.Path, work: pathlib.Path, workers: int, partition_seconds: float | None, *, report: bool = False,
                   timeline: bool = True, dtype: str = "float32") -> dict:
    """``audioprep run catalog.yaml --workers N [--no-report]`` in a subprocess, as a user runs it."""
    store = work / f"store-w{workers}.zarr"
    cat = _util.write_catalog(work / f"catalog-w{workers}.yaml",
                              _util.speech_catalog(corpus, store, partition_seconds=partition_seconds, workers=None, dtype=dtype))
    cmd = [_audioprep(), "run", str(cat), "--workers", str(workers), "--json", str(work / "summary.json")]
    if not report:
        cmd.append("--no-report")
    log = work / "audioprep-run.log"
    with open(log, "wb") as out:
        t0_unix, t0 = time.time(), time.perf_counter()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=work)
        t1 = time.perf_counter()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
    wall = t1 - t0
    summary = json.loads((work / "summary.json").read_text())
    parts = _partition_times(store)
    audio = sum(a for _, a, _ in parts)
    starts = sorted(end - c - t0_unix for end, _, c in parts)
    ends = [end - t0_unix for end, _, _ in parts]
    res = {"command": " ".join(["audioprep", *cmd[1:]]), "wall_seconds": wall, "audio_seconds": audio, "files": summary.get("examples"),
           "partitions": len(parts), "processes": workers, "partition_seconds": partition_seconds or "default",
           "cli_ready_seconds": summary.get("ready_seconds"), "cli_wall_seconds": summary.get("wall_seconds"),
           "first_partition_start_seconds": starts[0] if parts else None,
           "first_partition_end_seconds": ends[0] if parts else None,
           "last_partition_end_seconds": ends[-1] if parts else None,
           "after_last_partition_seconds": (wall - ends[-1]) if parts else None,
           "in_task_x_realtime_per_core": audio / sum(c for *_, c in parts) if parts else None,
           "output_bytes": _util.dir_bytes(store), "features_bytes": _util.dir_bytes(store / "features"),
           "partition_starts": [round(s, 3) for s in starts], "partition_ends": [round(e, 3) for e in ends]}
    gaps = _worker_gaps(list(zip(starts, ends)), workers)
    if gaps:
        res["between_partitions_seconds"] = {"median": statistics.median(gaps), "max": max(gaps), "sum": sum(gaps), "count": len(gaps)}
    if len(parts) > workers:
        tail = parts[workers:]
        span = ends[-1] - ends[workers - 1]
        res["steady_x_realtime"] = sum(a for _, a, _ in tail) / span
        res["fixed_seconds"] = starts[0] + res["after_last_partition_seconds"]
    if report:
        res["report_bytes"] = _util.dir_bytes(pathlib.Path(f"{store}.report"))
    if timeline:
        try:
            res["prefect_timeline"] = prefect_timeline(t0_unix)
        except Exception as exc:  # noqa: BLE001 - the run's figures stand without it
            res["prefect_timeline"] = {"error": f"{type(exc).__name__}: {exc}"}
    return res


def _worker_gaps(spans: list[tuple[float, float]], workers: int) -> list[float]:
    """Idle time of a worker between the end of one partition and the start of its next (the
    Prefect task engine, Dask's scheduling, the result's trip): each partition, in order of
    start, is given to the worker that finished last before it started."""
    free: list[float] = []
    gaps = []
    for start, end in sorted(spans):
        ready = [t for t in free if t <= start + 1e-3]
        if ready and len(free) >= workers:
            prev = max(ready)
            free.remove(prev)
            gaps.append(max(0.0, start - prev))
        elif len(free) >= workers:  # overlapping beyond the worker count: clocks disagree; no gap
            free.remove(min(free))
        free.append(end)
    return gaps


def prefect_timeline(t0_unix: float) -> dict:
    """The newest ``prepare`` run's flow and task runs in this PREFECT_HOME's database, as seconds
    after ``t0_unix`` (read through a Prefect API started for it, after the measured run)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter
    from prefect.client.schemas.sorting import FlowRunSort

    from flows.server import prefect_api

    def rel(t) -> float | None:
        return round(t.timestamp() - t0_unix, 3) if t else None

    with prefect_api(), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=10)
        top = next(r for r in runs if r.parent_task_run_id is None)
        subs = [r for r in runs if r.parent_task_run_id is not None and r.start_time and top.start_time and r.start_time >= top.start_time]
        ids = [top.id, *(r.id for r in subs)]
        tasks: list = []
        while True:  # the API answers at most 200 a page
            page = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": ids}), limit=200, offset=len(tasks))
            tasks += page
            if len(page) < 200:
                break
    out: dict = {"flow_run_start": rel(top.start_time), "flow_run_end": rel(top.end_time), "flow_state": top.state_name}
    if subs:
        out["subflow_start"], out["subflow_end"] = rel(subs[-1].start_time), rel(subs[-1].end_time)
    by_task: dict[str, list] = {}
    for t in tasks:
        by_task.setdefault(t.name.rsplit("-", 1)[0], []).append(t)  # partition-00001 -> partition
    for name, runs_ in sorted(by_task.items()):
        starts = [rel(t.start_time) for t in runs_ if t.start_time]
        ends = [rel(t.end_time) for t in runs_ if t.end_time]
        out[name] = {"runs": len(runs_), "first_start": min(starts, default=None), "last_end": max(ends, default=None),
                     "states": sorted({t.state_name for t in runs_})}
    return out


def _child_main(args) -> None:
    corpus, work = pathlib.Path(args.corpus).resolve(), pathlib.Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with _util.RssSampler() as mem:
        if args.child in ("bare", "bare_q"):
            k, n = (int(v) for v in args.part.split("/"))
            res = child_bare(corpus, work, (k, n), quality=args.child == "bare_q")
        elif args.child == "seeds":
            res = child_seeds(corpus, work)
        elif args.child == "lhotse":
            res = child_lhotse(corpus, work)
        elif args.child == "inproc":
            res = child_inproc(corpus, work, args.dtype)
        elif args.child.startswith("pipeline_w"):
            workers = int(args.child.removeprefix("pipeline_w").split("_")[0])
            res = child_pipeline(corpus, work, workers, args.partition_seconds, report=args.child.endswith("_report"),
                                 timeline=not args.no_timeline, dtype=args.dtype)
        else:
            raise SystemExit(f"unknown method {args.child}")
    res.update(mem.result())
    res["process_seconds_in_child"] = time.perf_counter() - T_PROCESS
    print(json.dumps(res, default=str), flush=True)


# --- parent ----------------------------------------------------------------------------------
def _prefect_home() -> str:
    """This benchmark's PREFECT_HOME (created here: the API server does not create it)."""
    home = WORK / f"prefect-{os.getpid()}"
    home.mkdir(parents=True, exist_ok=True)
    return str(home)


def _run(method: str, corpus: pathlib.Path, partition_seconds: float | None = None, *, timeline: bool = True, dtype: str = "float32") -> dict:
    """One method in fresh processes; ``wall_seconds``: the measured process's start to exit."""
    load = os.getloadavg()[0]
    if method == "bare_x2":
        res = _run_bare_x2(corpus)
    else:
        work = WORK / f"{corpus.name}-{method}"
        env = _util.one_thread_env(PREFECT_HOME=_prefect_home())
        args = ["-m", "bench.bench_pipeline", "--child", method, "--corpus", str(corpus), "--work", str(work), "--dtype", dtype]
        if partition_seconds:
            args += ["--partition-seconds", str(partition_seconds)]
        if not timeline:
            args.append("--no-timeline")
        if method.endswith("_api"):
            from flows.server import prefect_api

            os.environ.update(PREFECT_HOME=env["PREFECT_HOME"])
            with prefect_api() as url:
                env["PREFECT_API_URL"] = url
                res = _util.run_child(args, env=env)
        else:
            res = _util.run_child(args, env=env)
        if not method.startswith("pipeline"):
            res["wall_seconds"] = res["process_wall_seconds"]
        shutil.rmtree(work, ignore_errors=True)
    res["load_before"], res["load_after"] = load, os.getloadavg()[0]
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
            "wall_seconds": max(a["process_wall_seconds"], b["process_wall_seconds"]),
            "driver_peak_mb": max(a["driver_peak_mb"], b["driver_peak_mb"]), "worker_peak_mb": None, "halves": [a, b]}


def _prefect_first_use() -> float:
    """Create and migrate the Prefect database of this benchmark's PREFECT_HOME once, as the first
    ``audioprep run`` on a machine does; measured runs then find it, as every later run on a
    user's machine does. Returns the seconds it took."""
    env = _util.one_thread_env(PREFECT_HOME=_prefect_home())
    code = "from flows.server import prefect_api\nwith prefect_api():\n    pass\nprint('{}')"
    return _util.run_child(["-c", code], env=env)["process_wall_seconds"]


def _table(runs: dict[str, dict], startup: dict[str, float]) -> dict[str, dict]:
    table = {}
    for m, r in runs.items():
        xrt = r["audio_seconds"] / r["wall_seconds"]
        table[m] = {
            "wall_seconds": r["wall_seconds"],
            "x_realtime": xrt,
            "x_realtime_per_core": xrt / r["processes"],
            "steady_x_realtime": r.get("steady_x_realtime"),
            "steady_x_realtime_per_core": (r["steady_x_realtime"] / r["processes"]) if r.get("steady_x_realtime") else None,
            "first_partition_start_seconds": r.get("first_partition_start_seconds"),
            "fixed_seconds": r.get("fixed_seconds"),
            "startup_10_files_seconds": startup.get(m),
            "cpu_seconds_by_role": r.get("cpu_seconds_by_role"),
            "audio_per_compute_cpu_second": _audio_per_cpu(r),
            "driver_peak_mb": r.get("driver_peak_mb"),
            "worker_peak_mb": r.get("worker_peak_mb"),
            "output_bytes_per_audio_hour": (r["output_bytes"] * 3600 / r["audio_seconds"]) if r.get("output_bytes") else None,
        }
    return table


def _audio_per_cpu(r: dict) -> float | None:
    """Audio seconds per CPU second of the processes that compute: the bare loop's (its loop
    only), or every worker process of a run (their start-up included)."""
    if r.get("loop_cpu_seconds"):
        return r["audio_seconds"] / r["loop_cpu_seconds"]
    if "halves" in r:
        return r["audio_seconds"] / sum(h["loop_cpu_seconds"] for h in r["halves"]) if all(h.get("loop_cpu_seconds") for h in r["halves"]) else None
    cpu = (r.get("cpu_seconds_by_role") or {}).get("worker")
    return r["audio_seconds"] / cpu if cpu else None


def _ratios(t: dict[str, dict], runs: dict[str, dict]) -> dict[str, float]:
    """The target ratios of one round (``t`` its table, ``runs`` its raw results)."""
    ratios = {}
    for variant in ("pipeline_w2", "pipeline_w2_report", "pipeline_w2_api"):
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
    pipelines = [m for m in t if m.startswith("pipeline") or m == "inproc"]
    if "bare" in t:
        bare = runs["bare"]["steady_x_realtime"]
        bare_cpu = t["bare"]["audio_per_compute_cpu_second"]
        for w in pipelines:
            if bare_cpu and t[w]["audio_per_compute_cpu_second"] and w.startswith("pipeline"):
                ratios[f"{w}_worker_cpu_efficiency_over_bare"] = t[w]["audio_per_compute_cpu_second"] / bare_cpu
            if w == "inproc" and bare_cpu and t[w]["audio_per_compute_cpu_second"]:
                ratios["inproc_cpu_efficiency_over_bare"] = t[w]["audio_per_compute_cpu_second"] / bare_cpu
            if t[w]["steady_x_realtime_per_core"]:
                ratios[f"{w}_steady_per_core_over_bare"] = t[w]["steady_x_realtime_per_core"] / bare
            ratios[f"{w}_in_task_per_core_over_bare"] = runs[w]["in_task_x_realtime_per_core"] / bare
    if "bare_q" in t:
        bare_q = runs["bare_q"]["steady_x_realtime"]
        for w in pipelines:
            if t[w]["steady_x_realtime_per_core"]:
                ratios[f"{w}_steady_per_core_over_bare_q"] = t[w]["steady_x_realtime_per_core"] / bare_q
            ratios[f"{w}_in_task_per_core_over_bare_q"] = runs[w]["in_task_x_realtime_per_core"] / bare_q
        if "bare" in t:
            ratios["bare_q_over_bare"] = bare_q / runs["bare"]["steady_x_realtime"]
    if "bare_x2" in t:
        bare2 = t["bare_x2"]["steady_x_realtime_per_core"]
        for w in pipelines:
            if w.startswith("pipeline_w2") and t[w]["steady_x_realtime_per_core"]:
                ratios[f"{w}_steady_per_core_over_bare_x2"] = t[w]["steady_x_realtime_per_core"] / bare2
        if "bare" in t:
            ratios["bare_x2_per_core_over_bare"] = bare2 / runs["bare"]["steady_x_realtime"]
    return ratios


def _startup_split(r: dict) -> dict:
    """A pipeline run's wall as fixed cost + audio at steady state."""
    if not r.get("steady_x_realtime"):
        return {}
    return {"wall_seconds": r["wall_seconds"], "first_partition_start_seconds": r["first_partition_start_seconds"],
            "after_last_partition_seconds": r["after_last_partition_seconds"], "fixed_seconds": r["fixed_seconds"],
            "partitions_span_seconds": r["last_partition_end_seconds"] - r["first_partition_start_seconds"],
            "steady_x_realtime": r["steady_x_realtime"],
            "audio_over_steady_seconds": r["audio_seconds"] / r["steady_x_realtime"],
            "x_realtime_without_fixed": r["audio_seconds"] / (r["wall_seconds"] - r["fixed_seconds"])}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=_util.env_float("AUDIOPREP_BENCH_HOURS", 1.0))
    p.add_argument("--partition-seconds", type=float, default=_util.env_float("AUDIOPREP_BENCH_PARTITION_SECONDS", 0.0) or None,
                   help="execution.partition_seconds of the pipeline runs (default: not set, the catalog's default)")
    p.add_argument("--methods", default=os.environ.get("AUDIOPREP_BENCH_METHODS", ",".join(DEFAULT_METHODS)),
                   help=f"comma-separated, in order; also: {', '.join(OPTIONAL_METHODS)}")
    p.add_argument("--skip", default=os.environ.get("AUDIOPREP_BENCH_SKIP", ""), help="comma-separated methods to skip")
    p.add_argument("--no-startup", action="store_true", help="skip the 10-file start-up runs")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="output.dtype of the pipeline runs")
    p.add_argument("--repeat", type=int, default=_util.env_int("AUDIOPREP_BENCH_REPEAT", 1),
                   help="rounds of every method; ratios are per round, their median is reported")
    p.add_argument("--out", type=pathlib.Path, default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--corpus", default=None, help=argparse.SUPPRESS)
    p.add_argument("--work", default=None, help=argparse.SUPPRESS)
    p.add_argument("--part", default="0/1", help=argparse.SUPPRESS)
    p.add_argument("--no-timeline", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args([] if argv is None else argv)
    if args.child:
        _child_main(args)
        return {}

    from bench.corpus import ROOT, corpus_info, make_speech

    t_gen = time.perf_counter()
    corpus = make_speech(args.hours)
    generate_seconds = time.perf_counter() - t_gen
    small = make_speech(100 / 3600, root=ROOT / "speech-10files")
    skip = {s for s in args.skip.split(",") if s}
    methods = [m for m in args.methods.split(",") if m and m not in skip]
    unknown = set(methods) - set(DEFAULT_METHODS) - set(OPTIONAL_METHODS)
    if unknown:
        raise SystemExit(f"unknown method(s): {', '.join(sorted(unknown))}")
    try:
        import lhotse  # noqa: F401
        import lilcom  # noqa: F401
    except ImportError:
        print("lhotse/lilcom not installed (pip install torch==2.13.0 then '.[bench]'): skipping lhotse", file=sys.stderr)
        methods = [m for m in methods if m != "lhotse"]

    startup: dict[str, float] = {}
    setup_seconds = _prefect_first_use() if any(m.startswith("pipeline") for m in methods) else None
    # rounds of every method back to back: each ratio is taken within a round, and the median
    # over rounds is reported (the machine is shared; one round can catch a busy neighbour)
    rounds: list[dict[str, dict]] = []
    t_start = time.perf_counter()
    for rep in range(args.repeat):
        runs: dict[str, dict] = {}
        for m in methods:
            print(f"  round {rep + 1}/{args.repeat}: {m} on {corpus.name} (load {os.getloadavg()[0]:.1f}) ...", file=sys.stderr, flush=True)
            runs[m] = _run(m, corpus, args.partition_seconds, dtype=args.dtype)
            if rep == 0 and not args.no_startup and m in ("seeds", "lhotse", "pipeline_w2"):
                startup[m] = _run(m, small, args.partition_seconds, timeline=False, dtype=args.dtype)["wall_seconds"]
        rounds.append(runs)
    ratio_rounds = [_ratios(_table(r, startup), r) for r in rounds]
    ratios = {k: statistics.median(rr[k] for rr in ratio_rounds if k in rr) for k in ratio_rounds[0]}
    # the table shows, per method, its run of median x-realtime
    runs = {m: sorted((r[m] for r in rounds), key=lambda r: r["audio_seconds"] / r["wall_seconds"])[len(rounds) // 2] for m in methods}
    table = _table(runs, startup)
    loads = [v for r in rounds for run in r.values() for v in (run["load_before"], run["load_after"])]
    flags = [f"--hours {args.hours:g}"]
    flags += [f"--partition-seconds {args.partition_seconds:g}"] if args.partition_seconds else []
    flags += [f"--methods {','.join(methods)}"] if tuple(methods) != DEFAULT_METHODS else []
    flags += [f"--dtype {args.dtype}"] if args.dtype != "float32" else []
    flags += [f"--repeat {args.repeat}"] if args.repeat > 1 else []
    flags += ["--no-startup"] if args.no_startup else []
    flags += [f"--out {args.out}"] if args.out else []
    command = "python -m bench.bench_pipeline " + " ".join(flags)
    result = {"hours": args.hours, "corpus": str(corpus), "corpus_info": corpus_info(corpus), "corpus_ready_seconds": generate_seconds,
              "partition_seconds": args.partition_seconds or "catalog default (1800)", "table": table, "ratios": ratios,
              "targets": {k: {"target": v, "met": (ratios[k] >= v) if k in ratios else None} for k, v in TARGETS.items() if k in ratios},
              "startup_vs_steady": {m: _startup_split(r) for m, r in runs.items() if m.startswith("pipeline")},
              "runs": runs, "repeat": args.repeat, "ratios_by_round": ratio_rounds,
              "x_realtime_by_round": [{m: r["audio_seconds"] / r["wall_seconds"] for m, r in rnd.items()} for rnd in rounds],
              "steady_x_realtime_by_round": [{m: r.get("steady_x_realtime") for m, r in rnd.items()} for rnd in rounds],
              "startup_10_files_seconds": startup, "prefect_db_first_use_seconds": setup_seconds, "threads_per_process": 1,
              "bench_wall_seconds": time.perf_counter() - t_start, "load_min_max": [min(loads), max(loads)] if loads else None,
              "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "env": _util.env_info(), "command": command}
    result["dtype"] = args.dtype
    path = _util.save(f"pipeline-{args.hours:g}h".replace(".", "p") + ("" if args.dtype == "float32" else f"-{args.dtype}"), result, args.out)

    print(f"{args.hours:g} h corpus ({runs[methods[0]]['files']} files), 1 BLAS thread per process, partitions: {result['partition_seconds']}")
    print(f"{'method':<20}{'wall s':>8}{'xRT':>8}{'xRT/core':>10}{'steady':>9}{'st/core':>9}{'1st part s':>11}{'fixed s':>9}{'10 files s':>11}"
          f"{'drv MB':>8}{'wrk MB':>8}{'MB/h':>8}")
    for m, r in table.items():
        f = lambda v, fmt: format(v, fmt) if v is not None else format("-", ">" + fmt.split(".")[0].rstrip("fd"))  # noqa: E731
        mbh = r["output_bytes_per_audio_hour"] / 2**20 if r["output_bytes_per_audio_hour"] else None
        print(f"{m:<20}{f(r['wall_seconds'], '8.1f')}{f(r['x_realtime'], '8.0f')}{f(r['x_realtime_per_core'], '10.0f')}{f(r['steady_x_realtime'], '9.0f')}"
              f"{f(r['steady_x_realtime_per_core'], '9.0f')}{f(r['first_partition_start_seconds'], '11.1f')}{f(r['fixed_seconds'], '9.1f')}"
              f"{f(r['startup_10_files_seconds'], '11.1f')}{f(r['driver_peak_mb'], '8.0f')}{f(r['worker_peak_mb'], '8.0f')}{f(mbh, '8.1f')}")
    for k, v in ratios.items():
        tg = TARGETS.get(k)
        per_round = ", ".join(f"{rr[k]:.2f}" for rr in ratio_rounds if k in rr) if len(ratio_rounds) > 1 else ""
        print(f"  {k} = {v:.2f}" + (f" (target >= {tg}: {'met' if v >= tg else 'NOT met'})" if tg else "") + (f"  rounds: {per_round}" if per_round else ""))
    print(f"load average during the runs: {result['load_min_max']}")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
