"""Coordinator steps around the partitions: prepare the store, then commit a version.

Only the coordinator creates or resizes arrays and writes attributes and tables. A
version's tables are written under a new ``tables/vNNNNN/`` and the root attribute
``current_version`` is switched last, so readers never see a half-written run.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from collections import Counter, defaultdict
from importlib import metadata
from typing import Any

import numpy as np
import zarr

from pipeline import __version__
from pipeline.augment import build_chain
from pipeline.errors import AudioprepError
from pipeline.features import build_feature_set
from pipeline.features.normalize import RunningStats
from pipeline.quality.duplicates import find_edges
from pipeline.quality.provenance import quality_provenance
from pipeline.quality.resolve import apply_duplicates
from pipeline.run.labels import add_flag, tag_vocab, text_rate_implausible, text_vocab
from pipeline.run.partition import manifest_path
from pipeline.run.planner import RunPlan
from pipeline.store.layout import FORMAT_VERSION, ensure_feature_arrays
from pipeline.store.lock import verify_held
from pipeline.store.state import ACTIVE, ATTR_KEY, file_id, table_path
from pipeline.store.tables import EXAMPLE_COLUMNS, REJECT_COLUMNS, path_bytes_text, to_columns, write_table

PACKAGES = (
    # the libraries that compute the stored bytes: decode, resample, features, codecs
    "numpy", "scipy", "librosa", "numba", "soundfile", "soxr", "zarr", "numcodecs",
    # and those that ran the run
    "fsspec", "dask", "distributed", "prefect", "pydantic",
)


def package_versions() -> dict[str, str]:
    """Provenance: audioprep, Python and the installed version of each of ``PACKAGES``.

    Written at the root (the last commit's) and in each version's record: features
    computed under librosa 0.10 and 1.0 (whose defaults differ; ours pass every parameter)
    can then be told apart in one store.
    """
    out = {"audioprep": __version__, "python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def prepare_store(plan: RunPlan) -> None:
    """Create the store (first run) and grow the feature arrays to the plan's allocation."""
    verify_held(plan.location, plan.run_id)
    c = plan.loaded.catalog
    group = zarr.open_group(plan.location.zarr_store(), mode="a")
    meta = dict(group.attrs.get(ATTR_KEY, {}))
    if not meta:
        fset = build_feature_set(c.features, c.audio.sample_rate)
        meta = {
            "format_version": FORMAT_VERSION,
            "dataset": c.dataset,
            "fingerprint": plan.fingerprint,
            "layout": plan.layout.to_dict(),
            "feature_params": fset.params(),
            "feature_names": list(fset.names),
            "audio": c.audio.model_dump(mode="json"),
            "hop_length": fset.hop_length,
            "sample_rate": c.audio.sample_rate,
            "frame_rate_hz": c.audio.sample_rate / fset.hop_length,
            "normalization": fset.params().get("normalization", "none"),
            "allocated": 0,
            "current_version": 0,
            "versions": [],
        }
        group.attrs.update({ATTR_KEY: meta})
    fparams = meta.get("feature_params", {})
    ensure_feature_arrays(group, plan.layout, plan.allocated, fparams)


def read_manifests(plan: RunPlan) -> dict[str, dict[str, Any] | None]:
    """Each planned partition's manifest (None when it did not finish), read once."""
    return {p.partition_id: plan.location.read_json(manifest_path(p.partition_id)) for p in plan.partitions}


def commit_run(plan: RunPlan, *, wall_seconds: float | None = None, duplicate_edges: list | None = None) -> dict[str, Any]:
    """Assemble the new version from the previous one and this run's manifests.

    Raises
    ------
    AudioprepError
        When a partition of the plan has no manifest (it failed): nothing is committed.
    DuplicateError
        When duplicates are forbidden or a cluster cannot be placed in one split.

    ``duplicate_edges`` (from :func:`pipeline.quality.duplicates.find_edges`) are the copies
    found; None finds them here, in this process.
    """
    loc = plan.location
    verify_held(loc, plan.run_id)  # fencing: a run that lost its lease never commits
    c = plan.loaded.catalog
    prev = plan.previous
    manifests = read_manifests(plan)
    missing = [pid for pid, m in manifests.items() if m is None]
    if missing:
        raise AudioprepError(f"{len(missing)} partition(s) did not finish ({', '.join(missing[:3])}...); nothing was committed. Re-run to resume.")
    version = (prev.version if prev else 0) + 1
    fset = build_feature_set(c.features, c.audio.sample_rate)
    sum_cols = list(fset.summary_columns())

    # previous rows first, in their order: offsets and row order of old versions stay valid
    rows: list[dict[str, Any]] = []
    sums: list[np.ndarray] = []
    if prev:
        for i, r in enumerate(prev.table):
            r = dict(r)
            root_id = file_id(r)
            if r["status"] in ACTIVE and root_id in plan.removed_ids:
                r["status"] = "removed"
            elif r["status"] in ACTIVE and root_id in plan.replaced_ids:
                r["status"] = "replaced"
            rows.append(r)
            if sum_cols:
                sums.append(prev.summaries[i] if prev.summaries.shape[1] else np.zeros(len(sum_cols), np.float32))
    rejects: list[dict[str, Any]] = []
    if prev:
        rejects = [r for r in prev.rejects if r["id"] in plan.kept_reject_ids]
    rejects += [{**r, "path_bytes": path_bytes_text(r["path"]), "version_added": version} for r in plan.probe_rejects]

    text_rules = {s.name: s.text for s in c.sources if s.text is not None}
    stats: dict[str, RunningStats] = {}
    if prev and prev.meta.get("norm_stats"):
        stats = {k: RunningStats.from_dict(v) for k, v in prev.meta["norm_stats"].items()}
    processed_seconds = 0.0
    for p in plan.partitions:
        m = manifests[p.partition_id]
        processed_seconds += float(m["audio_seconds"])
        summaries = m.get("summaries") or []
        for j, r in enumerate(m["rows"]):
            rule = text_rules.get(r["source"])
            if rule is not None and text_rate_implausible(r.get("text", ""), r["duration_seconds"], rule):
                r = {**r, "flags": add_flag(r["flags"], "text_rate")}
            status = "flagged" if r["flags"] else "ok"
            augment = json.dumps(r["augment"], sort_keys=True)
            name = path_bytes_text(r["path"])
            rows.append({**r, "path_bytes": name, "status": status, "partition": p.partition_id, "augment": augment, "version_added": version})
            if sum_cols:
                sums.append(np.asarray(summaries[j], np.float32) if j < len(summaries) else np.zeros(len(sum_cols), np.float32))
        rejects += [{**r, "path_bytes": path_bytes_text(r["path"]), "version_added": version} for r in m["rejects"]]
        for k, v in m.get("norm_stats", {}).items():
            s = RunningStats.from_dict(v)
            stats[k] = stats[k].merge(s) if k in stats else s
    # duplicates: one split per cluster, flags, the policy (docs/quality.md)
    if duplicate_edges is None:
        duplicate_edges = find_edges(plan, c.duplicates)
    keep, dup_rejects, dup_clusters = apply_duplicates(
        rows, duplicate_edges, c.duplicates, version=version, forced_splits=plan.forced_splits, augment_splits=build_chain(c.augment).splits
    )
    if not all(keep):
        sums = [x for x, k in zip(sums, keep) if k] if sum_cols else sums
        rows = [r for r, k in zip(rows, keep) if k]
    rejects += dup_rejects
    rejects.sort(key=lambda r: (r["source"], r["path"]))

    group = zarr.open_group(loc.zarr_store(), mode="r+")
    labels = sorted({r["label"] for r in rows if r["status"] in ACTIVE})
    active = [r for r in rows if r["status"] in ACTIVE]
    vocab = {"text_vocab": text_vocab(r for r in active if r["split"] == "train"), "tag_vocab": tag_vocab(active)}
    write_table(group, table_path(version, "examples"), to_columns(rows, EXAMPLE_COLUMNS), "example", {"labels": labels})
    write_table(group, table_path(version, "rejects"), to_columns(rejects, REJECT_COLUMNS), "reject")
    if sum_cols:
        values = np.stack(sums).astype(np.float32) if sums else np.zeros((0, len(sum_cols)), np.float32)
        write_table(group, table_path(version, "summaries"), {"values": values}, "example", {"columns": sum_cols})

    counts = _counts(rows)
    active_originals = [r for r in rows if r["status"] in ACTIVE and r["copy"] == 0]
    record = {
        "version": version,
        "run_id": plan.run_id,
        "started": plan.started,
        "committed": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "catalog_hash": plan.loaded.catalog_hash,
        "examples": len(active_originals),
        "rows": sum(1 for r in rows if r["status"] in ACTIVE),
        "new_examples": sum(1 for r in rows if r.get("version_added") == version and r["copy"] == 0),
        "removed": len(plan.removed_ids),
        "replaced": len(plan.replaced_ids),
        "rejected": len(rejects),
        "audio_hours": sum(r["duration_seconds"] for r in active_originals) / 3600.0,
        "processed_audio_seconds": processed_seconds,
        "partitions": len(plan.partitions),
        "duplicate_clusters": len(dup_clusters),
        "counts": counts,
        "package_versions": package_versions(),
    }
    meta = dict(group.attrs[ATTR_KEY])
    meta.update(
        {
            "catalog": plan.loaded.redacted,
            "catalog_hash": plan.loaded.catalog_hash,
            "package_versions": record["package_versions"],
            "allocated": plan.allocated,
            "labels": labels,
            **vocab,
            "norm_stats": {k: v.to_dict() for k, v in stats.items()},
            "quality": quality_provenance(c),
            "versions": [*meta.get("versions", []), record],
            "current_version": version,  # switched last: the version becomes visible here
        }
    )
    verify_held(loc, plan.run_id)  # again at the commit point: the tables above are invisible until this write
    group.attrs.update({ATTR_KEY: meta})
    return {**record, "wall_seconds": wall_seconds, "store": loc.url, "reject_rows": rejects[:200]}


def _counts(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        if r["status"] in ACTIVE and r["copy"] == 0:
            out[r["split"]][r["label"]] += 1
    return {s: dict(sorted(v.items())) for s, v in sorted(out.items())}


def reject_fraction(summary: dict[str, Any]) -> float:
    total = summary["examples"] + summary["rejected"]
    return summary["rejected"] / total if total else 0.0
