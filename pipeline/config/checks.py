"""Checks that need the sources themselves (not just the YAML): run before any work starts."""

from __future__ import annotations

from pipeline.config.catalog import LoadedCatalog
from pipeline.config.interpolate import scrub, secret_values
from pipeline.errors import Problem
from pipeline.io.fs import filesystem, glob_to_regex


def check_sources(loaded: LoadedCatalog) -> list[Problem]:
    """Every source root exists and its pattern matches at least one file."""
    problems: list[Problem] = []
    for i, src in enumerate(loaded.catalog.sources):
        secrets = secret_values(src.storage_options)
        try:
            fs, root = filesystem(src.url, src.storage_options)
            if not fs.exists(root):
                problems.append(Problem(f"sources.{i}.url", f"{src.url} does not exist; check the path or bucket name"))
                continue
            regex = glob_to_regex(src.pattern)
            root_norm = root.rstrip("/")
            if not any(regex.match(p[len(root_norm):].lstrip("/")) for p in fs.find(root)):
                problems.append(Problem(f"sources.{i}.pattern", f"{src.pattern!r} matches no file under {src.url}; check the pattern"))
        except Exception as exc:  # noqa: BLE001 - any backend error becomes a clear message
            problems.append(Problem(f"sources.{i}.url", scrub(f"cannot list {src.url}: {type(exc).__name__}: {exc}", secrets)[:300]))
        if src.manifest:
            try:
                mfs, mpath = filesystem(src.manifest, src.storage_options)
                if not mfs.exists(mpath):
                    problems.append(Problem(f"sources.{i}.manifest", f"{src.manifest} does not exist"))
            except Exception as exc:  # noqa: BLE001
                problems.append(Problem(f"sources.{i}.manifest", scrub(f"cannot read {src.manifest}: {type(exc).__name__}", secrets)))
    return problems
