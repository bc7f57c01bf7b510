"""Vocabularies and checks of the text and tag labels, computed when a version is committed."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any


def add_flag(flags: str, flag: str) -> str:
    """``flags`` (comma-separated) with ``flag`` added once."""
    have = [f for f in flags.split(",") if f]
    return ",".join(have if flag in have else [*have, flag])


def text_rate_implausible(text: str, duration_seconds: float, rule: Any) -> bool:
    """Whether a transcript's characters per second fall outside the source's bounds
    (``sources[].text.min_chars_per_second`` .. ``max_chars_per_second``)."""
    if not text or duration_seconds <= 0:
        return False
    rate = len(text) / duration_seconds
    return rate < rule.min_chars_per_second or rate > rule.max_chars_per_second


def text_vocab(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The characters of the transcripts of ``rows`` (sorted by code point).

    Id 0 is reserved for the CTC blank, so character ``vocab[i]`` has id ``i + 1``.
    """
    chars: set[str] = set()
    for r in rows:
        chars.update(r.get("text") or "")
    return sorted(chars)


def tag_vocab(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every tag of ``rows``, sorted."""
    tags: set[str] = set()
    for r in rows:
        tags.update(json.loads(r["tags"]) if r.get("tags") else [])
    return sorted(tags)


def text_stats(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Characters, words and characters per second of the transcripts of ``rows``."""
    n = chars = words = 0
    seconds = 0.0
    for r in rows:
        t = r.get("text") or ""
        if not t:
            continue
        n += 1
        chars += len(t)
        words += len(t.split())
        seconds += float(r.get("duration_seconds") or 0.0)
    return {
        "examples_with_text": n,
        "characters": chars,
        "words": words,
        "chars_per_second": chars / seconds if seconds else 0.0,
        "words_per_example": words / n if n else 0.0,
    }


__all__ = ["add_flag", "tag_vocab", "text_rate_implausible", "text_stats", "text_vocab"]
