"""What ``audioprep inspect`` shows, as plain data (rendered by the CLI with rich)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

import numpy as np
import zarr

from pipeline.errors import StoreError
from pipeline.run.labels import text_stats
from pipeline.store.location import StoreLocation
from pipeline.store.state import ACTIVE, read_meta, read_state

#: ``inspect`` warns on a split with more than this share of flagged examples
FLAGGED_WARN_FRACTION = 0.05


def describe(url: str, *, version: int | None = None, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    loc = StoreLocation(url, dict(storage_options or {}))
    meta = read_meta(loc)
    if meta is None or not meta.get("current_version"):
        raise StoreError(f"no committed audioprep store at {url}; run `audioprep run CATALOG` first")
    state = read_state(loc, version)
    assert state is not None
    active = [r for r in state.table if r["status"] in ACTIVE]
    counts: dict[str, Counter] = defaultdict(Counter)
    seconds: dict[str, list[float]] = defaultdict(list)
    copies: Counter = Counter()
    for r in active:
        if r["copy"] == 0:
            counts[r["split"]][r["label"]] += 1
            seconds[r["split"]].append(r["duration_seconds"])
        else:
            copies[r["split"]] += 1
    group = zarr.open_group(loc.zarr_store(read_only=True), mode="r")
    features = {}
    for name in group["features"].array_keys():
        a = group[f"features/{name}"]
        features[name] = {
            "shape": list(a.shape),
            "dtype": str(a.dtype),
            "frame_shape": a.attrs.get("frame_shape"),
            "dims": list(a.metadata.dimension_names or ()),
        }
    durations = {
        s: {"n": len(v), "hours": float(np.sum(v)) / 3600, "min_s": float(np.min(v)), "mean_s": float(np.mean(v)), "max_s": float(np.max(v))}
        for s, v in seconds.items() if v
    }
    warnings = _warnings(meta, counts, state)
    originals = [r for r in active if r["copy"] == 0]
    transcripts = {s: text_stats(r for r in originals if r["split"] == s) for s in sorted(counts)} if any(r.get("text") for r in originals) else {}
    tag_counts: dict[str, Counter] = defaultdict(Counter)
    for r in originals:
        if r.get("tags"):
            tag_counts[r["split"]].update(json.loads(r["tags"]))
    text_rate = sum(1 for r in originals if "text_rate" in (r.get("flags") or "").split(","))
    if text_rate:
        warnings.append(f"{text_rate} example(s) flagged text_rate: their transcript's characters per second are implausible; see `audioprep report`")
    return {
        "url": url,
        "dataset": meta.get("dataset"),
        "version": state.version,
        "format_version": meta.get("format_version"),
        "layout": meta.get("layout", {}).get("mode"),
        "counts": {s: dict(sorted(c.items())) for s, c in sorted(counts.items())},
        "augmented_copies": dict(copies),
        "durations": durations,
        "features": features,
        "feature_params": meta.get("feature_params"),
        "normalization": meta.get("normalization"),
        "rejects": len(state.rejects),
        "reject_rows": state.rejects[:20],
        "flagged": sum(1 for r in active if r["status"] == "flagged"),
        "catalog_hash": meta.get("catalog_hash"),
        "package_versions": meta.get("package_versions"),
        "versions": meta.get("versions", []),
        "warnings": warnings,
        "transcripts": transcripts,
        "text_vocab": meta.get("text_vocab") or [],
        "tag_counts": {s: dict(sorted(c.items())) for s, c in sorted(tag_counts.items())},
    }


def _warnings(meta: dict[str, Any], counts: dict[str, Counter], state) -> list[str]:
    out = []
    labels = set().union(*[set(c) for c in counts.values()]) if counts else set()
    for split, c in counts.items():
        missing = sorted(labels - set(c))
        if missing:
            out.append(f"split {split} has no example of label(s) {missing}")
    requested = (meta.get("catalog") or {}).get("splits") or {}
    total = sum(sum(c.values()) for c in counts.values())
    for split in ("train", "val", "test"):
        want = requested.get(split)
        if isinstance(want, (int, float)) and total:
            got = sum(counts.get(split, {}).values()) / total
            if abs(got - want) > max(0.1, 0.5 * want):
                out.append(f"split {split} holds {got:.0%} of examples, requested {want:.0%}")
    from pipeline.report.quality_page import flagged_share

    for split, share in sorted(flagged_share(state.table).items()):
        if share > FLAGGED_WARN_FRACTION:
            out.append(f"split {split}: {share:.0%} of examples are flagged (quality or duplicate flags); see `audioprep report`")
    n_rej = len(state.rejects)
    if total and n_rej / (total + n_rej) > 0.05:
        out.append(f"{n_rej} files rejected ({n_rej / (total + n_rej):.0%}); see the rejects table")
    return out
