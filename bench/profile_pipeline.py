"""Where a run's CPU goes: ``audioprep run`` under py-spy, every process, by role and category.

Run: ``python -m bench.profile_pipeline [--hours H] [--rate HZ] [--out PATH]`` (py-spy is in the
``bench`` extra; it needs ptrace rights over the processes it starts, as root or with
``kernel.yama.ptrace_scope`` 0). Writes bench/results/profile-<H>h.json. Not part of
``make bench``: the sampler itself takes CPU from the run it measures, so its wall times are
not the benchmark's.

Two recordings on the same corpus (bench/corpus.py speech, default partitioning, 2 workers):

* ``audioprep run catalog.yaml --workers 2 --no-report`` under ``py-spy record --subprocesses
  --threads --format raw``: the flow's process, the Prefect API server, both Dask workers;
* the bench's bare loop (``bench.bench_pipeline --child bare``: decode + resample + features,
  one process) under ``py-spy record``: the reference for what a worker's partition computes.

Each sample is put in one category by the frames of its stack (first rule that matches;
``CATEGORIES`` below). Samples whose innermost frame is a wait (a selector, a condition, a
queue, a pipe read) are counted apart as ``waiting``: py-spy's idle detection does not catch
every blocked thread on a busy host. Samples / rate = CPU seconds, roughly.
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

from bench import _util

WORK = pathlib.Path(__file__).parent / "corpus" / "_work" / "profile"

#: innermost frames of a thread that waits (not CPU)
WAITS = ("EpollSelector.select", "Condition.wait", "Event.wait", "Connection._recv", "Connection._poll", "_worker (concurrent/futures/thread.py",
         "_worker (distributed/threadpoolexecutor.py", "Queue.get", "SimpleQueue.get", "sleep", "Thread.join", "_wait_for_tstate_lock",
         "select (selectors", "BaseSelector.select", "poll (selectors", "Popen.wait", "Popen._wait", "_try_wait", "read_stdin",
         "_end_with_parent", "Semaphore.acquire",
         # C calls that block, seen as the Python line that makes them
         "(aiosqlite/core.py:59)", "heartbeat_loop (prefect/flow_engine.py:354)", "Popen.poll (multiprocessing/popen_fork.py",
         "SyncStream.read (httpcore/", "AsyncStream.read (httpcore/", "LocalApiServer.wait_ready (flows/server.py")

#: (category, role or "*", needles: every one must be in the stack's text; first match wins)
CATEGORIES: list[tuple[str, str, tuple[str, ...]]] = [
    # a worker's partition, split as the bare loop is (decode, resample, features) and the rest
    ("partition: decode", "worker", ("_partition (flows/prepare.py", "decode")),
    ("partition: resample", "worker", ("_partition (flows/prepare.py", "resample (pipeline/io/audio.py")),
    ("partition: features", "worker", ("_partition (flows/prepare.py", "FeatureSet.compute")),
    ("partition: running stats", "worker", ("_partition (flows/prepare.py", "RunningStats")),
    ("partition: store writes (task thread)", "worker", ("_partition (flows/prepare.py", "pipeline/store/")),
    ("partition: fetch", "worker", ("_partition (flows/prepare.py", "fetch_many")),
    ("partition: zarr open/manifest", "worker", ("_partition (flows/prepare.py", "zarr/")),
    ("partition: other", "worker", ("_partition (flows/prepare.py",)),
    ("store writes (zarr / writer threads)", "worker", ("thread (", "zarr_io")),
    ("store writes (zarr / writer threads)", "worker", ("thread (", "audioprep-writer")),
    ("store writes (zarr / writer threads)", "worker", ("thread (", ": asyncio_")),
    ("Prefect task engine around the partition", "worker", ("prefect/task_engine.py",)),
    ("warm-up preload (pipeline.run.warmup)", "worker", ("dask_setup (pipeline/run/warmup.py",)),
    ("imports at worker start", "worker", ("spawn_main", "_find_and_load")),
    ("task deserialization (imports, unpickling)", "worker", ("distributed/protocol/",)),
    ("Prefect client threads (events, logs, API)", "worker", ("prefect/",)),
    ("Dask worker (event loop, comms, heartbeats)", "worker", ("distributed/",)),
    # the bare loop (same needles without the task)
    ("bare: decode", "bare", ("decode (pipeline/io/audio.py",)),
    ("bare: resample", "bare", ("resample (pipeline/io/audio.py",)),
    ("bare: features", "bare", ("FeatureSet.compute",)),
    ("bare: imports and start", "bare", ("_find_and_load",)),
    # the flow's process
    ("flow: imports", "flow", ("_find_and_load",)),
    ("flow: preflight", "flow", ("preflight (pipeline/run/preflight.py",)),
    ("flow: catalog and source checks", "flow", ("audioprep/cli.py", "pipeline/config/")),
    ("flow: discover/probe/plan", "flow", ("pipeline/run/planner.py",)),
    ("flow: discover/probe/plan", "flow", ("pipeline/run/steps.py",)),
    ("flow: discover/probe/plan", "flow", ("pipeline/io/discovery.py",)),
    ("flow: commit", "flow", ("pipeline/run/commit.py",)),
    ("flow: starting the API server (subprocess)", "flow", ("flows/server.py",)),
    ("flow: Dask cluster start (LocalCluster, nannies)", "flow", ("distributed/deploy/",)),
    ("flow: Dask scheduler and nannies", "flow", ("distributed/scheduler.py",)),
    ("flow: Dask scheduler and nannies", "flow", ("distributed/nanny.py",)),
    ("flow: submitting tasks (serialize, send)", "flow", ("prefect_dask/",)),
    ("flow: Dask client and comms", "flow", ("distributed/",)),
    ("flow: Prefect engine, client, events, logs", "flow", ("prefect/",)),
    ("flow: progress bar (rich)", "flow", ("rich/",)),
    # the API server
    ("server: imports and boot", "prefect_server", ("_find_and_load",)),
    ("server: database (SQLAlchemy, aiosqlite)", "prefect_server", ("sqlalchemy/",)),
    ("server: database (SQLAlchemy, aiosqlite)", "prefect_server", ("aiosqlite/",)),
    ("server: services (recorders, event persister)", "prefect_server", ("prefect/server/services/",)),
    ("server: services (recorders, event persister)", "prefect_server", ("prefect/server/events/",)),
    ("server: HTTP (uvicorn, starlette, fastapi, pydantic)", "prefect_server", ("uvicorn/",)),
    ("server: HTTP (uvicorn, starlette, fastapi, pydantic)", "prefect_server", ("starlette/",)),
    ("server: HTTP (uvicorn, starlette, fastapi, pydantic)", "prefect_server", ("fastapi/",)),
    ("server: API handlers", "prefect_server", ("prefect/server/",)),
]

_PROCESS = re.compile(r'process (\d+):"(.*?)";(?=process \d+:"|thread \()', re.S)


def parse_raw(text: str) -> list[tuple[list[tuple[int, str]], list[str], int]]:
    """py-spy's raw (collapsed) output -> [(processes root..leaf, frames, samples)]. A command
    line may hold newlines (the API server's ``-c`` code): records are split where a line starts
    with ``process N:"``."""
    out = []
    for chunk in re.split(r'(?m)^(?=process \d+:")', text):
        chunk = chunk.rstrip("\n")
        m = re.search(r" (\d+)$", chunk)
        if not chunk or not m:
            continue
        body, pos, procs = chunk[: m.start()], 0, []
        while (pm := _PROCESS.match(body, pos)) is not None:
            procs.append((int(pm.group(1)), pm.group(2)))
            pos = pm.end()
        out.append((procs, body[pos:].split(";"), int(m.group(1))))
    return out


def parse_plain(text: str) -> list[tuple[list[tuple[int, str]], list[str], int]]:
    out = []
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            out.append(([], stack.split(";"), int(n)))
    return out


def categorize(role: str, frames: list[str]) -> str:
    leaf = frames[-1]
    if leaf.startswith("thread (") or any(leaf.startswith(w) or w in leaf for w in WAITS):
        return "waiting"
    text = ";".join(frames)
    for name, r, needles in CATEGORIES:
        if r in (role, "*") and all(n in text for n in needles):
            return name
    return "other"


def summarize(records, role_of, rate: float, top: int = 15) -> dict:
    by_role: dict[str, dict] = {}
    cats: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    leaves: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    pids: dict[str, set] = collections.defaultdict(set)
    for procs, frames, n in records:
        role = role_of(procs)
        pids[role].add(procs[-1][0] if procs else 0)
        cat = categorize(role, frames)
        cats[role][cat] += n
        if cat != "waiting":
            leaves[role][re.sub(r":\d+\)$", ")", frames[-1])] += n
    for role, c in cats.items():
        busy = sum(v for k, v in c.items() if k != "waiting")
        by_role[role] = {
            "processes": len(pids[role]),
            "cpu_seconds": round(busy / rate, 2),
            "waiting_samples_seconds": round(c["waiting"] / rate, 2),
            "categories": {k: {"seconds": round(v / rate, 2), "share": round(v / busy, 3) if busy else None}
                           for k, v in c.most_common() if k != "waiting"},
            "top_self": [{"frame": f, "seconds": round(v / rate, 2), "share": round(v / busy, 3)} for f, v in leaves[role].most_common(top)],
        }
    return by_role


def _role(procs: list[tuple[int, str]]) -> str:
    return _util.process_role(procs[-1][1].split()) if procs else "bench"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=5.0)
    p.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=pathlib.Path, default=None)
    p.add_argument("--keep-raw", action="store_true", help="keep py-spy's raw output beside the JSON")
    args = p.parse_args([] if argv is None else argv)

    from bench.corpus import make_speech

    py_spy = shutil.which("py-spy", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("py-spy")
    if not py_spy:
        raise SystemExit("py-spy not found: pip install -e '.[bench]'")
    corpus = make_speech(args.hours)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    home = WORK / "prefect-home"
    home.mkdir()
    env = _util.one_thread_env(PREFECT_HOME=str(home))
    store = WORK / "store.zarr"
    cat = _util.write_catalog(WORK / "catalog.yaml", _util.speech_catalog(corpus, store, partition_seconds=None, workers=None))
    # the Prefect database is created once first, as after a user's first run
    subprocess.run([sys.executable, "-c", "from flows.server import prefect_api\nwith prefect_api():\n    pass"], env=env, check=True,
                   cwd=pathlib.Path(__file__).parent.parent)
    audioprep = str(pathlib.Path(sys.executable).parent / "audioprep")
    run_cmd = [audioprep, "run", str(cat), "--workers", str(args.workers), "--no-report"]
    raw = WORK / "run.raw"
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    subprocess.run([py_spy, "record", "--subprocesses", "--threads", "--format", "raw", "-r", str(args.rate), "-o", str(raw), "--", *run_cmd],
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=WORK)
    run_wall = time.perf_counter() - t0
    run = summarize(parse_raw(raw.read_text(errors="replace")), _role, args.rate)

    bare_raw = WORK / "bare.raw"
    t0 = time.perf_counter()
    subprocess.run([py_spy, "record", "--format", "raw", "-r", str(args.rate), "-o", str(bare_raw), "--", sys.executable, "-m",
                    "bench.bench_pipeline", "--child", "bare", "--corpus", str(corpus), "--work", str(WORK / "bare")],
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=pathlib.Path(__file__).parent.parent)
    bare_wall = time.perf_counter() - t0
    bare = summarize(parse_plain(bare_raw.read_text(errors="replace")), lambda procs: "bare", args.rate)["bare"]

    result = {"hours": args.hours, "corpus": str(corpus), "rate_hz": args.rate, "command": " ".join(["audioprep", *run_cmd[1:]]),
              "profiled_wall_seconds": {"audioprep_run": run_wall, "bare": bare_wall}, "load_before": load0,
              "load_after": os.getloadavg()[0], "by_role": run, "bare_loop": bare,
              "how": "py-spy record --subprocesses --threads --format raw; categories: bench/profile_pipeline.py CATEGORIES",
              "env": _util.env_info()}
    w = run.get("worker", {})
    if w:
        cats = w["categories"]
        compute = sum(v["seconds"] for k, v in cats.items() if k in ("partition: decode", "partition: resample", "partition: features"))
        result["worker_beyond_bare"] = {
            "worker_cpu_seconds": w["cpu_seconds"], "partition_compute_seconds (decode+resample+features)": round(compute, 2),
            "bare_loop_cpu_seconds": bare["cpu_seconds"],
            "rest": {k: v["seconds"] for k, v in cats.items() if k not in ("partition: decode", "partition: resample", "partition: features")}}
    path = _util.save("profile-" + f"{args.hours:g}h".replace(".", "p"), result, args.out)
    if args.keep_raw:
        shutil.copy(raw, path.with_suffix(".run.raw"))
        shutil.copy(bare_raw, path.with_suffix(".bare.raw"))
    shutil.rmtree(WORK, ignore_errors=True)

    print(f"{args.hours:g} h, py-spy {args.rate} Hz; audioprep run {run_wall:.1f} s under py-spy, bare loop {bare_wall:.1f} s")
    for role, r in [*run.items(), ("bare loop", bare)]:
        print(f"== {role}: {r['cpu_seconds']:.1f} CPU-s in {r['processes']} process(es) (+{r['waiting_samples_seconds']:.1f} s of waits sampled)")
        for k, v in list(r["categories"].items())[:10]:
            print(f"   {v['seconds']:7.2f} s {v['share']:6.1%}  {k}")
        for t in r["top_self"][:6]:
            print(f"   self {t['seconds']:6.2f} s {t['share']:6.1%}  {t['frame'][:110]}")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
