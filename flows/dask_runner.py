"""The flows' Dask task runner: prefect-dask's, with three per-task costs of a submit removed.

Profiled in the flow's process (py-spy, 121 partitions of a 10 h run): each submit cost
about 85 ms of CPU, 62 ms of it in serializing Prefect's whole settings model (prefect-dask
sends it with every task run so the worker runs under the flow's settings) and 34 ms more
before keys were given, in Dask hashing the submission. On 2 cores that CPU is taken from
the workers while the first partitions run, and the flow sees no result until every
partition is submitted. On the worker, each task run then spent 26-30 ms validating that
serialized form back into a settings model before it started.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from prefect.context import SettingsContext
from prefect_dask import DaskTaskRunner


class ObjectSettingsContext(SettingsContext):
    """The same profile and settings, sent as the objects themselves (pydantic models pickle).

    ``serialize()`` normally dumps the whole settings model to a dict on every submit, and
    the worker's ``SettingsContext(**...)`` validates that dict back into a model on every
    task run. The objects pickle in about 1 ms, and a ``SettingsContext`` built from them
    needs no validation; the worker gets equal settings (secrets included, as Prefect sends
    them to its own task runs). ``include_secrets=False`` keeps Prefect's dict form.
    """

    def serialize(self, include_secrets: bool = True) -> dict[str, Any]:
        if not include_secrets:
            return super().serialize(include_secrets=False)
        return {"profile": self.profile, "settings": self.settings}


class KeyedDaskTaskRunner(DaskTaskRunner):
    """prefect-dask's runner; each task run is submitted under its own key (``name-uuid``,
    ``pure=False``: a task run is never pure, and the key names it in the Dask dashboard)
    with the flow's settings sent as objects (:class:`ObjectSettingsContext`)."""

    def submit(self, task, parameters, wait_for=None, dependencies=None):
        if not self._started:
            raise RuntimeError("The task runner must be started before submitting work.")
        from prefect_dask.task_runners import PrefectDaskFuture

        key = f"{task.name}-{uuid.uuid4().hex}"
        parameters = self._optimize_futures(parameters)
        wait_for = self._optimize_futures(wait_for) if wait_for else None
        with self._settings_as_objects():
            if task.isasync:
                future = self.client.submit(
                    task, key=key, pure=False, parameters=parameters, wait_for=wait_for, dependencies=dependencies, return_type="state"
                )
            else:
                future = self._submit_sync(task, key, parameters, wait_for, dependencies)
        return PrefectDaskFuture(wrapped_future=future, task_run_id=future.task_run_id)

    def _submit_sync(self, task, key, parameters, wait_for, passed_dependencies):
        """What ``PrefectDaskClient.submit`` does for a sync task (prefect-dask 0.3.7), with
        :func:`run_task_sync_reusing_client` as the function the worker runs."""
        import distributed
        from prefect.context import serialize_context
        from prefect.utilities.engine import collect_task_run_inputs_sync

        task_run_id = uuid.uuid4()
        deps = {k: collect_task_run_inputs_sync(v, future_cls=distributed.Future) for k, v in parameters.items()}
        if passed_dependencies:
            deps = {k: v.union(passed_dependencies.get(k, set())) for k, v in deps.items()}
        context = serialize_context(
            asset_ctx_kwargs={"task": task, "task_run_id": task_run_id, "task_inputs": deps, "copy_to_child_ctx": True}
        )
        future = distributed.Client.submit(
            self.client, run_task_sync_reusing_client, key=key, pure=False,
            task=task, task_run_id=task_run_id, wait_for=wait_for, return_type="state", parameters=parameters,
            dependencies=deps, context=context,
        )
        future.task_run_id = task_run_id
        return future

    @staticmethod
    def _settings_as_objects() -> ObjectSettingsContext:
        """A context to enter around one submit (contexts are entered once at a time, so each
        submit gets its own) with the current profile and settings."""
        current = SettingsContext.get()
        return ObjectSettingsContext(profile=current.profile, settings=current.settings)


_THREAD = threading.local()


def run_task_sync_reusing_client(**kwargs: Any) -> Any:
    """``prefect.task_engine.run_task_sync`` on a worker, with one Prefect API client per worker
    thread and settings instead of two new ones per task run.

    Each task run otherwise built two clients (one when its context is hydrated, one for the
    engine), each with a fresh SSL context loaded from certifi's bundle: about 8% of a
    worker's task thread in steady state (py-spy), plus a connection to the API per client.
    Prefect takes a client from the current ``SyncClientContext`` when there is one, so the
    thread's context is made current for the duration of the task run.
    """
    from prefect.context import SyncClientContext
    from prefect.task_engine import run_task_sync

    ctx = _thread_client((kwargs.get("context") or {}).get("settings_context"))
    if ctx is None:
        return run_task_sync(**kwargs)
    token = SyncClientContext.__var__.set(ctx)
    try:
        return run_task_sync(**kwargs)
    finally:
        SyncClientContext.__var__.reset(token)


def _thread_client(settings_context: dict[str, Any] | None):
    """This thread's open client context for these settings (a new one when they change)."""
    from prefect.context import SyncClientContext
    from prefect.settings import Settings

    settings = (settings_context or {}).get("settings")
    if not isinstance(settings, Settings):
        return None  # not sent by ObjectSettingsContext: Prefect's own path
    cached = getattr(_THREAD, "client", None)
    if cached is not None:
        if cached[0] == settings:
            return cached[1]
        cached[1].client.__exit__(None, None, None)  # another API or other client settings
    with SettingsContext(**settings_context):
        ctx = SyncClientContext()
        ctx._context_stack = 1  # open for the thread's life: Prefect's own enters nest inside
        ctx.client.__enter__()
        if settings.client.server_version_check_enabled:  # as SyncClientContext does, once per client
            ctx.client.raise_for_api_version_mismatch_once()
    _THREAD.client = (settings, ctx)
    return ctx
