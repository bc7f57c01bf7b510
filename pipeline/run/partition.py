"""One partition, end to end, on a worker: fetch, decode, resample, clip, augment, featurize,
write its shard-aligned region, then its manifest (the commit marker).

A partition whose manifest exists is already done: re-running it (a retry, a resumed run,
a task resubmitted after a worker died) returns the recorded result without recomputing.
Arrays go from the worker straight to the store; the task returns a small record.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np

from pipeline.augment import build_chain
from pipeline.config.interpolate import scrub
from pipeline.errors import AudioDecodeError, QualityRejected
from pipeline.features import build_feature_set
from pipeline.features.normalize import RunningStats
from pipeline.io.audio import decode, decode_segments, fix_length, peak_dbfs, resample, select_channels, to_mono
from pipeline.io.fetch import fetch_many
from pipeline.plan.partition import PartitionSpec, WorkItem
from pipeline.quality.analyze import measure, quality_flags, rejected_by, rule_values
from pipeline.quality.duplicates import pack, write_fingerprints
from pipeline.rng import example_rng
from pipeline.run.context import RunContext
from pipeline.store.location import StoreLocation
from pipeline.store.shards import RegionWriter

MANIFEST_DIR = "_partitions"


class ChangedDuringRun(AudioDecodeError):
    """The file decodes to more than was planned from the header probed at planning: it was
    replaced (or appended to) during the run. Rejected; the next run plans it afresh."""


def _fault_delay_seconds() -> float:
    """Fault-injection tests widen the window between compute and commit to kill a process in
    it. Read per call: workers forked from a warm server imported this module long before."""
    return float(os.environ.get("AUDIOPREP_TEST_PARTITION_DELAY_SECONDS", "0") or 0)


def manifest_path(partition_id: str) -> str:
    return f"{MANIFEST_DIR}/{partition_id}.json"


def trace_path(partition_id: str) -> str:
    """Where a traced attempt records the file it is working on (pipeline.run.crashes)."""
    return f"{MANIFEST_DIR}/{partition_id}.trace.json"


def _summary(manifest: dict[str, Any], *, skipped: bool) -> dict[str, Any]:
    """The task's small result. ``finished_unix`` is when the worker finished it (progress
    and benchmarks time partitions by it, not by when the flow gets around to the result);
    it is not part of the manifest, so stores stay identical across runs."""
    return {
        "partition_id": manifest["partition_id"],
        "index": manifest["index"],
        "examples": sum(1 for r in manifest["rows"] if r["copy"] == 0),
        "rows": len(manifest["rows"]),
        "rejected": len(manifest["rejects"]),
        "audio_seconds": manifest["audio_seconds"],
        "compute_seconds": manifest["compute_seconds"],
        "skipped": skipped,
        "finished_unix": time.time(),
    }


@lru_cache(maxsize=4)
def _banks(bank_files: tuple, options_key: str, sample_rate: int) -> dict[str, list[np.ndarray]]:
    """Noise / impulse-response clips, decoded once per worker process (cached by their list)."""
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


def process_partition(
    spec: PartitionSpec, ctx: RunContext, *, trace: bool = False, excluded: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Compute and write one partition; return a small summary record.

    ``trace`` records each file in :func:`trace_path` before its work starts, so that a
    worker's death names the file (a retry after a crash). ``excluded`` maps example ids of
    files that killed workers to their message: they become ``WorkerCrashed`` rejects.
    """
    loc = StoreLocation(ctx.store_url, ctx.store_options)
    done = loc.read_json(manifest_path(spec.partition_id))
    if done is not None:
        return _summary(done, skipped=True)

    t0, cpu0 = time.perf_counter(), time.thread_time()
    sr = ctx.audio.sample_rate
    fset = build_feature_set(ctx.features, sr)
    chain = build_chain(ctx.augment)
    min_samples = int(fset.params().get("stft", {}).get("n_fft", 1))
    banks: dict[str, list[np.ndarray]] = {}
    if ctx.bank_files:
        banks = _banks(ctx.bank_files, json.dumps(ctx.source_options, sort_keys=True, default=str), sr)
    layout = ctx.layout
    kept = ctx.audio.kept_channels
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

    # features go to the store a shard at a time while the partition computes (RegionWriter's thread)
    writers = _open_region(loc, spec, layout)
    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    summaries: list[list[float]] = []
    stats = {name: RunningStats(int(np.prod(shape))) for name, shape in layout.feature_shapes.items()}
    cursor = 0
    audio_seconds = 0.0
    fp_ids: list[str] = []
    fp_pcm: list[str] = []
    fp_codes: list[np.ndarray] = []
    fp_keys: list[tuple[np.ndarray, np.ndarray]] = []
    frame_seconds = 0.0

    try:
        for it in spec.items:
            data = blobs.pop(it.url, None)
            if excluded and it.example_id in excluded:
                rejects.append(_reject(it, "crash", "WorkerCrashed", excluded[it.example_id], ctx))
                continue
            if trace:
                loc.write_json(trace_path(spec.partition_id), {"example_id": it.example_id, "path": it.rel_path})
            try:
                if isinstance(data, BaseException) or data is None:
                    raise AudioDecodeError(it.rel_path, "read", f"cannot read the file ({type(data).__name__}: {str(data)[:200]})")
                sr_in, channels, frames, segments, truncated, decoder = _decode_segments(data, it, ctx)
                del data
                out_rows = []
                measured = []
                for k, (start_frame, y_native) in enumerate(segments):
                    y_mono = to_mono(y_native)
                    y_kept = None
                    if kept:  # mono: false: the kept channels, resampled together; y is their mix
                        chosen = select_channels(y_native, it.rel_path, channels=ctx.audio.channels, kept=kept, pad=ctx.audio.pad_channels)
                        y_kept = resample(chosen, sr_in, sr)
                        y = to_mono(y_kept)
                    else:
                        y = resample(y_mono, sr_in, sr)
                    if y.shape[0] < min_samples:
                        if k > 0:  # a split file's short tail: nothing to analyse
                            continue
                        raise AudioDecodeError(
                            it.rel_path, "limits", f"{y.shape[0]} samples at {sr} Hz is shorter than one analysis window (n_fft={min_samples})"
                        )
                    seg_id = it.example_id if len(segments) == 1 else f"{it.example_id}@{k:04d}"
                    extra: dict[str, Any] = {}
                    qflags: list[str] = []
                    ana = None  # the features' analysis of y, shared with the quality metrics
                    if ctx.quality.measure:  # on the original only (copies carry their source's values)
                        ana = fset.analyze(y)
                        q = measure(y_mono, y, sr, ctx.quality, analysis=ana)
                        values = rule_values(q.metrics, sample_rate=sr, duration_seconds=y.shape[0] / sr, sample_rate_original=sr_in, channels=channels)
                        why = rejected_by(values, ctx.quality)
                        if why:
                            raise QualityRejected(it.rel_path, "quality", why if len(segments) == 1 else f"segment {k}: {why}")
                        measured.append((seg_id, q))
                        extra = {**q.metrics, "pcm_hash": q.pcm_hash}
                        qflags = quality_flags(values, ctx.quality)
                    for row in _featurize(y, seg_id, it, ctx, fset, chain, banks, fixed_samples if dense else 0, truncated=truncated, extra_flags=qflags,
                                          y_channels=y_kept, analysis=ana):
                        out_rows.append({**row, **extra, "start_seconds": start_frame / sr_in})
                need = len(out_rows) if dense else sum(r["length"] for r in out_rows)
                if cursor + need > spec.capacity:
                    # planned from the header probed at planning; nothing of this file is written
                    raise ChangedDuringRun(
                        it.rel_path,
                        "changed",
                        f"decoded {frames} frames at {sr_in} Hz ({frames / sr_in:.1f} s) but planning read {it.frames} frames "
                        f"({it.duration_seconds:.1f} s) from its header: the file changed during the run (or its header under-states "
                        "its length); the next run plans it again",
                    )
            except AudioDecodeError as exc:
                rejects.append(_reject(it, exc.stage, type(exc).__name__, str(exc), ctx))
                continue
            except Exception as exc:  # noqa: BLE001 - one bad file never stops the partition
                rejects.append(_reject(it, "features", type(exc).__name__, f"{it.rel_path}: {exc}", ctx))
                continue

            audio_seconds += frames / sr_in
            for seg_id, q in measured:
                fp_ids.append(seg_id)
                fp_pcm.append(q.pcm_hash)
                fp_codes.append(q.codes)
                fp_keys.append(q.keys)
                frame_seconds = q.frame_seconds
            for row in out_rows:
                feats = row.pop("feats")
                span = 1 if dense else row["length"]
                for name in layout.feature_shapes:
                    x = feats[name][None] if dense else feats[name]  # dense: each clip is one row (row, frame, bin)
                    writers[name].append(x)
                    if row["copy"] == 0 and it.split in ctx.norm_splits:
                        stats[name].update(feats[name].reshape(feats[name].shape[0], -1))
                if fset.summary_columns():
                    # with channels kept, the summaries are of the channel mean (docs/store-format.md)
                    mono_feats = {k: v.mean(axis=1) for k, v in feats.items()} if kept else feats
                    summaries.append([float(v) for v in fset.summarize(mono_feats)])
                rows.append(
                    {
                        **row,
                        "file_id": it.example_id,
                        "source": it.source,
                        "path": it.rel_path,
                        "label": it.label,
                        "text": it.text,
                        "tags": it.tags,
                        "group": it.group,
                        "split": it.split,
                        "content_key": it.content_key,
                        "sample_rate_original": sr_in,
                        "channels": channels,
                        "decoder": decoder,
                        "offset": spec.start + cursor,
                    }
                )
                cursor += span
        for w in writers.values():
            w.close()  # the last shards, fill up to the region's end; raises what a write raised
    except BaseException:
        for w in writers.values():  # no writer thread outlives a failed partition
            w.abort()
        raise
    # the duplicate index's input, written before the manifest that commits the partition
    write_fingerprints(loc, spec.partition_id, pack(fp_ids, fp_pcm, fp_codes, fp_keys, frame_seconds))
    delay = _fault_delay_seconds()
    if delay:
        time.sleep(delay)

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
        "compute_thread_cpu_seconds": time.thread_time() - cpu0,
    }
    loc.write_json(manifest_path(spec.partition_id), manifest)
    if trace:
        loc.delete(trace_path(spec.partition_id))
    return _summary(manifest, skipped=False)


def _decode_segments(data: bytes, it: WorkItem, ctx: RunContext):
    """``(sample_rate, channels, frames, [(start_frame, y (n, ch)), ...], truncated, decoder)`` of one file.

    A file longer than ``audio.max_seconds`` becomes several segments when
    ``audio.long_files`` is ``split``; each is decoded on its own, so memory stays bounded.
    """
    a = ctx.audio
    if a.long_files == "split" and it.frames > a.max_seconds * it.sample_rate:
        gen = decode_segments(data, it.rel_path, segment_seconds=a.max_seconds, max_channels=a.max_channels,
                              max_sample_rate=a.max_source_sample_rate, mono=not a.kept_channels)
        sr_in, channels, frames, decoder = next(gen)
        segments = list(gen)
        if not segments:
            raise AudioDecodeError(it.rel_path, "decode", "no samples (header only or truncated before the first frame)")
        n = sum(y.shape[0] for _, y in segments)
        return sr_in, channels, n, segments, n < frames, decoder
    # mono block by block: one file's memory is one channel's worth, at most audio.max_seconds
    dec = decode(data, it.rel_path, max_seconds=a.max_seconds, max_channels=a.max_channels, min_seconds=a.min_seconds,
                 max_sample_rate=a.max_source_sample_rate, mono=not a.kept_channels)
    return dec.sample_rate, dec.channels, dec.frames, [(0, dec.y)], dec.truncated, dec.decoder


def _featurize(
    y: np.ndarray, example_id: str, it: WorkItem, ctx: RunContext, fset, chain, banks, fixed_samples: int, *, truncated: bool = False,
    extra_flags: list[str] | tuple[str, ...] = (), y_channels: np.ndarray | None = None, analysis=None,
) -> list[dict[str, Any]]:
    """Rows (with their features under ``feats``) of one example and its augmented copies.

    ``y`` is the (mono) example; with ``y_channels`` (n, channels) the features are of each
    channel, ``(frames, channels, *bins)``, and every channel of a copy gets the same drawn
    parameters: each starts from the same generator (pipeline.rng).
    """
    sr = ctx.audio.sample_rate
    silent = peak_dbfs(y) < ctx.audio.flag_silence_dbfs
    if silent:  # `silent` says it all: what silence's SNR, band and activity read is no news
        extra_flags = [f for f in extra_flags if f not in ("mostly_silent", "low_snr", "narrowband")]
    flags = ",".join([f for f, on in (("silent", silent), ("truncated", truncated)) if on] + list(extra_flags))
    out = []
    for copy in range(0, it.copies + 1):
        if y_channels is None:
            n_samples, feats, drawn = _one_copy(y, example_id, copy, ctx, fset, chain, banks, fixed_samples, analysis)
        else:
            per = [_one_copy(np.ascontiguousarray(y_channels[:, c]), example_id, copy, ctx, fset, chain, banks, fixed_samples)
                   for c in range(y_channels.shape[1])]
            n_samples, drawn = per[0][0], per[0][2]
            feats = {name: np.stack([p[1][name] for p in per], axis=1) for name in per[0][1]}
        out.append(
            {
                "id": example_id if copy == 0 else f"{example_id}.{copy}",
                "parent": "" if copy == 0 else example_id,
                "copy": copy,
                "duration_seconds": n_samples / sr,
                "n_samples": int(n_samples),
                "length": int(next(iter(feats.values())).shape[0]) if feats else 0,
                "flags": flags,
                "augment": drawn,
                "feats": feats,
            }
        )
    return out


def _one_copy(y: np.ndarray, example_id: str, copy: int, ctx: RunContext, fset, chain, banks, fixed_samples: int, analysis=None):
    """``(n_samples, feats, drawn)`` of copy ``copy`` (0: the original) of mono ``y``."""
    drawn: list[dict[str, Any]] = []
    yk = y
    if copy:
        rng = example_rng(ctx.seed, example_id, copy, "augment")
        yk, drawn = chain.augment_waveform(y, ctx.audio.sample_rate, rng, banks)
        drawn = list(drawn)
    if fixed_samples:
        crop_rng = example_rng(ctx.seed, example_id, copy, "crop") if ctx.audio.clip.crop == "random" else None
        yk = fix_length(yk, fixed_samples, ctx.audio.clip.crop, crop_rng)
    feats = fset.compute(yk, analysis=analysis if yk is y else None)  # measure read y's spectrum first
    if copy:
        feats, spec_drawn = chain.augment_features(feats, rng)
        drawn.extend(spec_drawn)
    return yk.shape[0], feats, drawn


def _open_region(loc: StoreLocation, spec: PartitionSpec, layout) -> dict[str, RegionWriter]:
    """A writer per feature array for this partition's region ``[start, start + capacity)``."""
    import zarr

    group = zarr.open_group(loc.zarr_store(), mode="r+")
    # a local shard is written in this thread (with a worker per core a writer thread only
    # contends for the CPU); an upload overlaps the next rows' computing
    background = loc.remote
    return {name: RegionWriter(group[f"features/{name}"], spec.start, end=spec.start + spec.capacity, background=background)
            for name in layout.feature_shapes}


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
