"""Concurrent fetching of many small files: one batched request round instead of one open per file.

Object stores charge latency per GET, so a partition asks for all its files at once;
async filesystems (s3fs, gcsfs, http) run those requests concurrently.

Optional local cache (``cache: simplecache | filecache`` on a source): whole files are kept
under ``cache_dir`` (or a temporary folder of this process), named by a hash of the URL
**and the object's content key** (size plus ETag or mtime, as listed by discovery). A file
overwritten in the bucket therefore gets a new cache entry instead of its stale bytes.
fsspec's own ``simplecache::``/``filecache::`` layers are not used here: they key entries
by path only (an overwritten object keeps being served from the old copy unless every
read pays a HEAD with ``check_files``), their ``cat`` expands glob characters, so a file
named ``take [1].wav`` is not found, and an interrupted download can leave a truncated
file that later reads as a hit.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

from fsspec.core import strip_protocol

from pipeline.io.fs import content_key, filesystem, is_remote, protocol_of

CACHE_MODES = ("none", "simplecache", "filecache")


def fetch_many(
    urls: list[str],
    storage_options: dict[str, Any],
    *,
    concurrency: int = 16,
    cache: str = "none",
    cache_dir: str | None = None,
    content_keys: Mapping[str, str] | None = None,
) -> dict[str, bytes | BaseException]:
    """Read whole files; a failure is returned in place of the bytes, never raised.

    Parameters
    ----------
    urls : full URLs (or local paths) of one source.
    storage_options : that source's fsspec options.
    concurrency : number of requests in flight at once on async filesystems.
    cache : ``none``, ``simplecache`` or ``filecache`` (remote sources only).
    cache_dir : folder of the local copies; default a temporary folder of this process.
    content_keys : url -> content key (``FileRef.content_key``). With a cache, entries are
        named by it; when not given, the keys are read with one concurrent round of
        metadata requests (HEAD on S3) before the cache is consulted.
    """
    if not urls:
        return {}
    if cache not in CACHE_MODES:
        raise ValueError(f"cache must be one of {CACHE_MODES}, got {cache!r}")
    if not is_remote(urls[0]):
        return {u: _read_local(u) for u in urls}
    fs, _ = filesystem(urls[0], storage_options)
    paths = [strip_protocol(u) for u in urls]
    if cache == "none":
        return dict(zip(urls, _cat_all(fs, paths, concurrency)))
    return _fetch_cached(fs, urls, paths, concurrency, cache_dir, content_keys)


def fetch_sequential(urls: list[str], storage_options: dict[str, Any]) -> dict[str, bytes | BaseException]:
    """One blocking open per file: the baseline :func:`fetch_many` is measured against."""
    out: dict[str, bytes | BaseException] = {}
    if not urls:
        return out
    fs, _ = filesystem(urls[0], storage_options)
    for u in urls:
        try:
            with fs.open(strip_protocol(u), "rb") as f:
                out[u] = f.read()
        except Exception as exc:  # noqa: BLE001
            out[u] = exc
    return out


def _read_local(url: str) -> bytes | BaseException:
    path = url[len("file://") :] if url.startswith("file://") else url
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        return exc


def _cat_all(fs, paths: list[str], concurrency: int) -> list[bytes | BaseException]:
    """Whole contents of ``paths``, in order; errors in place.

    ``cat_ranges`` with open ranges reads each path literally (``cat`` would expand
    ``[``, ``*``, ``?`` in names as globs) and, on an async filesystem (s3fs, gcsfs, http),
    runs ``concurrency`` requests at a time.
    """
    if not paths:
        return []
    try:
        if getattr(fs, "async_impl", False):
            n = len(paths)
            got = fs.cat_ranges(list(paths), [None] * n, [None] * n, batch_size=concurrency, on_error="return", **_one_get(fs))
            return [g if isinstance(g, (bytes, BaseException)) else bytes(g) for g in got]
    except Exception as exc:  # noqa: BLE001 - a whole-batch failure becomes per-file errors
        return [exc] * len(paths)
    out: list[bytes | BaseException] = []
    for p in paths:
        try:
            out.append(fs.cat_file(p))
        except Exception as exc:  # noqa: BLE001
            out.append(exc)
    return out


def _one_get(fs) -> dict[str, Any]:
    """Keyword that makes s3fs read a whole object with one GET.

    s3fs's ``cat_file`` without a range first asks for the size (a HEAD) so it can split
    big objects into concurrent chunks (its documented ``max_concurrency``): two round
    trips per small file. Files of one partition are already fetched concurrently, so ask
    for one plain GET each.
    """
    try:
        params = inspect.signature(fs.cat_file).parameters
    except (TypeError, ValueError):
        return {}
    return {"max_concurrency": 1} if "max_concurrency" in params else {}


def _current_keys(fs, paths: list[str], concurrency: int) -> list[str | BaseException]:
    """Content keys from fresh metadata (never from a cached listing); on an async
    filesystem ``concurrency`` requests (HEAD on S3) at a time, from threads of this call."""
    try:
        kw = {"refresh": True} if "refresh" in inspect.signature(fs.info).parameters else {}
    except (TypeError, ValueError):
        kw = {}

    def one(p: str) -> str | BaseException:
        try:
            return content_key(fs.info(p, **kw))
        except Exception as exc:  # noqa: BLE001
            return exc

    workers = min(concurrency, len(paths)) if getattr(fs, "async_impl", False) else 1
    if workers <= 1:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="audioprep-fetch-info") as pool:
        return list(pool.map(one, paths))


@lru_cache(maxsize=1)
def _process_cache_dir() -> str:
    d = tempfile.mkdtemp(prefix="audioprep-fetch-")
    import atexit
    import shutil

    atexit.register(shutil.rmtree, d, True)
    return d


def cache_file_name(url: str, key: str) -> str:
    """Name of the local copy of ``url`` at content ``key``."""
    return hashlib.sha256(f"{url}\x00{key}".encode()).hexdigest()[:40]


def _fetch_cached(fs, urls, paths, concurrency, cache_dir, content_keys) -> dict[str, bytes | BaseException]:
    root = cache_dir or _process_cache_dir()
    os.makedirs(root, exist_ok=True)
    proto = protocol_of(urls[0])
    keys: list[str | BaseException]
    if content_keys is not None and all(u in content_keys for u in urls):
        keys = [content_keys[u] for u in urls]
    else:
        keys = _current_keys(fs, paths, concurrency)
    out: dict[str, bytes | BaseException] = {}
    todo: list[tuple[str, str, str]] = []  # url, path, local file
    for u, p, k in zip(urls, paths, keys):
        if isinstance(k, BaseException):
            out[u] = k
            continue
        local = os.path.join(root, cache_file_name(f"{proto}://{p}", k))
        try:
            with open(local, "rb") as f:
                out[u] = f.read()
        except OSError:
            todo.append((u, p, local))
    got = _cat_all(fs, [p for _, p, _ in todo], concurrency)
    for (u, _, local), data in zip(todo, got):
        out[u] = data
        if isinstance(data, bytes):
            tmp = f"{local}.tmp-{os.getpid()}-{id(data)}"
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, local)  # whole file or nothing: a crash never leaves a short copy
            except OSError:  # a full or read-only cache disk only costs the cache
                try:
                    os.remove(tmp)
                except OSError:
                    pass
    return {u: out[u] for u in urls}
