"""Progress callbacks the CLI installs. Kept in their own module: the flow reaches them as
``hooks.emit(...)`` so that pickling the flow for Dask never captures the callbacks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_HOOKS: dict[str, Callable[..., None] | None] = {"plan": None, "ready": None, "partition": None}


def install(**hooks: Callable[..., None] | None) -> None:
    _HOOKS.update(hooks)


def clear() -> None:
    for k in _HOOKS:
        _HOOKS[k] = None


def emit(event: str, payload: Any) -> None:
    fn = _HOOKS.get(event)
    if fn is not None:
        fn(payload)
