"""The flows' Dask task runner: prefect-dask's, with two per-task costs of its submit removed.

Profiled in the flow's process (py-spy, 121 partitions of a 10 h run): each submit cost
about 85 ms of CPU, 62 ms of it in serializing Prefect's whole settings model (prefect-dask
sends it with every task run so the worker runs under the flow's settings) and 34 ms more
before keys were given, in Dask hashing the submission. On 2 cores that CPU is taken from
the workers while the first partitions run, and the flow sees no result until every
partition is submitted.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from prefect.context import SettingsContext
from prefect_dask import DaskTaskRunner
from pydantic import PrivateAttr


class MemoSettingsContext(SettingsContext):
    """The same profile and settings, serialized once: a flow run's settings do not change
    while it submits its tasks. Each caller gets its own copy of the cached form."""

    _memo: dict = PrivateAttr(default_factory=dict)

    def serialize(self, include_secrets: bool = True) -> dict[str, Any]:
        if include_secrets not in self._memo:
            self._memo[include_secrets] = super().serialize(include_secrets=include_secrets)
        return copy.deepcopy(self._memo[include_secrets])


class KeyedDaskTaskRunner(DaskTaskRunner):
    """prefect-dask's runner; each task run is submitted under its own key (``name-uuid``,
    ``pure=False``: a task run is never pure, and the key names it in the Dask dashboard)
    with the flow's settings serialized once per settings object."""

    def submit(self, task, parameters, wait_for=None, dependencies=None):
        if not self._started:
            raise RuntimeError("The task runner must be started before submitting work.")
        from prefect_dask.task_runners import PrefectDaskFuture

        with self._memo_settings():
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

    def _memo_settings(self) -> MemoSettingsContext:
        """A context to enter around one submit (contexts are entered once at a time, so each
        submit gets its own), sharing the cache of the current settings object."""
        current = SettingsContext.get()
        memos = self.__dict__.setdefault("_settings_memos", {})
        key = (id(current.settings), id(current.profile))
        if key not in memos:
            memos.clear()  # a new flow run's settings: the old form is never sent again
            memos[key] = (current, {})  # holding the context keeps its ids from being reused
        ctx = MemoSettingsContext(profile=current.profile, settings=current.settings)
        ctx._memo = memos[key][1]
        return ctx
