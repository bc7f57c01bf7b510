"""``audioprep report``: PNG figures about a store and one offline HTML page that embeds them.

Sections: class balance, durations, spectrograms, augmented copies beside their source,
summary-feature distributions, quality metrics and duplicate clusters (quality_page),
rejects. A section that does not apply to a store (no augmented copies, no summaries, no
rejects, no feature with several bins per frame) stays on the page with one sentence saying why.

Figures are drawn on ``matplotlib.figure.Figure`` objects (the Agg canvas, no pyplot and
so no global state); the page embeds each PNG as a data URI, has no script, and loads
nothing from the network, so it opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import json
import math
import pathlib
import textwrap
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator

from pipeline.errors import ConfigError, StoreError

DPI = 100
SPLIT_ORDER = ("train", "val", "test")
SPLIT_COLOURS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}
PER_LABEL = 3
"""Spectrograms drawn per label."""
MAX_LABELS = 8
"""Labels shown in the spectrogram grid and the summary histograms."""
MAX_PAIRS = 4
"""Augmented copies shown beside their source."""
MAX_SUMMARY_COLUMNS = 4
FEATURE_UNITS = {
    "log_mel": "dB",
    "mel": "power, linear",
    "spectrogram": "abs(STFT)^power, linear",
    "mfcc": "cepstral coefficient of dB",
    "chroma": "energy / frame max",
    "rms": "amplitude, linear, full scale 1",
    "zero_crossing_rate": "crossings per sample",
    "spectral_centroid": "Hz",
    "spectral_bandwidth": "Hz",
    "spectral_rolloff": "Hz",
    "spectral_flatness": "ratio, 0-1",
    "spectral_contrast": "dB",
}
"""The unit of each built-in feature's values (and so of its summary columns)."""
MAX_REJECT_ROWS = 200
FIXED_FILES = ("class_balance.png", "durations.png", "spectrograms.png", "summaries.png")


# --- value types -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FigureFile:
    """One PNG written in the report folder."""

    file: str
    title: str
    caption: str
    width_px: int
    height_px: int


@dataclass(frozen=True, slots=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(slots=True)
class Section:
    key: str
    title: str
    note: str = ""
    """One sentence: what the section shows, or why it is skipped for this store."""
    figures: list[FigureFile] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SpecView:
    """How to draw one 2-D feature as an image."""

    name: str
    y_axis: str | None
    """``mel``, ``linear`` (Hz axes) or None (bin index)."""
    to_db: float
    """0 when the stored values are already in dB; else the power (1 or 2) to convert from."""
    unit: str
    fmin: float
    fmax: float
    htk: bool
    n_fft: int


# --- drawing helpers shared with preview.py ---------------------------------------------
def spectrogram_view(feature_shapes: dict[str, Sequence[int]], feature_params: dict[str, Any], sample_rate: int) -> SpecView | None:
    """Pick the feature to draw as a spectrogram: log_mel, mel, spectrogram, else the first 2-D one.

    Returns None when no feature has more than one value per frame.
    """
    two_d = [n for n, s in feature_shapes.items() if int(np.prod(s)) > 1]
    if not two_d:
        return None
    name = next((n for n in ("log_mel", "mel", "spectrogram") if n in two_d), two_d[0])
    p = dict(feature_params.get(name) or {})
    n_fft = int((feature_params.get("stft") or {}).get("n_fft", 2048))
    fmin = float(p.get("fmin") or 0.0)
    fmax = float(p.get("fmax") or sample_rate / 2)
    htk = bool(p.get("htk", False))
    if name == "log_mel":
        return SpecView(name, "mel", 0.0, "dB", fmin, fmax, htk, n_fft)
    if name == "mel":
        return SpecView(name, "mel", float(p.get("power", 2.0)), "dB", fmin, fmax, htk, n_fft)
    if name == "spectrogram":
        return SpecView(name, "linear", float(p.get("power", 2.0)), "dB", 0.0, sample_rate / 2, False, n_fft)
    return SpecView(name, None, 0.0, "value", 0.0, sample_rate / 2, False, n_fft)


def display_values(x: np.ndarray, view: SpecView) -> np.ndarray:
    """(frames, bins) values as drawn: dB for power or magnitude features, else unchanged."""
    x = np.asarray(x, dtype=np.float32).reshape(x.shape[0], -1)
    if view.to_db:
        x = (20.0 / view.to_db) * np.log10(np.maximum(x, 1e-10))  # |X|**p -> 20 log10 |X|
    return x


def colour_limits(images: Sequence[np.ndarray], view: SpecView) -> tuple[float, float]:
    """Shared colour scale: the top 80 dB for dB images, the 1st..99th percentile otherwise."""
    vals = np.concatenate([np.ravel(im) for im in images if im.size]) if images else np.zeros(1)
    vals = vals[np.isfinite(vals)]
    if not vals.size:
        return 0.0, 1.0
    hi = float(np.max(vals)) if view.unit == "dB" else float(np.percentile(vals, 99))
    lo = max(float(np.min(vals)), hi - 80.0) if view.unit == "dB" else float(np.percentile(vals, 1))
    return (lo, hi) if hi > lo else (lo - 1.0, lo + 1.0)


def draw_spectrogram(ax, x: np.ndarray, view: SpecView, *, sample_rate: int, hop_length: int, vmin: float, vmax: float):
    """Draw (frames, bins) display values on ``ax``: time in seconds, mel or linear axis in Hz."""
    import librosa.display

    kwargs: dict[str, Any] = {"n_fft": view.n_fft}
    if view.y_axis == "mel":
        kwargs.update(fmin=view.fmin, fmax=view.fmax, htk=view.htk)
    img = librosa.display.specshow(
        x.T, sr=sample_rate, hop_length=hop_length, x_axis="s", y_axis=view.y_axis, ax=ax,
        vmin=vmin, vmax=vmax, cmap="magma", **kwargs,
    )
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz)" if view.y_axis else f"{view.name} bin")
    if view.y_axis:
        frequency_ticks(ax, view.fmin, min(view.fmax, sample_rate / 2))
    return img


def frequency_ticks(ax, fmin: float, fmax: float) -> list[float]:
    """Keep the frequency axis's ticks inside [fmin, fmax] and label fmax itself.

    The image's outer bin edges reach past the band (the top mel band's upper edge lies
    above the Nyquist frequency), and the axis locator ticks what the axis spans: 8192 Hz
    on a 16 kHz clip. Ticks above ``fmax`` (or below ``fmin``) are dropped; ``fmax`` is
    added when the highest tick left is more than a third below it. Returns the ticks.
    """
    lo, hi = sorted(ax.get_ylim())
    ticks = [float(t) for t in ax.get_yticks() if max(lo, fmin) - 1e-6 <= t <= min(hi, fmax) + 1e-6]
    if fmax <= hi + 1e-6 and (not ticks or ticks[-1] < fmax / 1.5):
        ticks.append(float(fmax))
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    return ticks


def colourbar_label(view: SpecView) -> str:
    return f"{view.name} (dB)" if view.unit == "dB" else view.name


def new_figure(width_in: float, height_in: float) -> Figure:
    return Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")


def save_figure(fig: Figure, out: pathlib.Path, file: str, title: str, caption: str) -> FigureFile:
    """Write ``fig`` as ``out/file`` (figsize x DPI) and describe it with the PNG's own size.

    The size is read back from the PNG header: matplotlib 3.8 truncates figsize x DPI
    (11.4 in x 100 -> 1139 px) where later releases round it.
    """
    fig.savefig(out / file, dpi=DPI, facecolor="white")
    with open(out / file, "rb") as f:
        header = f.read(24)  # signature (8), IHDR length and type (8), width, height
    w, h = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    return FigureFile(file, title, caption, w, h)


def format_drawn(drawn: Sequence[dict[str, Any]]) -> str:
    """``gain(gain_db=-3.2); time_mask(masks=[start_frame=26 width_frames=4], ...)``."""
    parts = []
    for t in drawn:
        args = ", ".join(f"{k}={_fmt(v)}" for k, v in t.items() if k != "name")
        parts.append(f"{t.get('name', '?')}({args})")
    return "; ".join(parts) or "no transform drawn"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict):
        return " ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


# --- the report ------------------------------------------------------------------------
def write_report(url: str, out: str, *, version: int | None = None, storage_options: dict[str, Any] | None = None) -> str:
    """Write the figures of store ``url`` and ``out/index.html``; return the page's path.

    Raises
    ------
    StoreError
        ``url`` holds no committed store (or not ``version``).
    ConfigError
        ``out`` exists and is not a folder.
    """
    page, _, _ = _build(url, out, version=version, storage_options=storage_options)
    return page


def markdown_report(url: str, *, out: str = "report", version: int | None = None, storage_options: dict[str, Any] | None = None) -> str:
    """The report as Markdown (for a Prefect markdown artifact); figures linked by absolute path.

    Writes the same files as :func:`write_report` into ``out``.
    """
    page, info, sections = _build(url, out, version=version, storage_options=storage_options)
    folder = pathlib.Path(page).parent
    lines = [f"# audioprep report: {info.get('dataset')} (version {info['version']})", "", f"Store `{url}`; HTML page `{page}`.", ""]
    lines += [f"> warning: {w}" for w in info.get("warnings") or []]
    for s in sections:
        lines += ["", f"## {s.title}", ""]
        if s.note:
            lines += [s.note, ""]
        for t in s.tables:
            lines += ["| " + " | ".join(t.header) + " |", "|" + "---|" * len(t.header)]
            lines += ["| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in t.rows]
            lines.append("")
        for f in s.figures:
            lines += [f"![{f.title}]({(folder / f.file).as_posix()})", "", f"*{f.caption}*", ""]
    return "\n".join(lines).rstrip() + "\n"


def _build(url: str, out: str, *, version: int | None, storage_options: dict[str, Any] | None) -> tuple[str, dict[str, Any], list[Section]]:
    from pipeline.report.export import table_columns
    from pipeline.report.inspect import describe
    from pipeline.report.quality_page import quality_sections
    from pipeline.store.reader import open_dataset

    folder = pathlib.Path(out)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {out}: is a file; pass a folder for the report")
    info = describe(url, version=version, storage_options=storage_options)
    ds = open_dataset(url, version=info["version"], normalize=False, storage_options=storage_options)
    folder.mkdir(parents=True, exist_ok=True)
    for old in [*folder.glob("copy_*.png"), *(folder / f for f in FIXED_FILES)]:  # only what a previous report wrote
        old.unlink(missing_ok=True)
    sections = [
        _overview(info),
        _balance(info, folder),
        _durations(ds, folder),
        _spectrograms(ds, folder),
        _copies(ds, folder),
        _summaries(lambda: table_columns(url, "summaries", version=info["version"], storage_options=storage_options), ds.feature_names, folder),
        *quality_sections(ds, folder),
        _transcripts(info),
        _rejects(table_columns(url, "rejects", version=info["version"], storage_options=storage_options)),
    ]
    title = f"audioprep report: {info.get('dataset')} (version {info['version']})"
    intro = f"Store {url}, layout {info.get('layout')}, normalization {info.get('normalization')}, catalog hash {info.get('catalog_hash')}."
    page = folder / "index.html"
    page.write_text(render_html(title, intro, sections, folder, warnings=info.get("warnings") or []), encoding="utf-8")
    return str(page), info, sections


def _overview(info: dict[str, Any]) -> Section:
    counts, durations, copies = info["counts"], info["durations"], info.get("augmented_copies") or {}
    rows = []
    for split in _splits(counts):
        d = durations.get(split, {})
        rows.append((split, str(sum(counts[split].values())), str(copies.get(split, 0)), f"{d.get('hours', 0.0):.3f}",
                     f"{d.get('min_s', 0.0):.2f} / {d.get('mean_s', 0.0):.2f} / {d.get('max_s', 0.0):.2f}"))
    from pipeline.report.summary import feature_order

    feats = tuple((n, " x ".join(map(str, info["features"][n].get("frame_shape") or [])) or "1", info["features"][n]["dtype"])
                  for n in feature_order(info))
    return Section(
        "overview", "Overview",
        f"{sum(int(r[1]) for r in rows)} examples in {len(rows)} split(s), {info['rejects']} rejected file(s).",
        tables=[Table(("split", "examples", "augmented copies", "hours", "min / mean / max seconds"), tuple(rows)),
                Table(("feature", "values per frame", "dtype"), feats)],
    )


def _transcripts(info: dict[str, Any]) -> Section:
    stats, tags = info.get("transcripts") or {}, info.get("tag_counts") or {}
    sec = Section("transcripts", "Transcripts and tags", "Original examples only.")
    if not stats and not tags:
        sec.note = "No example of this store has a transcript or tags (sources[].text, sources[].tags)."
        return sec
    tables = []
    if stats:
        rows = tuple((s, str(v["examples_with_text"]), str(v["characters"]), str(v["words"]), f"{v['chars_per_second']:.1f}",
                      f"{v['words_per_example']:.1f}") for s, v in ((s, stats[s]) for s in _splits(stats)))
        tables.append(Table(("split", "with text", "characters", "words", "characters / s", "words / example"), rows))
        sec.note = (f"Original examples only. Train vocabulary: {len(info.get('text_vocab') or [])} characters "
                    f"({''.join(info.get('text_vocab') or [])!r}). Examples outside their source's characters-per-second "
                    "bounds are flagged text_rate.")
    if tags:
        names = sorted({t for c in tags.values() for t in c})
        tables.append(Table(("tag", *_splits(tags)), tuple((t, *(str(tags[s].get(t, 0)) for s in _splits(tags))) for t in names)))
    sec.tables = tables
    return sec


def _splits(keys) -> list[str]:
    return sorted(keys, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER), s))


def _balance(info: dict[str, Any], out: pathlib.Path) -> Section:
    counts = info["counts"]
    splits = _splits(counts)
    labels = sorted({lab for c in counts.values() for lab in c})
    sec = Section("balance", "Examples per label and split", "Original examples only; augmented copies are counted in the overview.")
    if not labels:
        sec.note = "The store holds no example, so there is nothing to count."
        return sec
    fig = new_figure(min(20.0, max(7.0, 0.35 * len(labels) * len(splits) + 2.5)), 4.5)
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    width = 0.8 / len(splits)
    for j, split in enumerate(splits):
        bars = ax.bar(x + (j - (len(splits) - 1) / 2) * width, [counts[split].get(lab, 0) for lab in labels], width,
                      label=split, color=SPLIT_COLOURS.get(split))
        if len(labels) * len(splits) <= 40:
            ax.bar_label(bars, fontsize=8, padding=1)
    ax.set_xticks(x, labels, rotation=45 if len(labels) > 8 else 0, ha="right" if len(labels) > 8 else "center")
    ax.set_xlabel("label")
    ax.set_ylabel("examples")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("examples per label and split")
    ax.margins(y=0.12)
    ax.legend(title="split")
    caption = "Bars: original examples of each label, one colour per split."
    sec.figures.append(save_figure(fig, out, "class_balance.png", "Examples per label and split", caption))
    return sec


def _durations(ds, out: pathlib.Path) -> Section:
    t = ds.table
    orig = t["copy"] == 0
    splits = _splits(set(t["split"][orig].tolist()))
    sec = Section("durations", "Duration per split", "Clip durations in the store (after any fixed-length clipping), originals only.")
    if not splits:
        sec.note = "The store holds no example, so there is no duration to show."
        return sec
    secs = np.asarray(t["duration_seconds"][orig], dtype=float)
    edges = np.histogram_bin_edges(secs, bins=min(40, max(5, int(np.sqrt(secs.size)) * 2)))
    fig = new_figure(max(7.0, 3.6 * len(splits)), 3.6)
    axes = fig.subplots(1, len(splits), sharex=True, squeeze=False)[0]
    for ax, split in zip(axes, splits):
        v = secs[t["split"][orig] == split]
        ax.hist(v, bins=edges, color=SPLIT_COLOURS.get(split, "#7f7f7f"), edgecolor="white")
        ax.set_title(f"{split}: {v.size} clips, mean {v.mean():.2f} s")
        ax.set_xlabel("duration (s)")
        ax.set_ylabel("examples")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    sec.figures.append(save_figure(fig, out, "durations.png", "Duration histogram per split", "Histogram of clip durations, one panel per split, shared bins."))
    return sec


def _sample_rows(t: dict[str, np.ndarray], mask: np.ndarray, labels: Sequence[str], per_label: int) -> dict[str, list[int]]:
    """Up to ``per_label`` row positions per label, taken in id order (ids are hashes: a fair sample)."""
    pos = np.flatnonzero(mask)
    pos = pos[np.argsort(t["id"][pos].astype(str), kind="stable")]
    out: dict[str, list[int]] = {lab: [] for lab in labels}
    for p in pos:
        lab = str(t["label"][p])
        if lab in out and len(out[lab]) < per_label:
            out[lab].append(int(p))
    return {k: v for k, v in out.items() if v}


def _view(ds) -> SpecView | None:
    shapes = {n: ds.meta["layout"]["feature_shapes"][n] for n in ds.feature_names}
    return spectrogram_view(shapes, ds.meta.get("feature_params") or {}, int(ds.meta["sample_rate"]))


def _spectrograms(ds, out: pathlib.Path) -> Section:
    sec = Section("spectrograms", "Spectrograms")
    view = _view(ds)
    if view is None:
        sec.note = f"No feature of this store has more than one value per frame ({', '.join(ds.feature_names)}), so there is no spectrogram to draw."
        return sec
    t = ds.table
    labels = sorted(set(t["label"][t["copy"] == 0].tolist()))
    picked = _sample_rows(t, t["copy"] == 0, labels[:MAX_LABELS], PER_LABEL)
    if not picked:
        sec.note = "The store holds no example, so there is no spectrogram to draw."
        return sec
    sr, hop = int(ds.meta["sample_rate"]), int(ds.meta["hop_length"])
    images = {p: display_values(ds[p]["features"][view.name], view) for rows in picked.values() for p in rows}
    vmin, vmax = colour_limits(list(images.values()), view)
    n_rows, n_cols = len(picked), max(len(v) for v in picked.values())
    fig = new_figure(3.4 * n_cols + 1.2, 2.5 * n_rows + 0.5)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    img = None
    for r, (lab, rows) in enumerate(picked.items()):
        for c in range(n_cols):
            ax = axes[r][c]
            if c >= len(rows):
                ax.set_axis_off()
                continue
            p = rows[c]
            img = draw_spectrogram(ax, images[p], view, sample_rate=sr, hop_length=hop, vmin=vmin, vmax=vmax)
            ax.set_title(f"{lab} · {t['split'][p]} · {pathlib.PurePosixPath(str(t['path'][p])).name}", fontsize=9)
            if c:
                ax.set_ylabel("")
    fig.colorbar(img, ax=axes, label=colourbar_label(view), format="%+.0f" if view.unit == "dB" else None)
    more = f" (the first {MAX_LABELS} of {len(labels)} labels)" if len(labels) > MAX_LABELS else ""
    sec.note = f"{view.name} of up to {PER_LABEL} original examples per label{more}, as stored (no normalization), one colour scale."
    caption = f"Rows: labels; columns: examples. Hop {hop} samples at {sr} Hz ({1000 * hop / sr:.1f} ms per frame)."
    sec.figures.append(save_figure(fig, out, "spectrograms.png", f"{view.name} per label", caption))
    return sec


def _copies(ds, out: pathlib.Path) -> Section:
    sec = Section("copies", "Augmented copies beside their source")
    t = ds.table
    is_copy = t["copy"] > 0
    if not is_copy.any():
        sec.note = "This store has no augmented copies (`augment.copies` is 0 in the catalog, or no split gets copies), so there is nothing to compare."
        return sec
    view = _view(ds)
    if view is None:
        sec.note = "No feature of this store has more than one value per frame, so copies cannot be drawn as spectrograms."
        return sec
    row_of = {str(i): k for k, i in enumerate(t["id"])}
    labels = sorted(set(t["label"][is_copy].tolist()))
    per_label = _sample_rows(t, is_copy, labels, MAX_PAIRS)
    order = [rows[k] for k in range(MAX_PAIRS) for rows in per_label.values() if k < len(rows)]  # round-robin over labels
    pairs = [(row_of[str(t["parent"][p])], p) for p in order if str(t["parent"][p]) in row_of][:MAX_PAIRS]
    sr, hop = int(ds.meta["sample_rate"]), int(ds.meta["hop_length"])
    sec.note = (f"{int(is_copy.sum())} augmented copies in the store; {len(pairs)} shown, each beside the example it was made from "
                f"({view.name}, one colour scale per pair). Captions list the drawn transform parameters.")
    for k, (src, cp) in enumerate(pairs):
        drawn = format_drawn(json.loads(str(t["augment"][cp]) or "[]"))
        a = display_values(ds[src]["features"][view.name], view)
        b = display_values(ds[cp]["features"][view.name], view)
        vmin, vmax = colour_limits([a, b], view)
        fig = new_figure(11.0, 3.9)
        axes = fig.subplots(1, 2)
        draw_spectrogram(axes[0], a, view, sample_rate=sr, hop_length=hop, vmin=vmin, vmax=vmax)
        img = draw_spectrogram(axes[1], b, view, sample_rate=sr, hop_length=hop, vmin=vmin, vmax=vmax)
        axes[0].set_title("source", fontsize=10)
        axes[1].set_title(wrap(f"copy {int(t['copy'][cp])}: {drawn}", 70), fontsize=8)
        fig.suptitle(f"{t['label'][cp]} · {t['path'][cp]}", fontsize=10)
        fig.colorbar(img, ax=axes, label=colourbar_label(view))
        caption = f"{t['path'][cp]} ({t['split'][cp]}), copy {int(t['copy'][cp])}: {drawn}"
        sec.figures.append(save_figure(fig, out, f"copy_{k:02d}.png", f"copy of {t['path'][cp]}", caption))
    return sec


def _summaries(load, feature_names: Sequence[str], out: pathlib.Path) -> Section:
    sec = Section("summaries", "Summary-feature distributions")
    try:
        cols = load()
    except StoreError:
        sec.note = "This store has no summary columns; add `features.summaries: [mean, std]` to the catalog to see their distributions."
        return sec
    base = {"id", "parent", "copy", "source", "path", "label", "group", "split", "duration_seconds"}
    names = [k for k in cols if k not in base]
    orig = np.asarray(cols["copy"]) == 0
    y = np.asarray(cols["label"], dtype=object)[orig]
    labels = sorted(set(y.tolist()))[:MAX_LABELS]
    chosen = _pick_columns(cols, names, orig, y, feature_names)
    if not chosen or len(labels) < 1:
        sec.note = "The summary columns are constant or empty, so there is no distribution to draw."
        return sec
    n_cols = min(2, len(chosen))
    n_rows = math.ceil(len(chosen) / n_cols)
    fig = new_figure(5.5 * n_cols, 3.3 * n_rows + 0.6)
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    cmap = _label_colours(labels)
    for ax, name in zip(axes, chosen):
        v = np.asarray(cols[name], dtype=float)[orig]
        edges = np.histogram_bin_edges(v[np.isfinite(v)], bins=20)
        for lab in labels:
            ax.hist(v[y == lab], bins=edges, histtype="step", linewidth=1.6, color=cmap[lab], label=lab)
        ax.set_xlabel(summary_axis_label(name, feature_names))
        ax.set_ylabel("examples")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[len(chosen):]:
        ax.set_axis_off()
    handles, lab_names = axes[0].get_legend_handles_labels()
    fig.legend(handles, lab_names, loc="outside lower center", ncols=min(len(labels), 8), title="label")
    sec.note = (f"Histograms per label of {len(chosen)} of the {len(names)} summary columns: those whose values differ most "
                "between labels (largest between/within variance ratio), taken in turn from each feature; originals only.")
    sec.figures.append(save_figure(fig, out, "summaries.png", "Summary-feature distributions", ", ".join(chosen)))
    return sec


def summary_axis_label(column: str, feature_names: Sequence[str]) -> str:
    """``spectral_centroid_mean (Hz)``: the column and the unit of the feature it summarises.

    The feature is the longest name of ``feature_names`` (else of the built-ins) that the
    column starts with; a column of an unknown feature is returned unchanged. std, min
    and max have the unit of the values.
    """
    owner = max((f for f in (*feature_names, *FEATURE_UNITS) if column.startswith(f + "_")), key=len, default="")
    unit = FEATURE_UNITS.get(owner)
    return f"{column} ({unit})" if unit else column


def _pick_columns(cols: dict[str, list], names: Sequence[str], orig: np.ndarray, y: np.ndarray, feature_names: Sequence[str]) -> list[str]:
    """The most label-separating columns, alternating between features so one feature's
    neighbouring bins do not fill every panel."""
    ranked: dict[str, list[tuple[float, str]]] = {}
    for n in names:
        f = _f_ratio(np.asarray(cols[n], dtype=float)[orig], y)
        if math.isfinite(f) or f == math.inf:
            owner = max((fn for fn in feature_names if n.startswith(fn + "_")), key=len, default="")
            ranked.setdefault(owner, []).append((f, n))
    queues = [[n for _, n in sorted(v, key=lambda fn: -fn[0])] for v in ranked.values()]
    chosen: list[str] = []
    while len(chosen) < MAX_SUMMARY_COLUMNS and any(queues):
        for q in queues:
            if q and len(chosen) < MAX_SUMMARY_COLUMNS:
                chosen.append(q.pop(0))
    return chosen


def _f_ratio(v: np.ndarray, y: np.ndarray) -> float:
    """One-way ANOVA F statistic of ``v`` grouped by ``y`` (nan when undefined)."""
    ok = np.isfinite(v)
    v, y = v[ok], y[ok]
    groups = [v[y == lab] for lab in set(y.tolist())]
    groups = [g for g in groups if g.size]
    if len(groups) < 2 or v.size <= len(groups):
        return float(np.var(v)) if v.size > 1 and np.var(v) > 0 else math.nan
    mean = v.mean()
    between = sum(g.size * (g.mean() - mean) ** 2 for g in groups) / (len(groups) - 1)
    within = sum(((g - g.mean()) ** 2).sum() for g in groups) / (v.size - len(groups))
    if between == 0:
        return math.nan
    return float(between / within) if within > 0 else math.inf


def _label_colours(labels: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}


def _rejects(cols: dict[str, list]) -> Section:
    n = len(next(iter(cols.values()), []))
    sec = Section("rejects", "Rejected files")
    if not n:
        sec.note = "No file was rejected."
        return sec
    by_stage = Counter(str(s) for s in cols.get("stage", []))
    sec.note = f"{n} file(s) rejected ({', '.join(f'{k}: {v}' for k, v in by_stage.most_common())})" + (
        f"; the first {MAX_REJECT_ROWS} are listed." if n > MAX_REJECT_ROWS else ".")
    keys = [k for k in ("source", "path", "stage", "error_class", "message") if k in cols]
    rows = tuple(tuple(str(cols[k][i])[:300] for k in keys) for i in range(min(n, MAX_REJECT_ROWS)))
    sec.tables.append(Table(tuple(keys), rows))
    return sec


# --- HTML ----------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem;color:#222}
h1{font-size:1.6rem}h2{font-size:1.25rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
nav a{margin-right:1rem}.note{color:#444}.warn{background:#fff4e5;border-left:4px solid #f0a000;padding:.4rem .8rem}
figure{margin:1rem 0}img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:.9rem;color:#555}
table{border-collapse:collapse;margin:.8rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}td{word-break:break-word;max-width:40rem}
"""


def render_html(title: str, intro: str, sections: Sequence[Section], folder: pathlib.Path, *, warnings: Sequence[str] = ()) -> str:
    """One self-contained page: PNGs embedded as data URIs (each also linked as its file), no script."""
    e = html.escape
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">', '<link rel="icon" href="data:,">',
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>", f"<p>{e(intro)}</p>",
    ]
    parts += [f'<p class="warn">warning: {e(w)}</p>' for w in warnings]
    parts.append("<nav>" + "".join(f'<a href="#{s.key}">{e(s.title)}</a>' for s in sections) + "</nav>")
    for s in sections:
        parts.append(f'<section id="{s.key}"><h2>{e(s.title)}</h2>')
        if s.note:
            parts.append(f'<p class="note">{e(s.note)}</p>')
        for t in s.tables:
            parts.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in t.header) + "</tr></thead><tbody>")
            parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in t.rows]
            parts.append("</tbody></table>")
        for f in s.figures:
            data = base64.b64encode((folder / f.file).read_bytes()).decode("ascii")
            parts.append(
                f'<figure><a href="{e(f.file)}"><img src="data:image/png;base64,{data}" alt="{e(f.title)} ({e(f.file)})" '
                f'width="{f.width_px}" height="{f.height_px}"></a><figcaption>{e(f.caption)}</figcaption></figure>'
            )
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


__all__ = ["write_report", "markdown_report", "spectrogram_view", "draw_spectrogram", "display_values", "format_drawn", "render_html"]
