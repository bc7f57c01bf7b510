"""Checks that need the sources themselves (not just the YAML): run before any work starts.

:func:`inspect_sources` lists every source the way a run does (:func:`pipeline.io.discovery.list_source`)
and returns errors, warnings with counts, and per-source figures; ``audioprep validate``
prints all of it. :func:`check_sources` (what ``audioprep run`` calls) returns the errors and
issues the warnings as :class:`CatalogWarning`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from pipeline.config.catalog import LoadedCatalog
from pipeline.config.interpolate import scrub, secret_values
from pipeline.errors import Problem, SourceError
from pipeline.io.discovery import SourceKeyError, list_source
from pipeline.io.fs import filesystem


class CatalogWarning(UserWarning):
    """The catalog is usable but probably not what was meant (counts in the message)."""


@dataclass
class SourceFigures:
    """What listing one source found."""

    index: int
    name: str
    matched: int = 0
    """Files the pattern matched (the source's examples or bank files)."""
    unmatched_audio: dict[str, int] = field(default_factory=dict)
    """Audio-looking files the pattern left out: extension -> count."""
    skipped_symlinks: int = 0


@dataclass
class SourcesReport:
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    sources: list[SourceFigures] = field(default_factory=list)


def _split_key(message: str, default: str) -> tuple[str, str]:
    head, sep, rest = message.partition(": ")
    if sep and head.startswith("sources.") and " " not in head:
        return head, rest
    return default, message


def _exts(counts: dict[str, int]) -> str:
    return ", ".join(f".{e} ({n})" for e, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def inspect_sources(loaded: LoadedCatalog) -> SourcesReport:
    """List every source as a run would; return errors, warnings and per-source figures."""
    report = SourcesReport()
    for i, src in enumerate(loaded.catalog.sources):
        key = f"sources.{i}"
        figures = SourceFigures(i, src.name)
        report.sources.append(figures)
        secrets = secret_values(src.storage_options)
        try:
            fs, root = filesystem(src.url, src.storage_options)
            if not fs.exists(root):
                report.errors.append(Problem(f"{key}.url", f"{src.url} does not exist; check the path or bucket name"))
                continue
            listing = list_source(src, index=i)
        except SourceKeyError as exc:
            report.errors.append(Problem(exc.key, scrub(exc.detail, secrets)))
            continue
        except SourceError as exc:
            k, msg = _split_key(str(exc), f"{key}.url")
            report.errors.append(Problem(k, scrub(msg, secrets)))
            continue
        except Exception as exc:  # noqa: BLE001 - any backend error becomes a clear message
            report.errors.append(Problem(f"{key}.url", scrub(f"cannot list {src.url}: {type(exc).__name__}: {exc}", secrets)[:300]))
            continue
        n = len(listing)
        figures.matched = n
        figures.unmatched_audio = dict(listing.unmatched_audio)
        figures.skipped_symlinks = listing.skipped_symlinks
        links = f"; {listing.skipped_symlinks} symbolic link(s) skipped (symlinks: {src.symlinks})" if listing.skipped_symlinks else ""
        if n == 0:
            others = f"; audio files it leaves out: {_exts(listing.unmatched_audio)}, widen `pattern` to include them" if listing.unmatched_audio else ""
            report.errors.append(Problem(f"{key}.pattern", f"`{src.pattern}` matches no file under {src.url}; check the pattern{others}{links}"))
            continue
        if listing.unmatched_audio:
            left = sum(listing.unmatched_audio.values())
            report.warnings.append(Problem(
                f"{key}.pattern",
                f"`{src.pattern}` leaves out {left} audio-looking file(s): {_exts(listing.unmatched_audio)}; widen `pattern` to include them",
            ))
        if listing.skipped_symlinks:
            report.warnings.append(Problem(
                f"{key}.symlinks",
                f"{listing.skipped_symlinks} symbolic link(s) skipped (symlinks: {src.symlinks}: broken, loops"
                + (", targets outside the source root" if src.symlinks == "inside_root" else "")
                + (", every link" if src.symlinks == "skip" else "")
                + "); set `symlinks: follow` to include links to files",
            ))
        if src.label.from_ == "regex" and listing.unmatched_label:
            msg = f"`{src.label.pattern}` finds no label in {listing.unmatched_label} of {n} file name(s)"
            if listing.unmatched_label == n:
                example = listing[0].rel_path
                report.errors.append(Problem(
                    f"{key}.label.pattern", f"{msg}: every label would be empty; fix the pattern (searched in paths like `{example}`)",
                ))
            else:
                report.warnings.append(Problem(f"{key}.label.pattern", f"{msg}: those get the empty label; fix the pattern or their names"))
        if src.group.from_ == "regex" and listing.unmatched_group:
            report.warnings.append(Problem(
                f"{key}.group.pattern",
                f"`{src.group.pattern}` finds no group in {listing.unmatched_group} of {n} file name(s) (e.g. searched in `{listing[0].rel_path}`): "
                "each of those becomes its own group, so one speaker's files can land in different splits; fix the pattern",
            ))
        if src.manifest and listing.missing_from_manifest:
            report.warnings.append(Problem(
                f"{key}.manifest",
                f"{listing.missing_from_manifest} of {n} file(s) have no row in {src.manifest}: they get no manifest label, group or split",
            ))
        if src.manifest and listing.manifest_rows_without_file:
            report.warnings.append(Problem(
                f"{key}.manifest",
                f"{listing.manifest_rows_without_file} row(s) of {src.manifest} name no file matched under {src.url}",
            ))
    return report


def check_sources(loaded: LoadedCatalog) -> list[Problem]:
    """Every source root exists, its pattern matches files, its manifest and regexes are sound.

    Returns the errors; issues each warning (counts of files left out, unmatched regexes,
    files missing from a manifest, skipped links) as a :class:`CatalogWarning`.
    """
    report = inspect_sources(loaded)
    for w in report.warnings:
        warnings.warn(f"{loaded.path}: {w}", CatalogWarning, stacklevel=2)
    return report.errors
