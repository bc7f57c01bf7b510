"""Transcripts and tags of discovered files: read at discovery, beside the listing.

Three places a transcript can live (``sources[].text.from``):

- ``manifest``: a column of the source's manifest;
- ``sidecar``: a file beside each audio file, same name, another suffix (``x.flac`` ->
  ``x.txt``, ``x.lab``);
- ``transcript_file``: one file per folder listing ``<id> <text>`` lines, as LibriSpeech's
  ``<speaker>-<chapter>.trans.txt`` does; ``<id>`` is the audio file name without extension.

Text files are read in one batch per source (``fs.cat`` of every path, concurrent on object
stores). Text must be UTF-8; a file that is not is named in the error.
"""

from __future__ import annotations

import fnmatch
import json
import posixpath
import string
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.errors import SourceError

_PUNCT = str.maketrans("", "", string.punctuation + "\u2018\u2019\u201c\u201d\u2013\u2014\u2026\u00ab\u00bb\u00bf\u00a1")


def normalize_text(text: str, steps: Iterable[str]) -> str:
    """Apply ``steps`` (``nfkc``, ``lower``, ``strip_punct``) in order, then collapse whitespace.

    ``strip_punct`` removes ASCII punctuation and common typographic quotes and dashes; an
    apostrophe inside a word goes too (``don't`` -> ``dont``), as most CTC vocabularies expect.
    """
    for step in steps:
        if step == "nfkc":
            text = unicodedata.normalize("NFKC", text)
        elif step == "lower":
            text = text.lower()
        elif step == "strip_punct":
            text = text.translate(_PUNCT)
        else:
            raise ValueError(f"unknown text normalization {step!r}")
    return " ".join(text.split())


def parse_tags(value: str, separator: str) -> list[str]:
    """Tags of one manifest cell: a JSON list, or ``separator``-joined names; order kept, no repeats."""
    value = (value or "").strip()
    if not value:
        return []
    if value.startswith("["):
        try:
            items = json.loads(value)
        except json.JSONDecodeError:
            items = None
        if isinstance(items, list):
            raw = [str(x) for x in items]
        else:
            raise ValueError(f"not a JSON list of tags: {value[:80]!r}")
    else:
        raw = value.split(separator)
    out: list[str] = []
    for t in (x.strip() for x in raw):
        if t and t not in out:
            out.append(t)
    return out


def _stem(rel: str) -> str:
    return posixpath.splitext(posixpath.basename(rel))[0]


def _decode_text(data: bytes, rel: str, key: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SourceError(f"{key}: {rel} is not UTF-8 text; save transcripts as UTF-8") from None


def text_files_needed(rule: Any, audio_rels: Iterable[str], listed: Iterable[str]) -> dict[str, list[str]]:
    """The text files to read (relative paths) -> the audio files they serve."""
    listed = set(listed)
    need: dict[str, list[str]] = {}
    if rule.from_ == "sidecar":
        for rel in audio_rels:
            side = posixpath.splitext(rel)[0] + rule.suffix
            if side in listed:
                need.setdefault(side, []).append(rel)
    elif rule.from_ == "transcript_file":
        by_dir: dict[str, list[str]] = {}
        for rel in listed:
            if fnmatch.fnmatchcase(posixpath.basename(rel), rule.pattern):
                by_dir.setdefault(posixpath.dirname(rel), []).append(rel)
        for rel in audio_rels:
            for tf in by_dir.get(posixpath.dirname(rel), []):
                need.setdefault(tf, []).append(rel)
    return need


def transcripts(rule: Any, audio_rels: list[str], texts: Mapping[str, bytes], need: Mapping[str, list[str]], key: str) -> dict[str, str]:
    """Raw (not yet normalized) transcript of each audio file that has one.

    ``texts`` holds the bytes of the files :func:`text_files_needed` listed.
    """
    out: dict[str, str] = {}
    if rule.from_ == "sidecar":
        for side, rels in need.items():
            body = _decode_text(texts[side], side, key).strip()
            for rel in rels:
                out[rel] = body
    elif rule.from_ == "transcript_file":
        sep = "\t" if rule.format == "<id>\t<text>" else None
        for tf, rels in need.items():
            lines: dict[str, str] = {}
            for n, line in enumerate(_decode_text(texts[tf], tf, key).splitlines(), start=1):
                if not line.strip():
                    continue
                parts = line.split(sep, 1) if sep else line.strip().split(None, 1)
                if not parts or not parts[0]:
                    raise SourceError(f"{key}.pattern: {tf} line {n} is not `{rule.format}`")
                lines[parts[0].strip()] = parts[1].strip() if len(parts) > 1 else ""
            for rel in rels:
                if _stem(rel) in lines:
                    out[rel] = lines[_stem(rel)]
    return out


__all__ = ["normalize_text", "parse_tags", "text_files_needed", "transcripts"]
