"""fsspec helpers: one way to turn a URL plus options into a filesystem and a root."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import fsspec
from fsspec.core import strip_protocol, url_to_fs


def _freeze(options: dict[str, Any]) -> str:
    import json

    return json.dumps(options, sort_keys=True, default=str)


@lru_cache(maxsize=32)
def _fs_cached(protocol_url: str, frozen: str):
    import json

    return url_to_fs(protocol_url, **json.loads(frozen))


def filesystem(url: str, storage_options: dict[str, Any] | None = None, *, cache: str = "none", cache_dir: str | None = None):
    """Return ``(fs, root_path)`` for ``url``. Instances are cached per process (per worker).

    ``cache`` wraps remote filesystems in fsspec's ``simplecache``/``filecache``. Those key
    local copies by path only (an overwritten object is served stale); audio fetching uses
    :func:`pipeline.io.fetch.fetch_many`, whose cache is keyed by content, instead.
    """
    options = dict(storage_options or {})
    if cache != "none" and "://" in url and not url.startswith("file://"):
        proto = url.split("://", 1)[0]
        chained = f"{cache}::{url}"
        opts = {proto: options, cache: {"cache_storage": cache_dir} if cache_dir else {}}
        return url_to_fs(chained, **opts)
    return _fs_cached(url, _freeze(options))


def content_key(info: dict[str, Any]) -> str:
    """``size:tag`` from an fsspec ``info``/listing entry; tag is the ETag (object stores) or mtime."""
    size = info.get("size", 0)
    tag = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or info.get("last_modified") or ""
    if hasattr(tag, "isoformat"):
        tag = tag.isoformat()
    return f"{size}:{str(tag).strip(chr(34))}"


def forget_listings(fs, root: str) -> None:
    """Drop cached directory listings of ``root``, its parents and everything below it.

    Filesystem instances are cached per process, and s3fs keeps listings: its ``find`` only
    adds directories it has not seen, and ``open`` takes size and ETag from those listings.
    Without this, a second run in the same process (an incremental run, a long-lived worker)
    misses new files' details and opens overwritten files with their old ETag (``FileExpired``).
    ``invalidate_cache(path)`` alone clears the path and its parents, not its children.
    """
    fs.invalidate_cache(root)
    cache = getattr(fs, "dircache", None)
    if cache is None:
        return
    prefix = strip_protocol(fs.unstrip_protocol(root)).rstrip("/") + "/"
    for key in [k for k in list(cache) if k.startswith(prefix)]:
        cache.pop(key, None)


def join(root: str, rel: str) -> str:
    return root.rstrip("/") + "/" + rel.lstrip("/")


def protocol_of(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "file"


def local_path(url: str) -> str:
    """The path of a local URL (``file://...`` or a path), as fsspec's local filesystem gives it."""
    return strip_protocol(url)


def is_remote(url: str) -> bool:
    return protocol_of(url) not in ("file", "local")


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a glob with ``**``, ``*``, ``?``, ``[...]`` and ``{a,b}`` to a regex over relative paths."""
    i, out = 0, []
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "{":
            j = pattern.find("}", i)
            if j < 0:
                out.append(re.escape(c))
                i += 1
                continue
            alts = pattern[i + 1 : j].split(",")
            out.append("(?:" + "|".join(re.escape(a) for a in alts) + ")")
            i = j + 1
        elif c == "[":
            j = pattern.find("]", i)
            if j < 0:
                out.append(re.escape(c))
                i += 1
                continue
            out.append(pattern[i : j + 1])
            i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    # DOTALL: a newline is a legal character of a file or folder name; \Z: "$" would also match before a final newline
    return re.compile("^" + "".join(out) + r"\Z", re.IGNORECASE | re.DOTALL)


def open_fs_for(url: str, storage_options: dict[str, Any] | None = None):
    """A fresh (uncached) filesystem, for code that must not share one across forks."""
    return fsspec.core.url_to_fs(url, **(storage_options or {}))
