"""The flows' Dask task runner: Prefect's settings are serialized once per settings object,
and what is sent equals what Prefect itself would send."""

from __future__ import annotations

from prefect.context import SettingsContext, serialize_context
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.dask_runner import KeyedDaskTaskRunner


def test_settings_are_serialized_once_per_settings_object(monkeypatch):
    calls = []
    original = SettingsContext.serialize

    def counting(self, include_secrets=True):
        calls.append(self)
        return original(self, include_secrets=include_secrets)

    monkeypatch.setattr(SettingsContext, "serialize", counting)
    runner = KeyedDaskTaskRunner()
    plain = serialize_context()
    sent = []
    for _ in range(3):
        with runner._memo_settings():
            sent.append(serialize_context())
    assert all(s == plain for s in sent)
    assert len(calls) == 2  # Prefect's own call, then one for all three submits
    # each submit gets its own copy: nothing one task's pickling does reaches the next
    assert sent[0]["settings_context"] is not sent[1]["settings_context"]
    assert type(SettingsContext.get()) is SettingsContext  # the memo is entered per submit only

    with temporary_settings({PREFECT_API_URL: "http://example.invalid:4200/api"}):
        with runner._memo_settings():
            changed = serialize_context()
    assert len(calls) == 3  # new settings: serialized again, not served from the old form
    assert changed["settings_context"]["settings"]["api"]["url"] == "http://example.invalid:4200/api"
    assert plain["settings_context"]["settings"].get("api", {}).get("url") != "http://example.invalid:4200/api"
