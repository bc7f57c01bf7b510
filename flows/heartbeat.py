"""Flow-run heartbeats that stop as soon as the flow does.

Prefect's heartbeat thread sleeps in 1 s steps, and a sync flow run joins it when it ends:
up to 1 s at the end of every ``prepare`` run with heartbeats on (measured 0.9 s of a 15 s
run). For the flow runs it starts itself, :func:`flows.runtime.local_runtime` turns
Prefect's thread off (:func:`take_over`) and ``prepare`` emits the same event from a
thread that waits on an event instead (:func:`emitting`): ``prefect.flow-run.heartbeat``
with the same resource and related resources (flow, deployment, tags), at the same
frequency, so a server's heartbeat-based crash detection sees what it would have seen.
Flow runs that Prefect starts (deployments) keep Prefect's own heartbeats.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Iterator

#: The heartbeat frequency Prefect would have used, while :func:`take_over` is in effect.
_TAKEN_OVER: contextvars.ContextVar[int | None] = contextvars.ContextVar("audioprep_heartbeat_seconds", default=None)

#: Prefect's own minimum (``prefect.flow_engine.MINIMUM_HEARTBEAT_INTERVAL``).
MINIMUM_SECONDS = 30

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def take_over() -> Iterator[None]:
    """Flow runs started in this block run without Prefect's heartbeat thread; ``prepare``
    emits their heartbeats itself, at the frequency Prefect's settings give here."""
    from prefect.settings import get_current_settings

    seconds = get_current_settings().flows.heartbeat_frequency
    if seconds is None:  # heartbeats are off: nothing to take over
        yield
        return
    token = _TAKEN_OVER.set(max(int(seconds), MINIMUM_SECONDS))
    try:
        with prefect_thread_off():
            yield
    finally:
        _TAKEN_OVER.reset(token)


@contextlib.contextmanager
def prefect_thread_off() -> Iterator[None]:
    """Flow runs started in this block run without Prefect's heartbeat thread.

    Settings are entered only when heartbeats are on: entering them validates every setting
    again (0.16 s)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings

    if get_current_settings().flows.heartbeat_frequency is None:
        yield
        return
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


@contextlib.contextmanager
def emitting() -> Iterator[None]:
    """Emit the current flow run's heartbeats while the block runs, if :func:`take_over`
    turned Prefect's off for it; the thread ends as soon as the block does."""
    from prefect.context import FlowRunContext

    seconds = _TAKEN_OVER.get()
    ctx = FlowRunContext.get()
    if seconds is None or ctx is None or ctx.flow_run is None:
        yield
        return
    resource, related = _event_template(ctx)
    stop = threading.Event()

    def beat() -> None:
        from prefect.events import emit_event

        while True:
            try:
                emit_event(event="prefect.flow-run.heartbeat", resource=resource, related=related)
            except Exception:  # noqa: BLE001 - as Prefect's: a missed heartbeat never fails the run
                logger.debug("failed to emit a flow run heartbeat", exc_info=True)
            if stop.wait(seconds):
                return

    # the thread sees this context's settings (the flow's API URL), as Prefect's does
    thread = threading.Thread(target=contextvars.copy_context().run, args=(beat,), name="audioprep-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=2)


def _event_template(ctx) -> tuple[dict[str, str], list]:
    """The resource and related resources of Prefect's flow-run heartbeat event
    (``FlowRunEngine._build_heartbeat_event_template``)."""
    from prefect import __version__
    from prefect.events.related import RelatedResource, tags_as_related_resources

    run = ctx.flow_run
    resource = {"prefect.resource.id": f"prefect.flow-run.{run.id}", "prefect.resource.name": run.name or "", "prefect.version": __version__}
    related: list = []
    if run.flow_id:
        related.append(RelatedResource.model_validate(
            {"prefect.resource.id": f"prefect.flow.{run.flow_id}", "prefect.resource.role": "flow", "prefect.resource.name": ctx.flow.name if ctx.flow else ""}
        ))
    if run.deployment_id:
        related.append(RelatedResource.model_validate({"prefect.resource.id": f"prefect.deployment.{run.deployment_id}", "prefect.resource.role": "deployment"}))
    related += tags_as_related_resources(set(run.tags or []))
    return resource, related
