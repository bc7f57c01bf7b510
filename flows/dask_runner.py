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

        with self._settings_as_objects():
            future = self.client.submit(
                task,
                key=f"{task.name}-{uuid.uuid4().hex}",
                pure=False,
                parameters=self._optimize_futures(parameters),
                wait_for=self._optimize_futures(wait_for) if wait_for else None,
                dependencies=dependencies,
                return_type="state",
            )
        return PrefectDaskFuture(wrapped_future=future, task_run_id=future.task_run_id)

    @staticmethod
    def _settings_as_objects() -> ObjectSettingsContext:
        """A context to enter around one submit (contexts are entered once at a time, so each
        submit gets its own) with the current profile and settings."""
        current = SettingsContext.get()
        return ObjectSettingsContext(profile=current.profile, settings=current.settings)
