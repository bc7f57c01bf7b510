"""``execution.cluster: {kind: slurm}`` against a real single-node SLURM: munged, slurmctld
and slurmd (Debian's ``slurm-wlm`` and ``munge``) started by the test with a configuration of
its own, on free ports, in a temporary folder. Skips, saying why, where they are not installed
or cannot start (not root, no such binaries)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import psutil
import pytest

from flows.server import free_port
from tests.conftest import base_catalog, write_catalog
from tests.conftest import wait_for as _wait_for

BIN = pathlib.Path(sys.executable).parent
REPO = pathlib.Path(__file__).resolve().parents[1]
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel")
JOB_NAME = "audioprep-worker"


def _why_no_slurm() -> str | None:
    missing = [d for d in DAEMONS if not shutil.which(d) and not os.path.exists(f"/usr/sbin/{d}")]
    if missing:
        return f"SLURM not installed here ({', '.join(missing)} missing; Debian: apt-get install slurmctld slurmd slurm-client munge)"
    if os.geteuid() != 0:
        return "slurmd runs jobs as their user: the test starts it as root"
    try:
        import dask_jobqueue  # noqa: F401
    except ImportError:
        return "dask-jobqueue not installed (pip install 'audioprep[slurm]')"
    return None


_SKIP = _why_no_slurm()
needs_slurm = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")


def _exe(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _plugin_dir() -> str:
    for d in ("/usr/lib/x86_64-linux-gnu/slurm-wlm", "/usr/lib/aarch64-linux-gnu/slurm-wlm", "/usr/lib/slurm-wlm", "/usr/lib64/slurm"):
        if os.path.isdir(d):
            return d
    return "/usr/lib/slurm-wlm"


def _conf(d: pathlib.Path, host: str) -> str:
    return f"""ClusterName=audioprep-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge/sock
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
PluginDir={_plugin_dir()}
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


def test_execution_cluster_kinds_in_the_catalog(tmp_path, tiny_corpus):
    from flows.slurm import WORKER_PRELOAD, slurm_api_host, slurm_cluster_kwargs
    from pipeline.config.catalog import load_catalog
    from pipeline.errors import CatalogError, ClusterError

    def load(**execution):
        return load_catalog(write_catalog(tmp_path / "c.yaml", base_catalog(tiny_corpus, tmp_path / "s.zarr", execution=execution))).catalog.execution

    spec = {"kind": "slurm", "jobs": 2, "cores": 4, "processes": 2, "memory": "8GiB", "queue": "cpu", "interface": "lo",
            "job_extra_directives": ["--gres=gpu:1"], "job_script_prologue": ["module load x"]}
    ex = load(cluster=spec)
    assert ex.scheduler_address() is None and ex.cluster.kind == "slurm"
    kw = slurm_cluster_kwargs(ex.cluster, "127.0.0.1:0")
    assert kw["n_workers"] == 4 and (kw["cores"], kw["processes"], kw["memory"], kw["queue"]) == (4, 2, "8GiB", "cpu")
    assert kw["interface"] == "lo" and kw["job_extra_directives"] == ["--gres=gpu:1"] and kw["job_script_prologue"] == ["module load x"]
    assert kw["worker_extra_args"] == ["--preload", WORKER_PRELOAD] and kw["scheduler_options"] == {"dashboard_address": "127.0.0.1:0"}
    assert "account" not in kw  # unset keys are left to dask-jobqueue's configuration
    assert slurm_api_host(ex.cluster) == "127.0.0.1"
    with pytest.raises(ClusterError, match="execution.cluster.interface"):
        slurm_api_host(load(cluster={**spec, "interface": "no-such-if0"}).cluster)
    assert load(cluster={"kind": "scheduler", "address": "tcp://h:8786"}).scheduler_address() == "tcp://h:8786"
    assert load(scheduler="tcp://h:8786").scheduler_address() == "tcp://h:8786"
    assert load(cluster={"kind": "local"}).scheduler_address() is None
    for bad, says in [({"scheduler": "tcp://h:8786", "cluster": spec}, "cannot both be set"),
                      ({"cluster": {**spec, "job": 3}}, "job"),
                      ({"cluster": {"kind": "kubernetes"}}, "kind")]:
        with pytest.raises(CatalogError) as err:
            load(**bad)
        assert says in str(err.value) and "execution" in str(err.value), str(err.value)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """``SLURM_CONF`` of a running single-node cluster; every daemon and job ends with the module."""
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "munge"):
        (d / sub).mkdir()
    (d / "munge").chmod(0o700)
    key = d / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    host = socket.gethostname().split(".")[0]
    (d / "slurm.conf").write_text(_conf(d, host))
    env = {**os.environ, "SLURM_CONF": str(d / "slurm.conf")}
    procs: list[subprocess.Popen] = []
    log = open(d / "daemons.log", "ab")  # noqa: SIM115 - closed below
    try:
        m = d / "munge"
        procs.append(subprocess.Popen([_exe("munged"), "-F", "-f", f"--socket={m}/sock", f"--key-file={key}", f"--log-file={m}/log",
                                       f"--pid-file={m}/pid", f"--seed-file={m}/seed"], stdout=log, stderr=log))
        _wait_for(lambda: (m / "sock").exists(), 20, "munged's socket")
        procs.append(subprocess.Popen([_exe("slurmctld"), "-D", "-c"], env=env, stdout=log, stderr=log))
        procs.append(subprocess.Popen([_exe("slurmd"), "-D", "-N", host], env=env, stdout=log, stderr=log))

        def idle():
            r = subprocess.run([_exe("sinfo"), "-h", "-o", "%t"], env=env, capture_output=True, text=True)
            return r.returncode == 0 and r.stdout.strip() == "idle"

        try:
            _wait_for(idle, 30, "the SLURM node idle")
        except TimeoutError:
            pytest.skip(f"SLURM did not start here: {(d / 'daemons.log').read_text(errors='replace')[-500:]}")
        yield env
    finally:
        subprocess.run([_exe("scancel"), "--full", "-u", "root"], env=env, capture_output=True)
        family = [c for p in procs if psutil.pid_exists(p.pid) for c in psutil.Process(p.pid).children(recursive=True)]
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for c in family:  # slurmstepd and the job's processes
            try:
                c.kill()
            except psutil.NoSuchProcess:
                pass
        log.close()


@pytest.fixture(scope="module")
def reference_store(tiny_corpus, tmp_path_factory):
    from threadpoolctl import threadpool_limits

    from pipeline.config.catalog import load_catalog
    from pipeline.run.steps import run_catalog

    d = tmp_path_factory.mktemp("slurm-ref")
    loaded = load_catalog(write_catalog(d / "c.yaml", base_catalog(tiny_corpus, d / "ref.zarr", execution={"partition_seconds": 4})))
    with threadpool_limits(limits=1):  # one BLAS thread, as Dask's workers have
        run_catalog(loaded)
    return d / "ref.zarr"


@pytest.mark.slow
@needs_slurm
def test_a_run_whose_workers_are_slurm_jobs(slurm, tiny_corpus, tmp_path, reference_store):
    from pipeline import open_dataset

    store = tmp_path / "s.zarr"
    cluster = {"kind": "slurm", "jobs": 2, "cores": 1, "memory": "1GiB", "processes": 1, "walltime": "00:10:00", "python": sys.executable,
               "job_script_prologue": [f"export PYTHONPATH={REPO}"], "local_directory": str(tmp_path / "scratch"),
               "log_directory": str(tmp_path / "joblogs")}
    cat = write_catalog(tmp_path / "c.yaml", base_catalog(tiny_corpus, store, execution={"partition_seconds": 4, "cluster": cluster}))
    env = {**slurm, "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    p = subprocess.Popen([str(BIN / "audioprep"), "run", str(cat), "--no-report", "--json", str(tmp_path / "s.json")], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: set[str] = set()
    try:
        while p.poll() is None:  # the run's workers, as SLURM lists them while it runs
            r = subprocess.run([_exe("squeue"), "-h", "-o", "%j %T"], env=slurm, capture_output=True, text=True)
            seen |= {line.strip() for line in r.stdout.splitlines() if line.strip()}
            time.sleep(0.5)
        out = p.communicate(timeout=10)[0]
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, out[-4000:]
    assert f"{JOB_NAME} RUNNING" in seen, seen
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["examples"] == 32
    # every partition ran on a SLURMCluster worker (not in this process, not on a LocalCluster)
    assert s["partitions_per_worker"] and all(k.startswith("SLURMCluster-") for k in s["partitions_per_worker"]), s["partitions_per_worker"]
    assert sum(s["partitions_per_worker"].values()) == s["partitions"]
    # the cluster's jobs end with the run
    _wait_for(lambda: not subprocess.run([_exe("squeue"), "-h"], env=slurm, capture_output=True, text=True).stdout.strip(), 30, "jobs gone")
    a, b = open_dataset(str(store)), open_dataset(str(reference_store))
    ids_b = list(b.table["id"])
    assert sorted(a.table["id"]) == sorted(ids_b)
    for i in range(len(a)):
        ea, eb = a[i], b[ids_b.index(a.table["id"][i])]
        for name, arr in ea["features"].items():
            assert arr.tobytes() == eb["features"][name].tobytes(), (ea["id"], name)
