"""The flows' Dask task runner: Prefect's settings travel as objects, and what a worker builds
from them equals what it would build from Prefect's own serialized form."""

from __future__ import annotations

import pickle

import cloudpickle
from prefect.context import SettingsContext, serialize_context
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

from flows.dask_runner import KeyedDaskTaskRunner


def _hydrated_on_a_worker(serialized: dict) -> SettingsContext:
    """The settings a worker's task run enters: the pickled context loaded, then what
    ``prefect.context.hydrated_context`` does with its ``settings_context``."""
    loaded = pickle.loads(cloudpickle.dumps(serialized))
    return SettingsContext(**loaded["settings_context"])


def test_settings_are_sent_as_objects_and_hydrate_to_prefects_own(monkeypatch):
    calls = []
    original = SettingsContext.serialize

    def counting(self, include_secrets=True):
        calls.append(self)
        return original(self, include_secrets=include_secrets)

    monkeypatch.setattr(SettingsContext, "serialize", counting)
    runner = KeyedDaskTaskRunner()
    plain = serialize_context()
    with runner._settings_as_objects():
        sent = serialize_context()
    assert len(calls) == 1  # Prefect's own call only: nothing is dumped for the submit
    assert sent["settings_context"]["settings"] is get_current_settings()
    ours, prefects = _hydrated_on_a_worker(sent), _hydrated_on_a_worker(plain)
    assert ours.settings == prefects.settings and ours.profile == prefects.profile
    assert {k: v for k, v in sent.items() if k != "settings_context"} == {k: v for k, v in plain.items() if k != "settings_context"}
    assert type(SettingsContext.get()) is SettingsContext  # entered per submit only

    with temporary_settings({PREFECT_API_URL: "http://example.invalid:4200/api"}):
        with runner._settings_as_objects():
            changed = serialize_context()
    assert _hydrated_on_a_worker(changed).settings.api.url == "http://example.invalid:4200/api"
    assert ours.settings.api.url != "http://example.invalid:4200/api"


def test_task_and_subflow_functions_pickle_by_reference():
    """Plain pickle refuses a function whose module name holds something else (the Task):
    cloudpickle would then send it, and everything it references, by value on every submit."""
    import pickle

    from flows import prepare

    tasks = [prepare.discover_task, prepare.probe_task, prepare.plan_task, prepare.prepare_store_task,
             prepare.partition_task, prepare.report_task, prepare.commit_task, prepare.run_on_dask]
    for t in tasks:
        assert pickle.loads(pickle.dumps(t.fn)) is t.fn, t.name
