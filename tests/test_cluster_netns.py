"""A real cluster of separate hosts: network namespaces on a private bridge (tests/netns.py).

Hosts: ``s3`` (moto's S3 server: the source audio and the store bucket), ``sched``
(``dask scheduler``), ``w1``/``w2`` (later ``w3``: ``dask worker``, each in a mount namespace
of its own where the driver's folders and ``/tmp`` are empty tmpfs) and ``driver``
(``audioprep run catalog.yaml --scheduler tcp://<sched>:8786``, with its own Prefect API and
no PREFECT_API_URL). Only the driver has the S3 credentials: they reach the workers inside
the tasks, as docs/operations.md says. ``w1``'s wall clock is 5 minutes behind (libfaketime).
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import base_catalog, write_catalog
from tests.conftest import wait_for as _wait_for
from tests.netns import KEEP, TestNet, why_no_netns
from tests.s3util import ACCESS_KEY, REGION, SECRET, all_objects, s3_client, upload_tree

pytestmark = pytest.mark.slow
BIN = pathlib.Path(sys.executable).parent
REPO = pathlib.Path(__file__).resolve().parents[1]
FAKETIME = shutil.which("faketime")
CLOCK_OFFSET = "-5m"
#: Each partition waits this long before its commit (in the workers), so that a host can be
#: lost, and another added, while partitions remain.
PARTITION_DELAY_SECONDS = "1.0"
#: The scheduler forgets a silent worker after this (Dask's default is 5 minutes).
WORKER_TTL = "8s"

_SKIP = why_no_netns()
if _SKIP is None and not (BIN / "dask").exists():
    _SKIP = f"no `dask` command beside {sys.executable}"
if _SKIP is None and not (BIN / "moto_server").exists():
    _SKIP = "no `moto_server` command (pip install 'moto[server]')"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")]


def _base_env(home: str) -> dict[str, str]:
    """What every host gets: the code, a home of its own, and the BLAS kernel choice of this
    machine (``OPENBLAS_CORETYPE``: another kernel rounds float32 sums differently, and
    docs/operations.md says to pin it on every host). No credentials, no API URL."""
    blas = {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS_", "MKL_"))}
    return {**blas,
        "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "PYTHONPATH": str(REPO),
        "HOME": home,
        "TMPDIR": home,
        "PREFECT_HOME": f"{home}/.prefect",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MPLBACKEND": "Agg",
        "LANG": "C.UTF-8",
    }


class Cluster:
    def __init__(self, net: TestNet, root: pathlib.Path, driver_folders: pathlib.Path) -> None:
        self.net, self.root, self.driver_folders = net, root, driver_folders
        self.s3 = net.add_host("s3")
        self.sched_addr = net.add_host("sched")
        self.driver_addr = net.add_host("driver")
        self.endpoint = f"http://{self.s3}:5000"
        self.scheduler = f"tcp://{self.sched_addr}:8786"
        self.driver_dir = root / "driver"
        self.driver_dir.mkdir()
        self.logs = root / "logs"
        self.logs.mkdir()
        self.daemons: dict[str, subprocess.Popen] = {}  # host -> its long-running process

    def start(self, host: str, argv: list[str], **kw) -> None:
        self.daemons[host] = self.net.spawn(host, argv, log=str(self.logs / f"{host}.log"), **kw)

    def post_mortem(self, hosts) -> str:
        """Each host's exit status (if its process ended) and the tail of its output."""
        out = []
        for h in hosts:
            p, log = self.daemons.get(h), self.logs / f"{h}.log"
            state = "not started" if p is None else ("running" if p.poll() is None else f"exited with {p.returncode}")
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            out.append(f"--- {h} ({state}):\n{tail}")
        return "\n".join(out)

    def wait_for_workers(self, names: set[str], timeout: float) -> None:
        """Until ``names`` have joined the scheduler. Fails at once, with the hosts' output,
        when one of their processes (or the scheduler) has exited; with it too on timeout."""
        t0, seen = time.monotonic(), set()
        while time.monotonic() - t0 < timeout:
            dead = [h for h in ("sched", *sorted(names)) if h in self.daemons and self.daemons[h].poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited before {sorted(names)} joined the scheduler\n" + self.post_mortem(["sched", *sorted(names)]))
            try:
                seen = self.worker_names()
            except OSError:  # the scheduler is not listening yet
                seen = set()
            if names <= seen:
                return
            time.sleep(0.5)
        raise TimeoutError(f"{sorted(names)} did not all join the scheduler in {timeout:.0f} s (joined: {sorted(seen)})\n"
                           + self.post_mortem(["sched", *sorted(names)]))

    def start_worker(self, name: str, *, clock: str | None = None) -> None:
        self.net.add_host(name)
        home = f"/tmp/{name}"
        env = {**_base_env(home), "AUDIOPREP_TEST_PARTITION_DELAY_SECONDS": PARTITION_DELAY_SECONDS,
               "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5"}
        argv = [str(BIN / "dask"), "worker", self.scheduler, "--name", name, "--nthreads", "1", "--nworkers", "1",
                "--no-dashboard", "--local-directory", home, "--preload", "pipeline.run.warmup"]
        if clock:
            # every clock of the host is shifted (libfaketime's FAKETIME_DONT_FAKE_MONOTONIC makes
            # Python's time.sleep fail with EINVAL): durations measured on it stay right
            argv = [FAKETIME, "-f", clock, *argv]
        # the driver's folders (everything under pytest's base temp) are empty tmpfs there
        self.start(name, argv, env=env, hide=[str(self.driver_folders)], workdir=home)

    def run_driver(self, catalog: pathlib.Path, summary: pathlib.Path, prefect_home: pathlib.Path) -> subprocess.Popen:
        env = {**_base_env(str(self.driver_dir)), "PREFECT_HOME": str(prefect_home), "COLUMNS": "200",
               "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
        argv = [str(BIN / "audioprep"), "run", str(catalog), "--scheduler", self.scheduler, "--no-report", "--json", str(summary)]
        return self.net.spawn("driver", argv, env=env, log=str(self.logs / f"{summary.stem}.log"))

    def worker_names(self) -> set[str]:
        from distributed import Client

        with Client(self.scheduler, timeout=30) as c:
            return {str(w["name"]) for w in c.scheduler_info()["workers"].values()}

    def on_workers(self, fn, *args):
        from distributed import Client

        with Client(self.scheduler, timeout=30) as c:
            names = {a: str(w["name"]) for a, w in c.scheduler_info()["workers"].items()}
            return {names[a]: v for a, v in c.run(fn, *args).items()}


def _catalog(cluster: Cluster, store: str, storage_options: dict | None) -> dict:
    opts = {"key": "${AWS_ACCESS_KEY_ID}", "secret": "${AWS_SECRET_ACCESS_KEY}",
            "client_kwargs": {"endpoint_url": cluster.endpoint, "region_name": REGION}}
    cat = base_catalog(pathlib.Path("unused"), pathlib.Path(store), execution={"partition_seconds": 3, "retries": 3})
    cat["sources"][0] |= {"url": "s3://audio/tiny", "storage_options": opts}
    cat["output"] = {"store": store, **({"storage_options": storage_options} if storage_options else {})}
    return cat


@pytest.fixture(scope="module")
def cluster(tiny_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("netns")
    with TestNet() as net:
        c = Cluster(net, root, tmp_path_factory.getbasetemp())
        c.start("s3", [str(BIN / "moto_server"), "-H", c.s3, "-p", "5000"], env=_base_env(str(root)))
        sched_env = {**_base_env(str(root)), "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": WORKER_TTL}
        c.start("sched", [str(BIN / "dask"), "scheduler", "--host", c.sched_addr, "--port", "8786", "--no-dashboard"], env=sched_env)
        c.start_worker("w1", clock=CLOCK_OFFSET if FAKETIME else None)
        c.start_worker("w2")

        def s3_up():
            try:
                s3_client(c.endpoint).list_buckets()
                return True
            except Exception:  # noqa: BLE001 - not listening yet
                return False

        _wait_for(s3_up, 120, "moto server on the s3 host")
        for bucket in ("audio", "store"):
            s3_client(c.endpoint).create_bucket(Bucket=bucket)
        upload_tree(c.endpoint, tiny_corpus, "audio", "tiny")
        (c.driver_dir / "driver-only.txt").write_text("the driver's disk")
        # a wait, not a timing: each worker imports and warms the feature code before it joins,
        # which takes long on a loaded 2-core machine
        c.wait_for_workers({"w1", "w2"}, 240)
        yield c
        if os.environ.get("AUDIOPREP_NETNS_KEEP_LOGS"):  # the hosts' output, for a failure's post-mortem
            shutil.copytree(c.logs, os.environ["AUDIOPREP_NETNS_KEEP_LOGS"], dirs_exist_ok=True)
    assert not net.leftovers(), net.leftovers()


@pytest.fixture(scope="module")
def reference(cluster, tmp_path_factory):
    """The same catalog, run by the embedded LocalCluster in the test's own namespace."""
    d = tmp_path_factory.mktemp("ref")
    cat = write_catalog(d / "ref.yaml", _catalog(cluster, str(d / "ref.zarr"), None))
    env = {**os.environ, "PREFECT_HOME": str(d / "prefect"), "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
    env.pop("PREFECT_API_URL", None)
    r = subprocess.run([str(BIN / "audioprep"), "run", str(cat), "--workers", "2", "--no-report"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return str(d / "ref.zarr")


def _store_options(cluster: Cluster) -> dict:
    return {"key": ACCESS_KEY, "secret": SECRET, "client_kwargs": {"endpoint_url": cluster.endpoint, "region_name": REGION}}


def _assert_same_store(cluster: Cluster, url: str, reference: str) -> None:
    """Example by example: the same ids (each once), rows and feature bytes."""
    from pipeline import open_dataset

    a, b = open_dataset(url, storage_options=_store_options(cluster), normalize=False), open_dataset(reference, normalize=False)
    ids_a, ids_b = list(a.table["id"]), list(b.table["id"])
    assert len(set(ids_a)) == len(ids_a) == 32  # every example exactly once
    assert sorted(ids_a) == sorted(ids_b)
    for i, ex_id in enumerate(ids_a):
        ea, eb = a[i], b[ids_b.index(ex_id)]
        assert ea["label"] == eb["label"] and ea["metadata"] == eb["metadata"], ex_id
        assert ea["features"].keys() == eb["features"].keys()
        for name, arr in ea["features"].items():
            other = eb["features"][name]
            assert arr.dtype == other.dtype and arr.shape == other.shape and arr.tobytes() == other.tobytes(), (ex_id, name)


def _store_options_env(cluster: Cluster) -> dict:
    """The store's options as the catalog writes them: credentials from the driver's environment."""
    return {"key": "${AWS_ACCESS_KEY_ID}", "secret": "${AWS_SECRET_ACCESS_KEY}",
            "client_kwargs": {"endpoint_url": cluster.endpoint, "region_name": REGION}}


def _run(cluster: Cluster, name: str, during=None) -> tuple[dict, str, float]:
    store = f"s3://store/{name}.zarr"
    cat = write_catalog(cluster.driver_dir / f"{name}.yaml", _catalog(cluster, store, _store_options_env(cluster)))
    summary_path = cluster.driver_dir / f"{name}.json"
    t0 = time.monotonic()
    p = cluster.run_driver(cat, summary_path, cluster.driver_dir / f"prefect-{name}")
    try:
        if during:
            during()
        rc = p.wait(240)
    finally:
        if p.poll() is None:
            p.kill()
    wall = time.monotonic() - t0
    log = (cluster.logs / f"{name}.log").read_text(errors="replace")
    assert rc == 0, log[-4000:]
    return json.loads(summary_path.read_text()), log, wall


@pytest.fixture(scope="module")
def run(cluster):
    """One run across the hosts: after its first partition commits, ``w2``'s host is lost
    (every process SIGKILLed, then its link and namespace deleted) and ``w3`` joins."""
    events: dict[str, float] = {}

    def churn():
        client = s3_client(cluster.endpoint)

        def first_commit():
            r = client.list_objects_v2(Bucket="store", Prefix="run.zarr/_partitions/")
            return r.get("KeyCount", 0) >= 1

        _wait_for(first_commit, 120, "first partition committed")
        events["w2_lost"] = time.monotonic()
        cluster.net.lose_host("w2")
        cluster.start_worker("w3")

    summary, log, wall = _run(cluster, "run", during=churn)
    print(f"netns run: {wall:.1f} s wall, {summary['partitions']} partitions, per worker {summary['partitions_per_worker']}")
    return summary, log


def _per_worker(summary: dict) -> dict[str, int]:
    return {k.split(" ")[0]: n for k, n in summary["partitions_per_worker"].items()}


def test_workers_are_separate_hosts_without_the_drivers_disk_or_credentials(cluster):
    sentinel = str(cluster.driver_dir / "driver-only.txt")
    assert pathlib.Path(sentinel).read_text() == "the driver's disk"

    def look(path):
        import os
        import tempfile

        try:
            open(path).close()
            opened = True
        except OSError:
            opened = False
        return {"opened": opened, "tmp": tempfile.gettempdir(), "tmp_entries": sorted(os.listdir("/tmp")),
                "aws": [k for k in os.environ if k.startswith("AWS_")], "api": os.environ.get("PREFECT_API_URL")}

    seen = cluster.on_workers(look, sentinel)
    assert set(seen) == {"w1", "w2"}
    for name, s in seen.items():
        assert s["opened"] is False, f"{name} opened a driver-only path"
        # a /tmp of its own, empty but for its folder (and this checkout, where it lies under /tmp)
        kept = {k.split("/")[2] for k in KEEP if k.startswith("/tmp/")}
        assert s["tmp"] == f"/tmp/{name}" and sorted(set(s["tmp_entries"]) - kept) == [name], s
        assert s["aws"] == [] and s["api"] is None, s


def test_an_api_the_workers_cannot_reach_is_refused_at_start(cluster):
    """PREFECT_API_URL on the driver's loopback: the workers (other hosts) cannot reach it.
    The run refuses before any work, in one line that says what to set."""
    cat = write_catalog(cluster.driver_dir / "refused.yaml", _catalog(cluster, "s3://store/refused.zarr", _store_options_env(cluster)))
    env = {**_base_env(str(cluster.driver_dir)), "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
           "PREFECT_API_URL": "http://127.0.0.1:4200/api", "COLUMNS": "300"}
    log = cluster.logs / "refused.log"
    p = cluster.net.spawn("driver", [str(BIN / "audioprep"), "run", str(cat), "--scheduler", cluster.scheduler, "--no-report"], env=env, log=str(log))
    assert p.wait(120) != 0
    out = " ".join(log.read_text(errors="replace").split())  # one line, however the terminal wraps it
    assert "2 of 2 Dask worker(s) of " in out and "cannot reach this run's Prefect API at http://127.0.0.1:4200/api" in out, out
    assert "Set PREFECT_API_URL to a Prefect server that this host and every worker reach" in out and "Traceback" not in out, out
    assert not all_objects(cluster.endpoint, "store", "refused.zarr/_partitions/")  # no partition ran


def test_the_run_completes_across_hosts_and_equals_the_embedded_cluster(cluster, run, reference):
    summary, log = run
    assert summary["examples"] == 32
    _assert_same_store(cluster, "s3://store/run.zarr", reference)
    manifests = [k for k in all_objects(cluster.endpoint, "store", "run.zarr/_partitions/") if k.endswith(".json")]
    assert len(manifests) == summary["partitions"]
    # the secret went to the workers inside the tasks, never into the store or the output
    objects = all_objects(cluster.endpoint, "store", "run.zarr/")
    assert objects and not any(SECRET.encode() in v for v in objects.values())
    assert SECRET not in log


def test_a_host_lost_mid_run_is_named_and_the_run_completes_without_it(run):
    summary, log = run
    assert [w.split(" ")[0] for w in summary["lost_workers"]] == ["w2"], summary["lost_workers"]
    assert "Dask workers lost during the run (their partitions ran elsewhere): w2 (tcp://" in log
    # its committed partitions stay committed; their results, held by the lost worker, come
    # back from w1 or w3 (which find the manifest and skip the work)
    assert "w2" not in _per_worker(summary) and sum(summary["partitions_per_worker"].values()) == summary["partitions"]


def test_a_host_added_mid_run_takes_partitions_shown_in_prefect(cluster, run):
    summary, _ = run
    assert _per_worker(summary).get("w3", 0) >= 1, summary["partitions_per_worker"]
    # the run's own API (stopped with the run) kept its task runs in the driver's PREFECT_HOME;
    # a server on that database answers for it
    w3_runs = _task_runs_on(cluster.driver_dir / "prefect-run", "w3")
    assert len(w3_runs) >= 1 and all(n.startswith("partition-") for n in w3_runs), w3_runs


@pytest.mark.skipif(FAKETIME is None, reason="libfaketime not installed (Debian: apt-get install faketime); w1 ran with the host's clock")
def test_a_worker_five_minutes_behind_breaks_nothing(cluster, run):
    import time as _time

    summary, _ = run
    clocks = cluster.on_workers(_time.time)
    now = time.time()
    assert abs(clocks["w1"] - now + 300) < 20 and abs(clocks["w3"] - now) < 20, clocks  # w1 is 5 minutes behind
    assert _per_worker(summary).get("w1", 0) >= 1  # it did its share, into a store equal to the reference's
    # the lock is the driver's, taken and released by one host
    from pipeline.store.location import StoreLocation

    assert not StoreLocation("s3://store/run.zarr", _store_options(cluster)).exists("_lock.json")


def _task_runs_on(prefect_home: pathlib.Path, worker: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId, TaskRunFilter, TaskRunFilterName

    from flows.server import prefect_api

    old = os.environ.get("PREFECT_HOME")
    os.environ["PREFECT_HOME"] = str(prefect_home)
    try:
        with prefect_api() as _url:

            async def read() -> list[str]:
                async with get_client() as client:
                    runs = await client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="partition-")), limit=200)
                    logs = await client.read_logs(log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[r.id for r in runs])), limit=200)
                    on = {lg.task_run_id for lg in logs if f"on Dask worker {worker} (" in lg.message}
                    return sorted(r.name for r in runs if r.id in on)

            return asyncio.run(read())
    finally:
        if old is None:
            os.environ.pop("PREFECT_HOME", None)
        else:
            os.environ["PREFECT_HOME"] = old


def test_teardown_leaves_nothing_even_when_the_test_fails():
    with pytest.raises(RuntimeError, match="the test failed"):
        with TestNet(subnet_octet=99, suffix="t") as net:
            net.add_host("x")
            net.spawn("x", ["sleep", "300"], env={"PATH": "/usr/bin:/bin"}, hide=["/var/tmp"], workdir="/tmp/x")
            _wait_for(lambda: net.pids("x"), 10, "a process in the namespace")
            assert net.leftovers()  # the namespace, the links and the process are there
            raise RuntimeError("the test failed")
    assert net.leftovers() == []
    assert not subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.count(f"ap{net.tag}-")
