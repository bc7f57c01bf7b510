"""``${ENV_VAR}`` interpolation and secret redaction for catalogs.

Credentials enter through the environment. The store, logs and artifacts only ever see
the catalog as written (placeholders kept) with literal secret-looking values masked.
"""

from __future__ import annotations

import os
import re
from typing import Any

from pipeline.errors import Problem

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_KEY = re.compile(r"(secret|password|passwd|token|credential|key$|^key|_key|session|auth)", re.I)
MASK = "***"


def interpolate_env(raw: Any, *, env: dict[str, str] | None = None, _path: str = "") -> tuple[Any, list[Problem]]:
    """Replace ``${VAR}`` (or ``${VAR:-default}``) in every string of ``raw``.

    Returns the new structure and the problems (unset variables, with their key path).
    """
    env = dict(os.environ) if env is None else env
    problems: list[Problem] = []

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(node)]
        if isinstance(node, str) and "${" in node:

            def sub(m: re.Match[str]) -> str:
                name, default = m.group(1), m.group(2)
                if name in env:
                    return env[name]
                if default is not None:
                    return default
                problems.append(Problem(path, f"environment variable {name} is not set: export it or give a default ${{{name}:-...}}"))
                return ""

            return _VAR.sub(sub, node)
        return node

    return walk(raw, _path), problems


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def redact(raw: Any) -> Any:
    """Mask literal values under secret-looking keys; keep ``${VAR}`` placeholders (they hold no secret)."""
    if isinstance(raw, dict):
        out = {}
        for k, v in raw.items():
            if isinstance(v, (str, int, float)) and is_secret_key(str(k)) and not (isinstance(v, str) and _VAR.fullmatch(v)):
                out[k] = MASK
            else:
                out[k] = redact(v)
        return out
    if isinstance(raw, list):
        return [redact(v) for v in raw]
    return raw


def scrub(text: str, secrets: list[str]) -> str:
    """Remove known secret values from a message before it is shown or stored."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, MASK)
    return text


def secret_values(options: Any) -> list[str]:
    """Every value under a secret-looking key of (resolved) storage options."""
    found: list[str] = []
    if isinstance(options, dict):
        for k, v in options.items():
            if isinstance(v, str) and is_secret_key(str(k)):
                found.append(v)
            else:
                found.extend(secret_values(v))
    elif isinstance(options, list):
        for v in options:
            found.extend(secret_values(v))
    return found
