"""The report's quality sections: metric distributions per split, the worst examples of each
metric with a spectrogram thumbnail, and the duplicate clusters (docs/quality.md)."""

from __future__ import annotations

import pathlib
from collections import Counter, defaultdict
from typing import Any

import numpy as np

from pipeline.report.figures import (
    SPLIT_COLOURS,
    Section,
    Table,
    _splits,
    _view,
    colour_limits,
    display_values,
    new_figure,
    save_figure,
)

#: (column, axis label, worst end: "low" or "high")
SHOWN = (
    ("loudness_lufs", "integrated loudness, LUFS", "low"),
    ("snr_db", "blind SNR estimate, dB", "low"),
    ("bandwidth_hz", "bandwidth, Hz", "low"),
    ("silence_fraction", "silence fraction", "high"),
)
WORST = 20
MAX_CLUSTERS = 20
FILES = ("quality_distributions.png", "duplicate_sizes.png", *(f"worst_{c}.png" for c, _, _ in SHOWN))


def quality_sections(ds, out: pathlib.Path) -> list[Section]:
    for f in FILES:  # only what a previous report wrote
        (out / f).unlink(missing_ok=True)
    return [_distributions(ds, out), _worst(ds, out), _duplicates(ds, out)]


def _originals(t: dict[str, np.ndarray]) -> np.ndarray:
    return np.flatnonzero(t["copy"] == 0)


def _values(t: dict[str, np.ndarray], col: str, rows: np.ndarray) -> np.ndarray:
    if col not in t:
        return np.full(rows.size, np.nan)
    v = t[col][rows].astype(float)
    return np.where(v <= -199.0, np.nan, v) if col == "loudness_lufs" else v  # the floor means "nothing to measure"


def _distributions(ds, out: pathlib.Path) -> Section:
    sec = Section("quality", "Quality metrics per split")
    t = ds.table
    rows = _originals(t)
    measured = [c for c, _, _ in SHOWN if np.isfinite(_values(t, c, rows)).any()]
    if not rows.size or not measured:
        sec.note = "No example of this store has quality metrics (a store committed before they were measured); rebuild it with --overwrite."
        return sec
    splits = _splits({str(s): 1 for s in t["split"][rows]})
    fig = new_figure(12.0, 3.2 * len(measured) / 2 + 0.6)
    axes = np.atleast_1d(fig.subplots(-(-len(measured) // 2), 2, squeeze=False)).ravel()
    for ax, (col, label, _) in zip(axes, [s for s in SHOWN if s[0] in measured]):
        v = _values(t, col, rows)
        ok = np.isfinite(v)
        bins = np.histogram_bin_edges(v[ok], bins=30) if ok.any() else 10
        for s in splits:
            sel = ok & (t["split"][rows] == s)
            if sel.any():
                ax.hist(v[sel], bins=bins, histtype="step", density=True, label=f"{s} (n={int(sel.sum())})", color=SPLIT_COLOURS.get(s))
        ax.set_xlabel(label)
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    for ax in axes[len(measured):]:
        ax.set_axis_off()
    flagged = Counter(f for fl in t["flags"][rows] for f in str(fl).split(",") if f)
    sec.note = (f"Distributions over {rows.size} original examples, one line per split (densities, so splits of different sizes compare). "
                f"Flags: {', '.join(f'{k} {v}' for k, v in flagged.most_common()) or 'none'}.")
    sec.figures.append(save_figure(fig, out, "quality_distributions.png", "quality metrics per split", "Density of each metric per split."))
    rows_t = []
    for s in splits:
        sel = rows[t["split"][rows] == s]
        cells = [s, str(sel.size)]
        for col, _, _ in SHOWN:
            v = _values(t, col, sel)
            v = v[np.isfinite(v)]
            cells.append(f"{np.median(v):.3g}" if v.size else "-")
        n_flag = sum(1 for fl in t["flags"][sel] if str(fl))
        cells.append(f"{n_flag / max(sel.size, 1):.1%}")
        rows_t.append(tuple(cells))
    sec.tables.append(Table(("split", "examples", *(f"median {c}" for c, _, _ in SHOWN), "flagged"), tuple(rows_t)))
    return sec


def _worst(ds, out: pathlib.Path) -> Section:
    sec = Section("quality_worst", f"The {WORST} worst examples per metric")
    t = ds.table
    rows = _originals(t)
    view = _view(ds)
    if not rows.size or view is None:
        sec.note = "No example with a spectrogram-like feature to draw." if rows.size else "The store holds no example."
        return sec
    sr, hop = int(ds.meta["sample_rate"]), int(ds.meta["hop_length"])
    drawn = 0
    for col, label, end in SHOWN:
        v = _values(t, col, rows)
        ok = np.flatnonzero(np.isfinite(v))
        if not ok.size:
            continue
        order = ok[np.argsort(v[ok] if end == "low" else -v[ok], kind="stable")][:WORST]
        picks = rows[order]
        images = [display_values(ds[int(p)]["features"][view.name], view) for p in picks]
        vmin, vmax = colour_limits(images, view)
        n_cols = 5
        n_rows = -(-len(picks) // n_cols)
        fig = new_figure(2.6 * n_cols, 2.0 * n_rows + 0.4)
        axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
        for ax, p, img in zip(axes, picks, images):
            # a thumbnail: the image alone (no axes to lay out: 20 of them per metric), its
            # length in the title; frequency rises upwards as in the other figures
            ax.imshow(img.T, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_axis_off()
            seconds = img.shape[0] * hop / sr
            ax.set_title(f"{t[col][p]:.3g} · {t['split'][p]} · {seconds:.1f} s\n{pathlib.PurePosixPath(str(t['path'][p])).name}"[:70], fontsize=7)
        for ax in axes[len(picks):]:
            ax.set_axis_off()
        fig.suptitle(f"{'lowest' if end == 'low' else 'highest'} {label}", fontsize=10)
        caption = f"{len(picks)} examples with the {'lowest' if end == 'low' else 'highest'} {col}: value, split and file above each {view.name}."
        sec.figures.append(save_figure(fig, out, f"worst_{col}.png", f"worst by {col}", caption))
        drawn += 1
    sec.note = (f"Thumbnails of {view.name} as stored (time to the right, frequency upwards; length in the title), one colour scale "
                "per metric." if drawn else "No example has quality metrics.")
    return sec


def _duplicates(ds, out: pathlib.Path) -> Section:
    sec = Section("duplicates", "Duplicate clusters")
    t = ds.table
    rows = _originals(t)
    members: dict[str, list[int]] = defaultdict(list)
    for p in rows:
        c = str(t["cluster"][p]) if "cluster" in t else ""
        if c:
            members[c].append(int(p))
    if not members:
        sec.note = "No duplicate cluster: no two examples are the same recording (exact PCM or near-duplicate fingerprint)."
        return sec
    sizes = Counter(len(v) for v in members.values())
    fig = new_figure(6.0, 3.2)
    ax = fig.subplots()
    ks = sorted(sizes)
    ax.bar([str(k) for k in ks], [sizes[k] for k in ks], color="#777")
    ax.set_xlabel("examples per cluster")
    ax.set_ylabel("clusters")
    sec.figures.append(save_figure(fig, out, "duplicate_sizes.png", "duplicate cluster sizes", "Number of clusters of each size."))
    in_clusters = sum(len(v) for v in members.values())
    sec.note = (f"{len(members)} cluster(s) hold {in_clusters} examples; each cluster lies in one split. "
                f"The first {min(MAX_CLUSTERS, len(members))}, largest first; the representative (kept by drop_copies) is marked *.")
    ordered = sorted(members.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:MAX_CLUSTERS]
    rows_t: list[tuple[str, ...]] = []
    for k, (cid, ps) in enumerate(ordered):
        for p in ps:
            star = "*" if str(t["id"][p]) == cid else ""
            rows_t.append((str(k + 1), f"{star}{t['source'][p]}:{t['path'][p]}", str(t["split"][p]), str(t["flags"][p])))
    sec.tables.append(Table(("cluster", "path", "split", "flags"), tuple(rows_t)))
    return sec


def flagged_share(table: list[dict[str, Any]]) -> dict[str, float]:
    """Share of active original examples per split that carry any flag."""
    n: Counter = Counter()
    f: Counter = Counter()
    for r in table:
        if r["copy"] == 0 and r["status"] in ("ok", "flagged"):
            n[r["split"]] += 1
            f[r["split"]] += bool(r["flags"])
    return {s: f[s] / n[s] for s in n}
