"""Worker start-up without a fork server: the Dask preload (pipeline.run.warmup) warms each
worker up, and the allocator settings reach a worker process as environment variables
(pipeline.run.allocator), read by glibc when the process starts."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_warm_runs_the_default_feature_set_on_one_second(monkeypatch):
    import pipeline.features
    from pipeline.features import FeaturesConfig
    from pipeline.run.warmup import warm

    computed = []
    real = pipeline.features.build_feature_set

    def spy(config, sample_rate):
        fset = real(config, sample_rate)
        compute = fset.compute
        monkeypatch.setattr(fset, "compute", lambda y: computed.append((config, sample_rate, y.shape, compute(y))))
        return fset

    monkeypatch.setattr(pipeline.features, "build_feature_set", spy)
    warm(8000)
    assert len(computed) == 1
    config, sr, shape, feats = computed[0]
    assert config == FeaturesConfig() and sr == 8000 and shape == (8000,)
    assert feats and all(np.isfinite(v).all() for v in feats.values())


def test_dask_preload_calls_dask_setup_in_each_worker(monkeypatch):
    from distributed import LocalCluster

    import pipeline.run.warmup as warmup

    calls = []
    monkeypatch.setattr(warmup, "warm", lambda: calls.append("warm"))
    with LocalCluster(n_workers=2, processes=False, dashboard_address=":0", preload=["pipeline.run.warmup"]):
        pass
    assert calls == ["warm", "warm"]


def test_the_fork_server_modules_are_gone():
    import pipeline.run.warmup as warmup

    assert importlib.util.find_spec("pipeline.run.warmed") is None
    assert not hasattr(warmup, "use_forkserver") and not hasattr(warmup, "skip_final_collection")


def test_worker_malloc_environ_values():
    from pipeline.run.allocator import worker_malloc_environ

    assert worker_malloc_environ() == {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}


# A 2 MiB array (512 pages; below numpy's 4 MiB huge-page advice) allocated and freed 50
# times: kept in the heap, its pages fault in once; served by mmap (Dask's
# MALLOC_TRIM_THRESHOLD_=65536 alone), on every round.
FAULTS = textwrap.dedent(
    """
    import resource, numpy as np
    np.ones(1 << 18)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):
        np.ones(1 << 18)  # 2 MiB of float64
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the variables are glibc's")
def test_a_process_started_with_worker_malloc_environ_keeps_large_blocks_in_its_heap():
    import dask
    import distributed  # noqa: F401 - registers Dask's distributed config defaults

    from pipeline.run.allocator import worker_malloc_environ

    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    dask_default = {k: str(v) for k, v in dask.config.get("distributed.nanny.pre-spawn-environ").items()}
    assert dask_default["MALLOC_TRIM_THRESHOLD_"] == "65536"

    def faults(extra: dict[str, str]) -> int:
        out = subprocess.run([sys.executable, "-c", FAULTS], env={**base, **extra}, capture_output=True, text=True, check=True, timeout=60)
        return int(out.stdout.strip())

    tuned = faults({**dask_default, **worker_malloc_environ()})
    untuned = faults(dask_default)
    assert untuned >= 40 * 512, untuned  # (nearly) every round faults its 512 pages in again
    assert tuned < 512, json.dumps({"tuned": tuned, "untuned": untuned})
