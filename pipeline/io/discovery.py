"""Discovery: list each source through fsspec and describe every file by a small record.

Listing runs on the driver (one ``find`` per source, no file is opened); header probing
(:func:`probe_headers`) runs in batches on the workers.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import posixpath
import stat
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import regex

from pipeline.config.catalog import AUDIO_EXTENSIONS, SPLIT_NAMES, Source
from pipeline.errors import SourceError
from pipeline.io.audio import describe_open_error
from pipeline.io.av_reader import open_audio
from pipeline.io.fs import content_key, filesystem, forget_listings, glob_to_regex, is_remote, join, local_path
from pipeline.io.transcripts import normalize_text, parse_tags, text_files_needed, transcripts

PROBE_BLOCK_BYTES = 1 << 16
"""Read size for header probing of remote files."""


@dataclass(frozen=True, slots=True)
class FileRef:
    """One discovered audio file; small enough to hold 100,000s on the driver."""

    example_id: str
    source: str
    rel_path: str
    url: str
    size_bytes: int
    content_key: str
    """Size plus ETag or mtime: a change here means the file must be recomputed."""
    label: str = ""
    group: str = ""
    split: str = ""
    """A split forced by the manifest, or empty."""
    text: str = ""
    """The transcript, normalized as ``sources[].text.normalize`` says ("" without one)."""
    tags: str = ""
    """Multi-label tags as a JSON list ("" without ``sources[].tags``)."""
    text_missing: str = ""
    """Why a required transcript is missing (the file becomes a ``MissingTranscript`` reject)."""


@dataclass(frozen=True, slots=True)
class Header:
    """What the audio header says, read without decoding samples."""

    example_id: str
    frames: int
    sample_rate: int
    channels: int
    format: str
    subtype: str
    error: str = ""
    """Non-empty when the header could not be read; the file is then rejected at stage ``probe``."""
    error_class: str = ""

    @property
    def duration_seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


REGEX_TIMEOUT_SECONDS = 1.0
"""Longest a label/group regex may search one path: a catastrophic pattern fails the run instead of hanging it."""


class SourceKeyError(SourceError):
    """A source problem tied to one catalog key (``key``: e.g. ``sources.0.group.pattern``)."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.detail = message
        super().__init__(f"{key}: {message}")


class SourceListing(list):
    """What :func:`list_source` returns: the matched files (a list of :class:`FileRef`) plus counts."""

    skipped_symlinks: int = 0
    """Symbolic links not followed (``symlinks: skip``, target outside the root with ``inside_root``,
    broken links, loops)."""
    unmatched_audio: dict[str, int]
    """Audio-looking files (by extension) that the source's ``pattern`` does not match: extension -> count."""
    unmatched_label: int = 0
    """Files whose label regex found nothing (label "")."""
    unmatched_group: int = 0
    """Files whose group regex found nothing (each becomes its own group)."""
    missing_from_manifest: int = 0
    """Files with no manifest row (no manifest label, group or split)."""
    manifest_rows_without_file: int = 0
    """Manifest rows naming no listed file."""
    missing_text: int = 0
    """Files without a transcript where ``sources[].text`` asks for one."""

    def __init__(self, refs: Iterable[FileRef] = ()):
        super().__init__(refs)
        self.unmatched_audio = {}


def example_id(source_name: str, rel_path: str) -> str:
    """Stable id: hash of the source name and the path relative to the source root.

    Paths are str as Python decodes file names (``os.fsdecode``): bytes that are not UTF-8
    are surrogate escapes, encoded back to those same bytes here (``surrogateescape``), so any
    name the filesystem allows has an id, and UTF-8 names keep the ids they always had.
    """
    return hashlib.blake2b(f"{source_name}\x00{rel_path}".encode("utf-8", "surrogateescape"), digest_size=10).hexdigest()


def _key(source: Source, index: int | None) -> str:
    return f"sources.{index}" if index is not None else f"sources[{source.name}]"


def _is_local_fs(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _follow_link(path: str, rel: str, mode: str, real_root: str, seen: set[str]) -> tuple[list[tuple[str, str, dict[str, Any]]], int]:
    """Files reached through the local symbolic link ``path`` (relative path ``rel``), and how many links were skipped."""
    if mode == "skip":
        return [], 1
    try:
        st = os.stat(path)  # follows the link
    except OSError:
        return [], 1  # broken link or loop
    real = os.path.realpath(path)
    if mode == "inside_root" and not _inside(real, real_root):
        return [], 1
    if stat.S_ISREG(st.st_mode):
        return [(path, rel, {"size": st.st_size, "mtime": st.st_mtime, "type": "file"})], 0
    if not stat.S_ISDIR(st.st_mode) or real in seen:
        return [], 1
    seen = seen | {real}
    out: list[tuple[str, str, dict[str, Any]]] = []
    skipped = 0
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        child, child_rel = posixpath.join(path, entry.name), f"{rel}/{entry.name}"
        if entry.is_symlink():
            found, n = _follow_link(child, child_rel, mode, real_root, seen)
        elif entry.is_dir(follow_symlinks=False):
            found, n = _follow_link(child, child_rel, mode, real_root, seen)  # a plain folder below a followed link
        elif entry.is_file(follow_symlinks=False):
            cst = entry.stat(follow_symlinks=False)
            found, n = [(child, child_rel, {"size": cst.st_size, "mtime": cst.st_mtime, "type": "file"})], 0
        else:
            found, n = [], 0
        out.extend(found)
        skipped += n
    return out, skipped


def list_source(source: Source, *, index: int | None = None) -> SourceListing:
    """List the files of one source that match its pattern, sorted by relative path.

    ``index`` (the source's position under ``sources``) makes error keys ``sources.<index>...``.
    Local symbolic links are handled as ``source.symlinks`` says; the returned
    :class:`SourceListing` counts what was skipped (``skipped_symlinks``) and what the
    pattern, regexes and manifest left out.

    Raises
    ------
    SourceError
        When the root does not exist, the manifest is invalid, or a regex takes too long.
    """
    key = _key(source, index)
    fs, root = filesystem(source.url, source.storage_options)
    try:
        forget_listings(fs, root)  # list what is there now, not what a previous run saw
        exists = fs.exists(root)
    except Exception as exc:  # noqa: BLE001 - any backend failure becomes a clear message
        raise SourceError(f"{key}.url: cannot reach {source.url}: {type(exc).__name__}") from None
    if not exists:
        raise SourceError(f"{key}.url: {source.url} does not exist; check the path or bucket name")
    pattern = glob_to_regex(source.pattern)
    found = fs.find(root, detail=True)
    root_norm = root.rstrip("/")
    local = _is_local_fs(fs)
    real_root = os.path.realpath(root_norm) if local else ""
    listing = SourceListing()
    entries: list[tuple[str, str, dict[str, Any]]] = []
    for path, info in found.items():
        rel = path[len(root_norm) :].lstrip("/") if path.startswith(root_norm) else posixpath.basename(path)
        kind = info.get("type", "file")
        if kind == "file":
            entries.append((path, rel, info))
        elif local and (info.get("islink") or os.path.islink(path)):
            reached, skipped = _follow_link(path, rel, source.symlinks, real_root, {real_root})
            entries.extend(reached)
            listing.skipped_symlinks += skipped
    refs: list[FileRef] = []
    for _path, rel, info in entries:
        if not pattern.match(rel):
            ext = posixpath.splitext(rel)[1].lower().lstrip(".")
            if ext in AUDIO_EXTENSIONS:
                listing.unmatched_audio[ext] = listing.unmatched_audio.get(ext, 0) + 1
            continue
        refs.append(
            FileRef(
                example_id=example_id(source.name, rel),
                source=source.name,
                rel_path=rel,
                url=join(source.url, rel) if "://" in source.url else join(root_norm, rel),
                size_bytes=int(info.get("size", 0) or 0),
                content_key=content_key(info),
            )
        )
    refs.sort(key=lambda r: r.rel_path)
    manifest = read_manifest(source, index=index) if source.manifest else {}
    label_rx = regex.compile(source.label.pattern) if source.label.from_ == "regex" and source.label.pattern else None
    group_rx = regex.compile(source.group.pattern) if source.group.from_ == "regex" and source.group.pattern else None
    texts = _read_transcripts(source, fs, root_norm, [r.rel_path for r in refs], [rel for _, rel, _ in entries], key) if source.text else {}
    for r in refs:
        ref, misses = _label_and_group(r, source, manifest, label_rx, group_rx, key)
        ref = _text_and_tags(ref, source, manifest, texts, key)
        listing.missing_text += bool(ref.text_missing)
        listing.append(ref)
        listing.unmatched_label += "label" in misses
        listing.unmatched_group += "group" in misses
        listing.missing_from_manifest += "manifest" in misses
    if manifest:
        listed = {posixpath.normpath(r.rel_path) for r in refs}
        listing.manifest_rows_without_file = sum(1 for p in manifest if p not in listed)
    return listing


def _read_transcripts(source: Source, fs, root: str, audio_rels: list[str], listed: list[str], key: str) -> dict[str, str]:
    """Raw transcript of each audio file from sidecar or per-folder transcript files."""
    rule = source.text
    if rule is None or rule.from_ == "manifest":
        return {}
    need = text_files_needed(rule, audio_rels, listed)
    paths = {rel: join(root, rel) for rel in need}
    try:
        got = fs.cat(list(paths.values())) if paths else {}
    except Exception as exc:  # noqa: BLE001 - any backend failure becomes a clear message
        raise SourceError(f"{key}.text: cannot read the transcript files of {source.url}: {type(exc).__name__}: {exc}"[:400]) from None
    if isinstance(got, bytes):  # fsspec returns the bytes themselves for a single path
        got = {next(iter(paths.values())): got}
    texts = {rel: got.get(p) for rel, p in paths.items()}
    missing = [rel for rel, v in texts.items() if v is None]
    if missing:
        raise SourceError(f"{key}.text: could not read {', '.join(missing[:5])}")
    return transcripts(rule, audio_rels, texts, need, f"{key}.text")


def _text_and_tags(ref: FileRef, source: Source, manifest: dict[str, dict[str, str]], texts: dict[str, str], key: str) -> FileRef:
    row = manifest.get(posixpath.normpath(ref.rel_path)) or {}
    text, missing, tags = "", "", ""
    rule = source.text
    if rule is not None:
        raw = row.get(rule.column) if rule.from_ == "manifest" else texts.get(ref.rel_path)
        if raw is not None and raw.strip():
            text = normalize_text(raw, rule.normalize)
        elif rule.required:
            where = {
                "manifest": f"an empty or absent `{rule.column}` in the manifest",
                "sidecar": f"no {posixpath.splitext(ref.rel_path)[0]}{rule.suffix} beside it",
                "transcript_file": f"no line for {posixpath.splitext(posixpath.basename(ref.rel_path))[0]!r} in a {rule.pattern} file of its folder",
            }[rule.from_]
            missing = f"no transcript ({where}); add one, or set {key}.text.required: false"
    if source.tags is not None:
        try:
            found = parse_tags(row.get(source.tags.column, ""), source.tags.separator)
        except ValueError as exc:
            raise SourceError(f"{key}.tags: manifest row of {ref.rel_path}: {exc}") from None
        tags = json.dumps(found, ensure_ascii=False)
    return replace(ref, text=text, tags=tags, text_missing=missing)


def read_manifest(source: Source, *, index: int | None = None) -> dict[str, dict[str, str]]:
    """Read a CSV or JSONL manifest: ``path`` (relative to the source root) -> columns.

    Refused, each with every offending row listed: paths that escape the source root
    (``../``, absolute), the same path on two rows, ``split`` values that are not a split name.
    """
    assert source.manifest is not None
    key = f"{_key(source, index)}.manifest"
    fs, path = filesystem(source.manifest, source.storage_options)
    try:
        text = fs.cat_file(path).decode("utf-8")
    except FileNotFoundError:
        raise SourceError(f"{key}: {source.manifest} does not exist") from None
    except UnicodeDecodeError:
        raise SourceError(f"{key}: {source.manifest} is not UTF-8 text; save it as UTF-8") from None
    rows: list[dict[str, Any]] = []
    if path.endswith((".jsonl", ".ndjson", ".json")):
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SourceError(f"{key}: {source.manifest} line {n} is not JSON ({exc.msg}); one JSON object per line") from None
            if not isinstance(row, dict):
                raise SourceError(f"{key}: {source.manifest} line {n} is not a JSON object; one object per line with a `path`")
            rows.append(row)
    else:
        rows = list(csv.DictReader(io.StringIO(text)))
    out: dict[str, dict[str, str]] = {}
    first_row: dict[str, int] = {}
    escaping: list[str] = []
    duplicates: list[str] = []
    bad_splits: list[str] = []
    for i, row in enumerate(rows, start=1):
        rel = str(row.get("path", "") or "").strip()
        norm = posixpath.normpath(rel)
        if not rel or rel.startswith("/") or norm == ".." or norm.startswith("../") or "://" in rel:
            escaping.append(f"row {i} {rel!r}")
            continue
        if norm in first_row:
            duplicates.append(f"rows {first_row[norm]} and {i} ({norm!r})")
            continue
        first_row[norm] = i
        cols = {k: "" if v is None else str(v) for k, v in row.items() if k != "path"}
        split = cols.get("split", "").strip()
        if split and split not in SPLIT_NAMES:
            bad_splits.append(f"row {i} {split!r}")
        cols["split"] = split
        out[norm] = cols
    problems = []
    if escaping:
        problems.append(
            f"path must be relative to the source root and stay inside it (no '..', no absolute paths): {_some(escaping)}"
        )
    if duplicates:
        problems.append(f"{len(duplicates)} path(s) on more than one row: {_some(duplicates)}; keep one row per file")
    if bad_splits:
        names = ", ".join(SPLIT_NAMES)
        problems.append(f"{len(bad_splits)} split value(s) that are not one of {names}: {_some(bad_splits)}; use one of those, or leave split empty")
    if problems:
        raise SourceError(f"{key}: {source.manifest}: " + "; ".join(problems))
    return out


def _some(items: list[str], n: int = 10) -> str:
    return ", ".join(items[:n]) + (f" (and {len(items) - n} more)" if len(items) > n else "")


def _search(rx, rel: str, name: str, key: str):
    try:
        m = rx.search(rel, timeout=REGEX_TIMEOUT_SECONDS)
    except TimeoutError:
        raise SourceKeyError(
            f"{key}.{name}.pattern",
            f"the regex `{rx.pattern}` took more than {REGEX_TIMEOUT_SECONDS:g} s on the file name {rel!r} "
            "(catastrophic backtracking, as in nested repeats like (a+)+); simplify it",
        ) from None
    return m.group(name) if m and m.group(name) is not None else None


def _label_and_group(ref: FileRef, source: Source, manifest: dict[str, dict[str, str]], label_rx, group_rx, key: str) -> tuple[FileRef, set[str]]:
    row = manifest.get(posixpath.normpath(ref.rel_path))
    misses: set[str] = set()
    if source.manifest and row is None:
        misses.add("manifest")
    row = row or {}

    def derive(rule, name: str, rx) -> str:
        if rule.from_ == "parent_dir":
            parent = posixpath.dirname(ref.rel_path)
            return posixpath.basename(parent) if parent else ""
        if rule.from_ == "regex":
            value = _search(rx, ref.rel_path, name, key)
            if value is None:
                misses.add(name)
            return value or ""
        if rule.from_ == "manifest":
            return row.get(name, "")
        return ""

    label = derive(source.label, "label", label_rx)
    group = derive(source.group, "group", group_rx) or ref.example_id  # no group: each file is its own group
    split = row.get("split", "")
    return replace(ref, label=label, group=f"{source.name}/{group}" if group != ref.example_id else group, split=split), misses


def label_and_group(ref: FileRef, source: Source, manifest: dict[str, dict[str, str]]) -> FileRef:
    """Label, group and forced split of one file (regexes run with a time limit)."""
    label_rx = regex.compile(source.label.pattern) if source.label.from_ == "regex" and source.label.pattern else None
    group_rx = regex.compile(source.group.pattern) if source.group.from_ == "regex" and source.group.pattern else None
    return _label_and_group(ref, source, manifest, label_rx, group_rx, _key(source, None))[0]


def probe_headers(refs: Iterable[FileRef], storage_options: dict[str, dict[str, Any]]) -> list[Header]:
    """Read every header of a batch (runs on a worker). Never raises for a bad file.

    ``storage_options`` maps source name -> fsspec options.
    """
    out: list[Header] = []
    for ref in refs:
        try:
            if ref.size_bytes == 0:
                raise ValueError("zero-byte file")
            if is_remote(ref.url):
                # a header sits in the first KiB: small blocks, or s3fs reads 50 MiB ahead per file
                fs, path = filesystem(ref.url, storage_options.get(ref.source, {}))
                source = fs.open(path, "rb", block_size=PROBE_BLOCK_BYTES)
            else:
                # libsndfile opens a local path itself: no Python read callbacks (0.085 vs 0.13 ms
                # per header through a file object, 0.23 through fsspec's), and no filesystem
                # lookup per file (fsspec's URL parsing was a third of the probe)
                # as bytes: soundfile encodes a str path strictly, which fails on undecodable names
                source = contextlib.nullcontext(os.fsencode(local_path(ref.url)))
            with source as f, open_audio(f) as info:
                out.append(Header(ref.example_id, int(info.frames), int(info.samplerate), int(info.channels), info.format, info.subtype))
        except Exception as exc:  # noqa: BLE001 - recorded as a reject, the run goes on
            out.append(Header(ref.example_id, 0, 0, 0, "", "", error=describe_open_error(exc)[:300], error_class=type(exc).__name__))
    return out
