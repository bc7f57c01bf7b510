"""The embedded cluster's fork server imports Prefect once; each forked worker still runs under
the Prefect settings of its own environment (a fresh interpreter: one fork server per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["PREFECT_API_URL"] = "http://127.0.0.1:9/first/api"
    from flows.runtime import FORKSERVER_PRELOAD
    from pipeline.run.warmup import use_forkserver

    assert use_forkserver(FORKSERVER_PRELOAD)
    assert "prefect" not in sys.modules  # the fork server imported it, not this process
    # a later run of this process, with another API: its workers get this environment
    os.environ["PREFECT_API_URL"] = "http://127.0.0.1:9/second/api"
    from distributed import Client, LocalCluster
    from flows.prepare import local_cluster_kwargs

    def seen(dask_worker):
        import sys
        import flows.forked
        from prefect.settings import get_current_settings
        import psutil

        return {
            "forked": "multiprocessing.forkserver" in " ".join(psutil.Process().parent().cmdline()),
            "imported_under": flows.forked._ENV_AT_IMPORT.get("PREFECT_API_URL"),
            "env": os.environ.get("PREFECT_API_URL"),
            "settings": get_current_settings().api.url,
            "tick_seconds": dask_worker._tick_interval,
        }

    with LocalCluster(**local_cluster_kwargs(2)) as cluster, Client(cluster) as client:
        ticks = [cluster.scheduler._tick_interval, *(n._tick_interval for n in cluster.workers.values())]
        print(json.dumps([ticks, list(client.run(seen).values())]))
    """
)


def test_forked_workers_read_prefect_settings_from_their_own_environment(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_URL")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PYTHONPATH=ROOT)
    env.pop("DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD", None)
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    ticks, workers = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(workers) == 2
    for w in workers:
        # Prefect was imported in the fork server under the first URL; the worker reads its own
        assert w == {"forked": True, "imported_under": "http://127.0.0.1:9/first/api",
                     "env": "http://127.0.0.1:9/second/api", "settings": "http://127.0.0.1:9/second/api",
                     "tick_seconds": 0.5}, w
    assert ticks == [0.5, 0.5, 0.5]  # the scheduler and both nannies, in the flow's process (Dask's default: 0.02)


def test_housekeeping_replaces_only_dasks_defaults():
    import dask

    from flows.prepare import housekeeping_config

    with dask.config.set({"distributed.admin.tick.interval": "20ms", "distributed.worker.memory.monitor-interval": "100ms"}):
        assert housekeeping_config() == {"distributed.admin.tick.interval": "500ms", "distributed.worker.memory.monitor-interval": "500ms"}
    with dask.config.set({"distributed.admin.tick.interval": "50ms", "distributed.worker.memory.monitor-interval": "100ms"}):
        assert housekeeping_config() == {"distributed.worker.memory.monitor-interval": "500ms"}  # the user's 50 ms stays


def test_runtime_closes_an_embedded_cluster_whose_workers_do_not_start(caplog):
    """local_runtime yields before its workers are up; if they never come, the cluster is
    closed (the run fails) instead of the flow waiting for them."""
    from distributed import LocalCluster
    from distributed.core import Status

    from flows.runtime import _watch_workers

    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster:
        with caplog.at_level("ERROR", logger="flows.runtime"):
            _watch_workers(cluster, 1, timeout=0.5)
        assert cluster.status == Status.closed
        assert "started 0 of 1 workers within 0 s" in caplog.text and "--scheduler" in caplog.text
