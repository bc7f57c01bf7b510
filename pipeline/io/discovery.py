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
import posixpath
import re
from dataclasses import dataclass, replace
from typing import Any, Iterable

import soundfile as sf

from pipeline.config.catalog import Source
from pipeline.errors import SourceError
from pipeline.io.fs import content_key, filesystem, forget_listings, glob_to_regex, is_remote, join, local_path


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


def example_id(source_name: str, rel_path: str) -> str:
    """Stable id: hash of the source name and the path relative to the source root."""
    return hashlib.blake2b(f"{source_name}\x00{rel_path}".encode(), digest_size=10).hexdigest()


def list_source(source: Source) -> list[FileRef]:
    """List the files of one source that match its pattern, sorted by relative path.

    Raises
    ------
    SourceError
        When the root does not exist or nothing matches the pattern.
    """
    fs, root = filesystem(source.url, source.storage_options)
    try:
        forget_listings(fs, root)  # list what is there now, not what a previous run saw
        exists = fs.exists(root)
    except Exception as exc:  # noqa: BLE001 - any backend failure becomes a clear message
        raise SourceError(f"sources[{source.name}].url: cannot reach {source.url}: {type(exc).__name__}") from None
    if not exists:
        raise SourceError(f"sources[{source.name}].url: {source.url} does not exist; check the path or bucket name")
    regex = glob_to_regex(source.pattern)
    found = fs.find(root, detail=True)
    root_norm = root.rstrip("/")
    refs: list[FileRef] = []
    for path, info in found.items():
        if info.get("type", "file") != "file":
            continue
        rel = path[len(root_norm) :].lstrip("/") if path.startswith(root_norm) else posixpath.basename(path)
        if not regex.match(rel):
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
    manifest = read_manifest(source) if source.manifest else {}
    return [label_and_group(r, source, manifest) for r in refs]


def read_manifest(source: Source) -> dict[str, dict[str, str]]:
    """Read a CSV or JSONL manifest: ``path`` (relative to the source root) -> columns.

    Paths that escape the source root (``../``, absolute) are rejected.
    """
    assert source.manifest is not None
    fs, path = filesystem(source.manifest, source.storage_options)
    try:
        text = fs.cat_file(path).decode("utf-8")
    except FileNotFoundError:
        raise SourceError(f"sources[{source.name}].manifest: {source.manifest} does not exist") from None
    rows: list[dict[str, Any]]
    if path.endswith((".jsonl", ".ndjson", ".json")):
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        rows = list(csv.DictReader(io.StringIO(text)))
    out: dict[str, dict[str, str]] = {}
    for i, row in enumerate(rows, start=1):
        rel = str(row.get("path", "")).strip()
        norm = posixpath.normpath(rel)
        if not rel or rel.startswith("/") or norm.startswith("..") or "://" in rel:
            raise SourceError(
                f"sources[{source.name}].manifest: row {i} path {rel!r} must be relative to the source root "
                "and stay inside it (no '..', no absolute paths)"
            )
        out[norm] = {k: "" if v is None else str(v) for k, v in row.items() if k != "path"}
    return out


def label_and_group(ref: FileRef, source: Source, manifest: dict[str, dict[str, str]]) -> FileRef:
    row = manifest.get(posixpath.normpath(ref.rel_path), {})

    def derive(rule, name: str) -> str:
        if rule.from_ == "parent_dir":
            parent = posixpath.dirname(ref.rel_path)
            return posixpath.basename(parent) if parent else ""
        if rule.from_ == "regex":
            m = re.search(rule.pattern, ref.rel_path)
            return m.group(name) if m and m.group(name) is not None else ""
        if rule.from_ == "manifest":
            return row.get(name, "")
        return ""

    label = derive(source.label, "label")
    group = derive(source.group, "group") or ref.example_id  # no group: each file is its own group
    split = row.get("split", "")
    return replace(ref, label=label, group=f"{source.name}/{group}" if group != ref.example_id else group, split=split)


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
                source = contextlib.nullcontext(local_path(ref.url))
            with source as f, sf.SoundFile(f) as info:
                out.append(Header(ref.example_id, int(info.frames), int(info.samplerate), int(info.channels), info.format, info.subtype))
        except Exception as exc:  # noqa: BLE001 - recorded as a reject, the run goes on
            out.append(Header(ref.example_id, 0, 0, 0, "", "", error=str(exc)[:300] or type(exc).__name__, error_class=type(exc).__name__))
    return out
