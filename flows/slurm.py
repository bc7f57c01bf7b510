"""``execution.cluster: {kind: slurm}``: Dask workers as SLURM batch jobs, through
dask-jobqueue's ``SLURMCluster`` (the maintained Dask way onto SLURM).

The scheduler runs in the run's own process and the workers connect back to it from the
compute nodes, as they reach the run's Prefect API: both listen on the address of
``interface`` (or of this host's default route), never on loopback unless that is all there is.
"""

from __future__ import annotations

from typing import Any

from prefect_dask import DaskTaskRunner

#: Imported by the workers at their start (as the embedded cluster's): numba kernels compile
#: while the job waits for its first partition.
WORKER_PRELOAD = "pipeline.run.warmup"


def _require_jobqueue() -> None:
    from pipeline.errors import ClusterError

    try:
        import dask_jobqueue  # noqa: F401
    except ImportError:
        raise ClusterError(
            "execution.cluster: {kind: slurm} needs dask-jobqueue on this host: pip install 'audioprep[slurm]'"
        ) from None


def slurm_api_host(spec: Any) -> str:
    """The address the scheduler and the run's Prefect API listen on for SLURM workers."""
    from distributed.utils import get_ip, get_ip_interface

    from pipeline.errors import ClusterError

    if spec.interface:
        try:
            return get_ip_interface(spec.interface)
        except ValueError as exc:
            raise ClusterError(f"execution.cluster.interface: {exc}") from None
    return get_ip()


def slurm_cluster_kwargs(spec: Any, dashboard_address: str | None = None) -> dict[str, Any]:
    """``SLURMCluster`` keyword arguments for a catalog's ``execution.cluster`` (kind slurm):
    ``jobs`` jobs of ``processes`` single-threaded workers each, started with the cluster."""
    from flows.prepare import DASHBOARD_ADDRESS

    kwargs: dict[str, Any] = {
        "n_workers": spec.jobs * spec.processes,
        "cores": spec.cores,
        "processes": spec.processes,
        "memory": spec.memory,
        "walltime": spec.walltime,
        "queue": spec.queue,
        "account": spec.account,
        "job_extra_directives": list(spec.job_extra_directives),
        "job_script_prologue": list(spec.job_script_prologue),
        "local_directory": spec.local_directory,
        "log_directory": spec.log_directory,
        "worker_extra_args": ["--preload", WORKER_PRELOAD],
        "scheduler_options": {"dashboard_address": dashboard_address or DASHBOARD_ADDRESS},
        "job_name": "audioprep-worker",
    }
    if spec.interface:
        kwargs["interface"] = spec.interface
    else:
        kwargs["scheduler_options"]["host"] = slurm_api_host(spec)
    if spec.python:
        kwargs["python"] = spec.python
    return {k: v for k, v in kwargs.items() if v is not None}


def slurm_runner(spec: Any, dashboard_address: str | None = None) -> DaskTaskRunner:
    """prefect-dask's runner on a ``SLURMCluster`` it starts with the flow and closes after
    (its jobs are cancelled then)."""
    _require_jobqueue()
    return DaskTaskRunner(cluster_class="dask_jobqueue.SLURMCluster", cluster_kwargs=slurm_cluster_kwargs(spec, dashboard_address))
