"""One partition, end to end, on a worker: fetch, decode, resample, clip, augment, featurize,
write its shard-aligned region, then its manifest (the commit marker).

A partition whose manifest exists is already done: re-running it (a retry, a resumed run,
a task resubmitted after a worker died) returns the recorded result without recomputing.
Arrays go from the worker straight to the store; the task returns a small record.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from functools import lru_cache
from typing import Any

import numpy as np

from pipeline.augment import build_chain
from pipeline.config.interpolate import scrub
from pipeline.errors import AudioDecodeError
from pipeline.features import build_feature_set
from pipeline.features.normalize import RunningStats
from pipeline.io.audio import decode, fix_length, peak_dbfs, resample, to_mono
from pipeline.io.fetch import fetch_many
from pipeline.plan.partition import PartitionSpec, WorkItem
from pipeline.rng import example_rng
from pipeline.run.context import RunContext
from pipeline.store.location import StoreLocation

MANIFEST_DIR = "_partitions"
# fault-injection tests widen the window between compute and commit to kill a process in it
_FAULT_DELAY_SECONDS = float(os.environ.get("AUDIOPREP_TEST_PARTITION_DELAY_SECONDS", "0") or 0)


def manifest_path(partition_id: str) -> str:
    return f"{MANIFEST_DIR}/{partition_id}.json"


def _summary(manifest: dict[str, Any], *, skipped: bool) -> dict[str, Any]:
    return {
        "partition_id": manifest["partition_id"],
        "index": manifest["index"],
        "examples": sum(1 for r in manifest["rows"] if r["copy"] == 0),
        "rows": len(manifest["rows"]),
        "rejected": len(manifest["rejects"]),
        "audio_seconds": manifest["audio_seconds"],
        "compute_seconds": manifest["compute_seconds"],
        "skipped": skipped,
    }


@lru_cache(maxsize=4)
def _banks(ctx_key: tuple, bank_files: tuple, options_key: str, sample_rate: int) -> dict[str, list[np.ndarray]]:
    """Noise / impulse-response clips, decoded once per worker process."""
    import json

    options = json.loads(options_key)
    banks: dict[str, list[np.ndarray]] = defaultdict(list)
    by_source: dict[str, list[str]] = defaultdict(list)
    for bf in bank_files:
        by_source[bf.source].append(bf.url)
    for source, urls in by_source.items():
        blobs = fetch_many(urls, options.get(source, {}), concurrency=8)
        for url in urls:
            data = blobs[url]
            if isinstance(data, BaseException):
                continue
            try:
                d = decode(data, url, max_seconds=3600, max_channels=64)
            except AudioDecodeError:
                continue
            banks[source].append(resample(to_mono(d.y), d.sample_rate, sample_rate))
    return dict(banks)


def process_partition(spec: PartitionSpec, ctx: RunContext) -> dict[str, Any]:
    """Compute and write one partition; return a small summary record."""
    loc = StoreLocation(ctx.store_url, ctx.store_options)
    done = loc.read_json(manifest_path(spec.partition_id))
    if done is not None:
        return _summary(done, skipped=True)

    t0 = time.perf_counter()
    sr = ctx.audio.sample_rate
    fset = build_feature_set(ctx.features, sr)
    chain = build_chain(ctx.augment)
    min_samples = int(fset.params().get("stft", {}).get("n_fft", 1))
    banks: dict[str, list[np.ndarray]] = {}
    if ctx.bank_files:
        import json

        banks = _banks((ctx.store_url,), ctx.bank_files, json.dumps(ctx.source_options, sort_keys=True, default=str), sr)
    layout = ctx.layout
    dense = layout.mode == "dense"
    fixed_samples = int(round(ctx.audio.clip.seconds * sr)) if dense else 0

    urls_by_source: dict[str, list[str]] = defaultdict(list)
    for it in spec.items:
        urls_by_source[it.source].append(it.url)
    blobs: dict[str, Any] = {}
    for source, urls in urls_by_source.items():
        mode, cache_dir = ctx.source_cache.get(source, ("none", None))
        keys = {it.url: it.content_key for it in spec.items if it.source == source}
        blobs.update(
            fetch_many(urls, ctx.source_options.get(source, {}), concurrency=ctx.fetch_concurrency, cache=mode, cache_dir=cache_dir, content_keys=keys)
        )

    buffers: dict[str, list[np.ndarray]] = {name: [] for name in layout.feature_shapes}
    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    summaries: list[list[float]] = []
    stats = {name: RunningStats(int(np.prod(shape))) for name, shape in layout.feature_shapes.items()}
    cursor = 0
    audio_seconds = 0.0

    for it in spec.items:
        data = blobs.pop(it.url, None)
        try:
            if isinstance(data, BaseException) or data is None:
                raise AudioDecodeError(it.rel_path, "read", f"cannot read the file ({type(data).__name__}: {str(data)[:200]})")
            dec = decode(data, it.rel_path, max_seconds=ctx.audio.max_seconds, max_channels=ctx.audio.max_channels, min_seconds=ctx.audio.min_seconds)
            del data
            y = resample(to_mono(dec.y), dec.sample_rate, sr)
            if y.shape[0] < min_samples:
                raise AudioDecodeError(it.rel_path, "limits", f"{y.shape[0]} samples at {sr} Hz is shorter than one analysis window (n_fft={min_samples})")
            flags = "silent" if peak_dbfs(y) < ctx.audio.flag_silence_dbfs else ""
            versions = [(0, y, [])]
            for k in range(1, it.copies + 1):
                rng = example_rng(ctx.seed, it.example_id, k, "augment")
                y_aug, drawn = chain.augment_waveform(y, sr, rng, banks)
                versions.append((k, y_aug, drawn, rng))
            out_rows = []
            for entry in versions:
                copy, yk = entry[0], entry[1]
                drawn = list(entry[2])
                if dense:
                    crop_rng = example_rng(ctx.seed, it.example_id, copy, "crop") if ctx.audio.clip.crop == "random" else None
                    yk = fix_length(yk, fixed_samples, ctx.audio.clip.crop, crop_rng)
                feats = fset.compute(yk)
                if copy > 0:
                    feats, spec_drawn = chain.augment_features(feats, entry[3])
                    drawn.extend(spec_drawn)
                n = next(iter(feats.values())).shape[0] if feats else 0
                out_rows.append((copy, yk.shape[0], feats, drawn, n))
        except AudioDecodeError as exc:
            rejects.append(_reject(it, exc.stage, type(exc).__name__, str(exc), ctx))
            continue
        except Exception as exc:  # noqa: BLE001 - one bad file never stops the partition
            rejects.append(_reject(it, "features", type(exc).__name__, f"{it.rel_path}: {exc}", ctx))
            continue

        audio_seconds += dec.frames / dec.sample_rate
        for copy, n_samples, feats, drawn, n in out_rows:
            length = 1 if dense else n
            if cursor + length > spec.capacity:
                raise RuntimeError(
                    f"partition {spec.partition_id}: region of {spec.capacity} overflowed at {it.rel_path}; "
                    "the header under-stated the length. This is a bug: please report it."
                )
            for name in buffers:
                buffers[name].append(feats[name])
                if copy == 0 and it.split in ctx.norm_splits:
                    stats[name].update(feats[name].reshape(feats[name].shape[0], -1))
            if fset.summary_columns():
                summaries.append([float(v) for v in fset.summarize(feats)])
            rows.append(
                {
                    "id": it.example_id if copy == 0 else f"{it.example_id}.{copy}",
                    "parent": "" if copy == 0 else it.example_id,
                    "copy": copy,
                    "source": it.source,
                    "path": it.rel_path,
                    "label": it.label,
                    "group": it.group,
                    "split": it.split,
                    "content_key": it.content_key,
                    "duration_seconds": n_samples / sr,
                    "sample_rate_original": dec.sample_rate,
                    "channels": dec.channels,
                    "n_samples": int(n_samples),
                    "offset": spec.start + cursor,
                    "length": int(n),
                    "flags": flags,
                    "augment": drawn,
                }
            )
            cursor += length

    if _FAULT_DELAY_SECONDS:
        time.sleep(_FAULT_DELAY_SECONDS)
    if cursor:
        _write_region(loc, spec, buffers, layout, cursor)
    buffers.clear()

    manifest = {
        "partition_id": spec.partition_id,
        "index": spec.index,
        "start": spec.start,
        "capacity": spec.capacity,
        "used": cursor,
        "rows": rows,
        "rejects": rejects,
        "summaries": summaries,
        "norm_stats": {k: v.to_dict() for k, v in stats.items()},
        "audio_seconds": audio_seconds,
        "compute_seconds": time.perf_counter() - t0,
    }
    loc.write_json(manifest_path(spec.partition_id), manifest)
    return _summary(manifest, skipped=False)


def _write_region(loc: StoreLocation, spec: PartitionSpec, buffers: dict[str, list[np.ndarray]], layout, used: int) -> None:
    import zarr

    group = zarr.open_group(loc.zarr_store(), mode="r+")
    for name, parts in buffers.items():
        block = np.stack(parts) if layout.mode == "dense" else np.concatenate(parts, axis=0)
        group[f"features/{name}"][spec.start : spec.start + used] = block.astype(np.float32, copy=False)


def _reject(it: WorkItem, stage: str, error_class: str, message: str, ctx: RunContext) -> dict[str, Any]:
    return {
        "id": it.example_id,
        "source": it.source,
        "path": it.rel_path,
        "content_key": it.content_key,
        "stage": stage,
        "error_class": error_class,
        "message": scrub(message, list(ctx.secrets))[:500],
    }
