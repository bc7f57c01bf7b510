"""Driver-side planning of a run: what is new, changed, removed; splits; partitions.

Everything here is deterministic in (catalog, seed, committed store state, listed files):
the plan never depends on the number of workers, and a resumed run plans the same
partitions as the run it resumes.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pipeline.augment import build_chain
from pipeline.config.catalog import LoadedCatalog
from pipeline.config.interpolate import scrub, secret_values
from pipeline.errors import StoreError
from pipeline.features import build_feature_set
from pipeline.io.audio import header_limits_problem, length_unknown, planned_frames, resampled_length
from pipeline.io.discovery import FileRef, Header
from pipeline.plan.partition import PartitionSpec, WorkItem, plan_partitions
from pipeline.plan.splits import SplitUnit, assign_splits
from pipeline.quality.provenance import quality_fingerprint
from pipeline.run.context import BankFile, RunContext
from pipeline.store.layout import FORMAT_VERSION, Layout, make_layout
from pipeline.store.location import StoreLocation
from pipeline.store.state import StoreState, read_state

ACTIVE = ("ok", "flagged")


@dataclass
class RunPlan:
    run_id: str
    started: str
    loaded: LoadedCatalog
    location: StoreLocation
    layout: Layout
    fingerprint: str
    ctx: RunContext
    partitions: list[PartitionSpec]
    allocated: int
    """Axis-0 length the feature arrays need after this run."""
    previous: StoreState | None
    keep_ids: set[str] = field(default_factory=set)
    replaced_ids: set[str] = field(default_factory=set)
    removed_ids: set[str] = field(default_factory=set)
    probe_rejects: list[dict[str, Any]] = field(default_factory=list)
    kept_reject_ids: set[str] = field(default_factory=set)
    discovered: int = 0
    planned_audio_seconds: float = 0.0
    forced_splits: dict[str, str] = field(default_factory=dict)
    """example id -> split a manifest forces (duplicate clusters must respect it)."""

    @property
    def up_to_date(self) -> bool:
        return not self.partitions and not self.removed_ids and not self.replaced_ids and not self.probe_rejects

    @property
    def store_url(self) -> str:
        return self.location.url


def new_run_id() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def copy_length_factor(loaded: LoadedCatalog) -> float:
    """How much longer an augmented copy can be than its source (stretch/speed below 1)."""
    factor = 1.0
    for t in loaded.catalog.augment.waveform:
        d = t.model_dump()
        if d.get("name") == "time_stretch":
            factor /= min(float(d.get("min_rate", 1.0)), 1.0)
        elif d.get("name") == "speed":
            lows = [float(x) for x in d.get("factors") or []] + ([float(d["min_factor"])] if d.get("min_factor") is not None else [])
            if lows:
                factor /= min(min(lows), 1.0)
    return factor * 1.01


#: ``audio`` keys added after stores were written: left out of the fingerprint at their
#: default, so a store written before the key existed stays up to date; any other value is
#: fingerprinted (it changes which files are admitted).
LATER_AUDIO_KEYS = ("max_source_sample_rate", "channels", "pad_channels")


def fingerprinted_audio(audio: Any) -> dict[str, Any]:
    dumped = audio.model_dump(mode="json")
    defaults = type(audio)().model_dump(mode="json")
    return {k: v for k, v in dumped.items() if not (k in LATER_AUDIO_KEYS and v == defaults[k])}


def fingerprint(loaded: LoadedCatalog, layout: Layout) -> str:
    """Hash of every setting that changes computed bytes; a store only holds one."""
    c = loaded.catalog
    payload = {
        "format": FORMAT_VERSION,
        "audio": fingerprinted_audio(c.audio),
        "features": build_feature_set(c.features, c.audio.sample_rate).params(),
        "augment": c.augment.model_dump(mode="json"),
        "seed": c.seed,
        "layout": layout.to_dict(),
    }
    payload.update(quality_fingerprint(c))  # only non-default sections: older stores stay valid
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


#: The catalog sections whose settings change the stored bytes (the fingerprint's inputs).
FINGERPRINTED = ("audio", "features", "augment", "seed", "output.dtype", "execution.partition_seconds", "quality")


def check_fingerprint(prev: StoreState | None, fp: str, location: StoreLocation, loaded: LoadedCatalog | None = None) -> None:
    """Raise StoreError when the committed store was written with other settings than ``fp``'s,
    naming the settings that changed (when the store recorded its catalog) and the ways out."""
    if prev is None or prev.fingerprint == fp:
        return
    changed = settings_changed(prev.meta.get("catalog") or {}, loaded.redacted) if loaded is not None else []
    what = "; ".join(changed[:8]) + ("; ..." if len(changed) > 8 else "") if changed else f"fingerprint {prev.fingerprint}, now {fp}"
    raise StoreError(
        f"output.store {location.url} was written with other audio/feature/augment/output.dtype/quality settings ({what}). "
        "Point output.store at a new path, or rerun with --overwrite to rebuild it."
    )


def settings_changed(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """``key.path: old -> new`` for every fingerprinted setting that differs between two
    catalogs as written (a key left out reads as ``(default)``)."""

    def flat(d: Any, prefix: str) -> dict[str, Any]:
        if isinstance(d, dict):
            out: dict[str, Any] = {}
            for k, v in d.items():
                out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
            return out
        return {prefix: d}

    a, b = flat(before, ""), flat(after, "")
    keys = sorted(
        k
        for k in a.keys() | b.keys()
        if any(k == s or k.startswith(s + ".") for s in FINGERPRINTED) and a.get(k, "(default)") != b.get(k, "(default)")
    )
    return [f"{k}: {a.get(k, '(default)')} -> {b.get(k, '(default)')}" for k in keys]


def make_run_layout(loaded: LoadedCatalog, previous: StoreState | None = None) -> Layout:
    """The layout of this run's feature arrays. A store keeps the chunk and shard sizes it was
    created with (a later release may size new stores differently): when ``previous`` recorded
    a layout that differs from the one made now only in those, it is the one used."""
    made = _made_layout(loaded)
    stored = (previous.meta.get("layout") if previous is not None else None) or None
    if stored:
        old = Layout.from_dict(stored)
        if dataclasses.replace(old, chunk=made.chunk, shard=made.shard) == made:
            return old
    return made


def _made_layout(loaded: LoadedCatalog) -> Layout:
    c = loaded.catalog
    fset = build_feature_set(c.features, c.audio.sample_rate)
    channels = c.audio.kept_channels
    shapes = {k: ((channels, *v) if channels else tuple(v)) for k, v in fset.frame_shapes().items()}
    if c.audio.clip.mode == "fixed":
        n = int(round(c.audio.clip.seconds * c.audio.sample_rate))
        frames = fset.n_frames(n)
        nominal = max(1, int(c.execution.partition_seconds / c.audio.clip.seconds))
        return make_layout(shapes, dense_frames=frames, nominal_partition_len=nominal, dtype=c.output.dtype, channels=channels)
    nominal = int(c.execution.partition_seconds * c.audio.sample_rate / fset.hop_length)
    return make_layout(shapes, dense_frames=0, nominal_partition_len=nominal, dtype=c.output.dtype, channels=channels)


def build_plan(
    loaded: LoadedCatalog,
    refs: list[FileRef],
    headers: dict[str, Header],
    bank_refs: list[FileRef],
    *,
    location: StoreLocation,
    run_id: str | None = None,
    previous: StoreState | None | str = "read",
) -> RunPlan:
    """Decide the work of a run from the listed files, their headers and the store's state.

    ``previous`` is the committed state when the caller already read it (under the lock);
    by default it is read here.
    """
    c = loaded.catalog
    prev = read_state(location) if previous == "read" else previous
    layout = make_run_layout(loaded, prev)
    fp = fingerprint(loaded, layout)
    check_fingerprint(prev, fp, location, loaded)
    fset = build_feature_set(c.features, c.audio.sample_rate)
    chain = build_chain(c.augment)
    sr = c.audio.sample_rate

    secrets = sorted(set(secret_values({s.name: s.storage_options for s in c.sources}) + secret_values(c.output.storage_options)))
    prev_rows = prev.originals() if prev else {}
    prev_rejects = prev.rejects_by_id() if prev else {}
    keep, replaced, kept_rejects = set(), set(), set()
    probe_rejects: list[dict[str, Any]] = []
    todo: list[FileRef] = []
    seen: set[str] = set()
    for ref in refs:
        seen.add(ref.example_id)
        old = prev_rows.get(ref.example_id)
        if old is not None and old["content_key"] == ref.content_key:
            keep.add(ref.example_id)
            continue
        rj = prev_rejects.get(ref.example_id)
        if rj is not None and rj["content_key"] == ref.content_key:
            kept_rejects.add(ref.example_id)
            continue
        if old is not None:
            replaced.add(ref.example_id)
        h = headers.get(ref.example_id)
        problem = _header_problem(ref, h, c)
        if problem:
            problem["message"] = scrub(problem["message"], secrets)
            probe_rejects.append(problem)
            continue
        todo.append(ref)
    removed = {i for i in prev_rows if i not in seen}

    previous_split = prev.group_splits() if prev else {}
    by_tags = c.splits.stratify == "tags"
    if prev:
        previous_counts = (prev.split_tag_counts if by_tags else prev.split_label_counts)(exclude=removed | replaced)
    else:
        previous_counts = Counter()
    units = [SplitUnit(r.example_id, r.group, r.label if c.splits.stratify == "label" else "", r.split,
                       tuple(json.loads(r.tags)) if by_tags and r.tags else ()) for r in todo]
    splits = assign_splits(
        units, c.splits.fractions(), seed=c.split_seed, by=c.splits.by, stratify="tags" if by_tags else c.splits.stratify == "label",
        previous=previous_split, previous_counts=previous_counts,
    )

    items = []
    for r in sorted(todo, key=lambda r: (r.source, r.rel_path)):
        h = headers[r.example_id]
        split = splits[r.example_id]
        copies = chain.copies if split in chain.splits else 0
        frames = planned_frames(h.frames, h.sample_rate, c.audio.max_seconds)  # a stream of unknown length: decoded up to max_seconds
        items.append(WorkItem(r.example_id, r.source, r.rel_path, r.url, r.content_key, r.label, r.group, split, copies, frames,
                              h.sample_rate, h.channels, text=r.text, tags=r.tags))

    start = prev.allocated if prev else 0
    parts = plan_partitions(
        items, layout=layout, start=start, partition_seconds=c.execution.partition_seconds, target_sr=sr,
        n_frames=fset.n_frames, copy_length_factor=copy_length_factor(loaded), fingerprint=fp,
        segment_seconds=c.audio.max_seconds if c.audio.long_files == "split" else None,
    )
    allocated = (parts[-1].start + parts[-1].capacity) if parts else start

    src_opts = {s.name: s.storage_options for s in c.sources}
    secrets = tuple(sorted(set(secret_values(src_opts) + secret_values(c.output.storage_options))))
    ctx = RunContext(
        store_url=location.url,
        store_options=location.storage_options,
        layout=layout,
        features=c.features,
        audio=c.audio,
        augment=c.augment,
        seed=c.seed,
        source_options=src_opts,
        source_cache={s.name: (s.cache, s.cache_dir) for s in c.sources},
        bank_files=tuple(BankFile(b.source, b.url) for b in bank_refs),
        fetch_concurrency=c.execution.fetch_concurrency,
        secrets=secrets,
        quality=c.quality,
    )
    return RunPlan(
        run_id=run_id or new_run_id(),
        started=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        loaded=loaded,
        location=location,
        layout=layout,
        fingerprint=fp,
        ctx=ctx,
        partitions=parts,
        allocated=allocated,
        previous=prev,
        keep_ids=keep,
        replaced_ids=replaced,
        removed_ids=removed,
        probe_rejects=probe_rejects,
        kept_reject_ids=kept_rejects,
        discovered=len(refs),
        planned_audio_seconds=sum(p.audio_seconds for p in parts),
        forced_splits={r.example_id: r.split for r in todo if r.split},
    )


def refs_needing_probe(refs: list[FileRef], prev: StoreState | None) -> list[FileRef]:
    """Files whose content is not already in the store (as an example or a reject)."""
    if prev is None:
        return list(refs)
    known = {i: r["content_key"] for i, r in prev.originals().items()}
    known.update({i: r["content_key"] for i, r in prev.rejects_by_id().items()})
    return [r for r in refs if known.get(r.example_id) != r.content_key]


def _header_problem(ref: FileRef, h: Header | None, c) -> dict[str, Any] | None:
    def rej(stage: str, cls: str, msg: str) -> dict[str, Any]:
        return {"id": ref.example_id, "source": ref.source, "path": ref.rel_path, "content_key": ref.content_key,
                "stage": stage, "error_class": cls, "message": f"{ref.rel_path}: {msg}"[:500]}

    if ref.text_missing:
        return rej("labels", "MissingTranscript", ref.text_missing)
    if h is None:
        return rej("probe", "MissingHeader", "header was not probed")
    if h.error:
        if ref.size_bytes == 0:
            return rej("probe", "EmptyFile", "zero-byte file; remove it or re-export it")
        return rej("probe", h.error_class or "HeaderError", f"not a readable audio file ({h.error}); check the file or remove it")
    if h.channels > c.audio.max_channels:
        return rej("limits", "TooManyChannels", f"{h.channels} channels > audio.max_channels={c.audio.max_channels}")
    if h.sample_rate <= 0:
        return rej("probe", "HeaderError", f"invalid sample rate {h.sample_rate}")
    limits = header_limits_problem(h, ref.size_bytes, max_channels=c.audio.max_channels, max_sample_rate=c.audio.max_source_sample_rate)
    if limits is not None:
        return rej(*limits)
    if h.duration_seconds > c.audio.max_seconds and c.audio.long_files == "reject" and not length_unknown(h.frames):
        return rej("limits", "TooLong", f"{h.duration_seconds:.1f} s > audio.max_seconds={c.audio.max_seconds:g}; raise it, or set audio.long_files: split")
    if h.frames == 0:
        return rej("probe", "NoSamples", "header declares no samples (header only or truncated)")
    return None


def audio_seconds_of(headers: dict[str, Header]) -> float:
    return sum(h.duration_seconds for h in headers.values() if not h.error)


__all__ = ["RunPlan", "build_plan", "new_run_id", "resampled_length"]
