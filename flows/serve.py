"""Serve the ``prepare`` flow as a scheduled Prefect deployment (``audioprep serve``).

The deployment definition lives here, apart from the flow code. ``deploy/prefect.yaml``
declares the same deployment (name, entrypoint, parameters, schedule, concurrency) for
``prefect deploy`` onto a work pool; ``tests/test_deploy.py`` keeps the two in step.

A served deployment runs each flow run in a subprocess of the serving process, which
passes on its environment: ``PREFECT_API_URL`` (so the flow and its Dask workers report
to the same API) and the credentials that ``${VAR}`` placeholders in the catalog name.
docs/serving.md says how to start a server, serve, stop, and deploy onto a work pool.
"""

from __future__ import annotations

import asyncio
import pathlib
import signal
from typing import TYPE_CHECKING, Any

from prefect.logging import get_logger
from prefect.runner import Runner

from pipeline.config.catalog import load_catalog
from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

DEFAULT_NAME = "audioprep-prepare"
DEFAULT_CRON = "0 * * * *"
TIMEZONE = "UTC"
TAGS = ("audioprep",)
CONCURRENCY_LIMIT = 1
"""Runs of one deployment write one store: a run that comes due while the previous one
is still going waits (ENQUEUE) instead of failing on the store's lock."""


def build_deployment(catalog: str | pathlib.Path, *, cron: str = DEFAULT_CRON, name: str = DEFAULT_NAME) -> RunnerDeployment:
    """The deployment ``serve_catalog`` serves, built without registering or blocking.

    The catalog is validated now (schema and ``${VAR}`` placeholders, not the sources),
    so a broken catalog fails when the service starts, not at the first scheduled run.
    Its path is stored absolute, and the entrypoint as a module path
    (``flows.prepare.prepare``): runs may start in any working directory. Pass the result
    to ``prefect.serve`` or a ``prefect.runner.Runner`` to serve it yourself.
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType

    from flows.prepare import prepare

    path = pathlib.Path(catalog).expanduser().resolve()
    load_catalog(path)
    return prepare.to_deployment(
        name=name,
        schedules=[cron_schedule(cron)],
        parameters={"catalog_path": str(path)},
        description=f"Prepare the dataset of {path} into its Zarr store.",
        tags=list(TAGS),
        concurrency_limit=ConcurrencyLimitConfig(limit=CONCURRENCY_LIMIT, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def serve_catalog(catalog: str, *, cron: str, name: str = DEFAULT_NAME, limit: int | None = None) -> None:
    """Serve ``prepare(catalog_path=CATALOG)`` on the cron schedule until Ctrl-C or SIGTERM.

    Parameters
    ----------
    catalog : path to catalog.yaml; becomes the deployment's default ``catalog_path``.
    cron : cron expression of the schedule, e.g. ``"0 * * * *"`` (hourly).
    name : deployment name; runs are triggered as ``prepare/<name>``.
    limit : most flow runs this process executes at once (None: no limit of its own;
        the deployment itself allows one run at a time and queues the rest).

    Needs ``PREFECT_API_URL`` pointing at a Prefect server (``prefect server start``) or
    Prefect Cloud: a temporary API started for the process does not run the scheduler,
    so the schedule would never fire.

    The deployment is served by a ``prefect.runner.Runner`` (what ``prefect.serve`` does),
    so each run imports ``flows.prepare`` afresh by its module path, as a work-pool worker
    running ``deploy/prefect.yaml`` does. (``prepare.serve(...)`` would hand the in-memory
    flow to each run's subprocess pickled by value, which drops names the module uses only
    in annotations; the run then fails in parameter validation.)

    Stopping: Ctrl-C (SIGINT) and SIGTERM both stop polling, cancel a run in progress,
    pause the schedule and return; a second SIGTERM while stopping interrupts at once.
    This call installs the SIGTERM handling for its duration (see ``ServeRunner``):
    call it from the main thread of a process that is about to end, as ``audioprep serve``.
    """
    url = require_api_url()
    deployment = build_deployment(catalog, cron=cron, name=name)
    runner = ServeRunner(pause_on_shutdown=True, limit=limit)
    runner.add_deployment(deployment)
    print(
        f"Serving prepare/{deployment.name} on cron {cron!r} ({TIMEZONE}) from {url}\n"
        f"Trigger a run now: prefect deployment run prepare/{deployment.name}\n"
        "Stop: Ctrl-C or SIGTERM (the schedule is paused).",
        flush=True,
    )
    previous = signal.getsignal(signal.SIGTERM)
    try:
        asyncio.run(runner.start())
    except KeyboardInterrupt:
        pass  # Ctrl-C: asyncio.run cancelled the runner, which paused the schedule on its way out
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


class ServeRunner(Runner):
    """A ``prefect.runner.Runner`` whose SIGTERM stops it the way ``Runner.astop`` does.

    ``Runner.start`` installs ``handle_sigterm`` as the process's SIGTERM handler. Prefect
    3.8's own handler calls ``stop()`` inside the running event loop, where that only makes
    an ``astop()`` coroutine that is never awaited ("coroutine 'Runner.astop' was never
    awaited"), then raises SystemExit out of whatever the loop was doing. This handler
    schedules ``astop()`` on the loop instead: polling stops, a run in progress is
    cancelled, and ``start()`` returns through the runner's exit, which pauses the
    schedule. A second SIGTERM while stopping raises KeyboardInterrupt, as a second
    Ctrl-C would. (Prefect 3.9's own handler schedules ``astop()`` the same way; this
    override can go once the project requires Prefect >= 3.9.)
    """

    def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not serving (yet, or any more): end as Ctrl-C would
            raise KeyboardInterrupt from None
        if self.stopping or not self.started:
            raise KeyboardInterrupt
        get_logger("runner").info("SIGTERM received: stopping, pausing the schedule")
        self.stopping = True

        def stop() -> None:
            self.stop_task = loop.create_task(self.astop())  # held: the loop keeps only a weak reference

        loop.call_soon_threadsafe(stop)


def require_api_url() -> str:
    """Return the configured Prefect API URL, or raise ConfigError saying how to set one."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise ConfigError(
            "audioprep serve needs a Prefect API whose scheduler fires the cron schedule: "
            "start one with `prefect server start` (or use Prefect Cloud) and "
            "`export PREFECT_API_URL=http://127.0.0.1:4200/api`"
        )
    return url


def cron_schedule(cron: str, timezone: str = TIMEZONE):
    """A Prefect cron schedule, or ConfigError when ``cron`` is not a cron expression."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.schedules import Cron

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValueError:  # pydantic's ValidationError is a ValueError
        raise ConfigError(
            f'--cron {cron!r} is not a valid cron expression: five fields, minute hour day-of-month month day-of-week, e.g. "0 * * * *" for hourly'
        ) from None
    return Cron(cron, timezone=timezone)


__all__ = ["build_deployment", "serve_catalog", "ServeRunner", "require_api_url", "cron_schedule", "DEFAULT_NAME", "DEFAULT_CRON"]
