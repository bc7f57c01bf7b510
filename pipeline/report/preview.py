"""``audioprep preview``: the whole feature and augmentation chain on a few files, no store.

For tuning ``n_fft``, ``hop_length`` and ``n_mels`` before a long run: ``n`` example files
of the catalog, taken across labels and groups (:func:`pick_files`), go through the same
steps as a partition worker (fetch,
decode, mono, resample, fixed-length clip, features, augmented copies with the same
per-example generators), and each file gets one figure: waveform and spectrogram of the
original and of every augmented copy, the analysis settings in the title. Nothing is
written to ``output.store``. Copies are drawn for every previewed file, whatever its split.
"""

from __future__ import annotations

import pathlib
from collections import Counter, defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

from pipeline.augment import build_chain
from pipeline.augment.chain import AugmentChain
from pipeline.config.catalog import Catalog, Clip, load_catalog
from pipeline.errors import AudioDecodeError, AudioprepError, ConfigError, SourceError
from pipeline.features import FeatureSet, build_feature_set
from pipeline.io.audio import decode, fix_length, resample, to_mono
from pipeline.io.discovery import FileRef
from pipeline.io.fetch import fetch_many
from pipeline.report.figures import (
    Section,
    SpecView,
    Table,
    colour_limits,
    colourbar_label,
    display_values,
    draw_spectrogram,
    format_drawn,
    new_figure,
    render_html,
    save_figure,
    spectrogram_view,
    wrap,
)
from pipeline.rng import example_rng
from pipeline.run.steps import discover


@dataclass(frozen=True, slots=True)
class Version:
    """One version of a clip: the original (copy 0) or an augmented copy."""

    copy: int
    y: np.ndarray
    feats: dict[str, np.ndarray]
    drawn: list[dict[str, Any]]


def run_chain(
    y: np.ndarray,
    example_id: str,
    *,
    seed: int,
    sample_rate: int,
    clip: Clip,
    fset: FeatureSet,
    chain: AugmentChain,
    banks: Mapping[str, Sequence[np.ndarray]],
) -> list[Version]:
    """The original and every augmented copy of mono ``y``, as a partition worker makes them.

    Randomness comes only from ``example_rng(seed, example_id, copy, "augment"|"crop")``,
    so a preview shows the very copies ``audioprep run`` stores for that example.
    """
    n_fixed = int(round(clip.seconds * sample_rate)) if clip.mode == "fixed" and clip.seconds else 0
    out = []
    for copy in range(chain.copies + 1):
        rng = example_rng(seed, example_id, copy, "augment") if copy else None
        yk, drawn = (y, []) if rng is None else chain.augment_waveform(y, sample_rate, rng, banks)
        if n_fixed:
            crop_rng = example_rng(seed, example_id, copy, "crop") if clip.crop == "random" else None
            yk = fix_length(yk, n_fixed, clip.crop, crop_rng)
        feats = fset.compute(yk)
        if rng is not None:
            feats, spec_drawn = chain.augment_features(feats, rng)
            drawn = [*drawn, *spec_drawn]
        out.append(Version(copy, np.asarray(yk, dtype=np.float32), feats, list(drawn)))
    return out


def pick_files(refs: Sequence[FileRef], n: int) -> list[FileRef]:
    """Up to ``n`` files spread over labels and groups, deterministically.

    Round-robin over the labels (sorted); each label's turn takes a file of the group it
    has shown least so far, among those the group used least over all picks (ties: the
    group that sorts first), and within a group the file that sorts first by (source,
    path). So the first picks cover every label, each from a different group where the
    corpus allows, and a label's later picks show its other groups, instead of the first
    ``n`` files in sorted order (one label, one speaker).
    """
    queues: dict[str, dict[str, deque[FileRef]]] = defaultdict(lambda: defaultdict(deque))
    for ref in sorted(refs, key=lambda r: (r.label, r.group, r.source, r.rel_path)):
        queues[ref.label][ref.group].append(ref)
    used: Counter[str] = Counter()
    shown: dict[str, Counter[str]] = defaultdict(Counter)
    out: list[FileRef] = []
    while len(out) < n and any(q for groups in queues.values() for q in groups.values()):
        for label in sorted(queues):
            groups = {g: q for g, q in queues[label].items() if q}
            if len(out) == n or not groups:
                continue
            group = min(groups, key=lambda g: (shown[label][g], used[g], g))
            out.append(groups[group].popleft())
            used[group] += 1
            shown[label][group] += 1
    return out


def load_banks(bank_refs: Sequence[FileRef], catalog: Catalog, names: set[str], sample_rate: int) -> dict[str, list[np.ndarray]]:
    """Mono clips at ``sample_rate`` of the noise / impulse-response sources in ``names``."""
    sources = {s.name: s for s in catalog.sources}
    by_source: dict[str, list[FileRef]] = defaultdict(list)
    for ref in bank_refs:
        if ref.source in names:
            by_source[ref.source].append(ref)
    banks: dict[str, list[np.ndarray]] = {}
    for name, refs in by_source.items():
        blobs = _fetch(refs, catalog)
        clips = []
        for ref in refs:
            data = blobs.get(ref.url)
            if isinstance(data, BaseException) or data is None:
                continue
            try:
                d = decode(data, ref.rel_path, max_seconds=3600, max_channels=64)
            except AudioDecodeError:
                continue
            clips.append(resample(to_mono(d.y), d.sample_rate, sample_rate))
        if not clips:
            raise SourceError(f"source {name} ({sources[name].url}): none of its {len(refs)} file(s) could be decoded; augmentations need its clips")
        banks[name] = clips
    return banks


def _fetch(refs: Sequence[FileRef], catalog: Catalog) -> dict[str, Any]:
    sources = {s.name: s for s in catalog.sources}
    urls: dict[str, list[str]] = defaultdict(list)
    for ref in refs:
        urls[ref.source].append(ref.url)
    blobs: dict[str, Any] = {}
    for name, u in urls.items():
        s = sources[name]
        blobs.update(fetch_many(u, dict(s.storage_options), concurrency=catalog.execution.fetch_concurrency, cache=s.cache, cache_dir=s.cache_dir))
    return blobs


def preview(catalog_path: str, *, n: int = 5, out: str = "preview") -> str:
    """Draw ``n`` example files of a catalog (:func:`pick_files`: across labels and groups)
    through the whole chain; return ``out/index.html``.

    Raises
    ------
    CatalogError, SourceError
        The catalog is invalid or a source matches nothing.
    ConfigError
        ``n`` is below 1 or ``out`` is a file.
    """
    if n < 1:
        raise ConfigError(f"--n {n}: preview at least 1 file")
    folder = pathlib.Path(out)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {out}: is a file; pass a folder for the preview")
    loaded = load_catalog(catalog_path)
    c = loaded.catalog
    sr = c.audio.sample_rate
    refs, bank_refs = discover(loaded)
    refs = pick_files(refs, n)
    fset = build_feature_set(c.features, sr)
    chain = build_chain(c.augment)
    banks = load_banks(bank_refs, c, chain.bank_sources(), sr) if chain.copies and chain.bank_sources() else {}
    params = fset.params()
    view = spectrogram_view(fset.frame_shapes(), params, sr)
    setting = _settings_line(params, view, sr)

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("file_*.png"):  # only what a previous preview wrote
        old.unlink()
    picked = f"{len(refs)} example file(s) of {catalog_path}, taken in turn from each label and from its least used group"
    files = Section("files", "Files", f"{picked}; {chain.copies} augmented cop(ies) each. {setting}.")
    failed: list[tuple[str, ...]] = []
    blobs = _fetch(refs, c)
    min_samples = fset.n_fft
    for k, ref in enumerate(refs):
        try:
            data = blobs.pop(ref.url, None)
            if isinstance(data, BaseException) or data is None:
                raise AudioDecodeError(ref.rel_path, "read", f"cannot read the file ({type(data).__name__}: {str(data)[:200]})")
            d = decode(data, ref.rel_path, max_seconds=c.audio.max_seconds, max_channels=c.audio.max_channels, min_seconds=c.audio.min_seconds)
            y = resample(to_mono(d.y), d.sample_rate, sr)
            if y.shape[0] < min_samples:
                raise AudioDecodeError(ref.rel_path, "limits", f"{y.shape[0]} samples at {sr} Hz is shorter than one analysis window (n_fft={min_samples})")
            versions = run_chain(y, ref.example_id, seed=c.seed, sample_rate=sr, clip=c.audio.clip, fset=fset, chain=chain, banks=banks)
        except (AudioprepError, ValueError) as exc:
            failed.append((ref.source, ref.rel_path, getattr(exc, "stage", "features"), str(exc)[:300]))
            continue
        fig_file = _draw_file(versions, ref, view, sr, fset.hop_length, setting, folder, f"file_{k:02d}.png")
        files.figures.append(fig_file)
    settings = Section("settings", "Settings", "Resolved feature and augmentation parameters of the catalog.", tables=[_settings_table(params, chain, c)])
    sections = [settings, files]
    if failed:
        sections.append(Section("failed", "Files that could not be processed", f"{len(failed)} file(s) would be rejected by a run.",
                                tables=[Table(("source", "path", "stage", "message"), tuple(failed))]))
    page = folder / "index.html"
    intro = f"Catalog {catalog_path}: nothing was written to the store ({c.output.store})."
    page.write_text(render_html(f"audioprep preview: {c.dataset}", intro, sections, folder), encoding="utf-8")
    return str(page)


def _settings_line(params: dict[str, Any], view: SpecView | None, sr: int) -> str:
    stft = params["stft"]
    hop = int(stft["hop_length"])
    parts = [f"n_fft={stft['n_fft']} ({1000 * stft['n_fft'] / sr:.1f} ms)", f"hop_length={hop} ({1000 * hop / sr:.1f} ms)"]
    if view is not None and "n_mels" in (params.get(view.name) or {}):
        parts.append(f"n_mels={params[view.name]['n_mels']}")
    parts.append(f"sample_rate={sr} Hz")
    return ", ".join(parts)


def _settings_table(params: dict[str, Any], chain: AugmentChain, c: Catalog) -> Table:
    clip = f" {c.audio.clip.seconds:g} s ({c.audio.clip.crop})" if c.audio.clip.mode == "fixed" else ""
    rows = [("audio", f"sample_rate={c.audio.sample_rate}, clip={c.audio.clip.mode}{clip}")]
    rows += [(name, ", ".join(f"{k}={v}" for k, v in p.items())) for name, p in params.items() if isinstance(p, dict)]
    steps = [p.model_dump() for p in (*chain.waveform, *chain.spec)]
    rows.append(("augment", f"copies={chain.copies} (stored for splits {', '.join(chain.splits)}); " + (format_drawn(steps) if steps else "no transform")))
    return Table(("section", "parameters"), tuple(rows))


def _draw_file(versions: list[Version], ref: FileRef, view: SpecView | None, sr: int, hop: int, setting: str, folder: pathlib.Path, file: str):
    import librosa.display

    rows = len(versions)
    fig = new_figure(12.0 if view else 7.0, 2.8 * rows + 1.0)
    axes = fig.subplots(rows, 2 if view else 1, squeeze=False, width_ratios=[1.0, 1.4] if view else None)
    peak = max(float(np.max(np.abs(v.y))) if v.y.size else 0.0 for v in versions) or 1.0
    images = [display_values(v.feats[view.name], view) for v in versions] if view else []
    vmin, vmax = colour_limits(images, view) if view else (0.0, 1.0)
    img = None
    for r, v in enumerate(versions):
        ax = axes[r][0]
        librosa.display.waveshow(v.y, sr=sr, ax=ax, axis="s", color="#1f77b4")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
        ax.set_ylim(-1.05 * peak, 1.05 * peak)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("amplitude")
        name = "original" if v.copy == 0 else f"copy {v.copy}"
        ax.set_title(f"{name} · {v.y.shape[0] / sr:.2f} s", fontsize=10)
        if view:
            img = draw_spectrogram(axes[r][1], images[r], view, sample_rate=sr, hop_length=hop, vmin=vmin, vmax=vmax)
            axes[r][1].set_title(wrap(f"{name}: {format_drawn(v.drawn)}" if v.copy else f"{name}: {view.name}", 80), fontsize=9)
    if view and img is not None:
        fig.colorbar(img, ax=[a[1] for a in axes], label=colourbar_label(view))
    fig.suptitle(f"{ref.rel_path} ({ref.label or 'no label'})\n{setting}", fontsize=11)
    if len(versions) > 1:
        caption = f"{ref.rel_path}: " + "; ".join(f"copy {v.copy}: {format_drawn(v.drawn)}" for v in versions[1:])
    else:
        caption = f"{ref.rel_path}: no augmentation configured"
    return save_figure(fig, folder, file, ref.rel_path, caption)


__all__ = ["preview", "pick_files", "run_chain", "load_banks", "Version"]
