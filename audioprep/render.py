"""Rich rendering of ``audioprep inspect``."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from pipeline.report.summary import feature_order


def dims_text(feature: str, dims: list[str]) -> str:
    """``frame, bin`` for ``["frame", "log_mel_bin"]``: the feature's name, already in its
    row, is dropped from its dimension names so the table fits 80 columns."""
    return ", ".join(d[len(feature) + 1 :] if d.startswith(feature + "_") and len(d) > len(feature) + 1 else d for d in dims)


def render_inspect(info: dict[str, Any], console: Console) -> None:
    console.print(f"[bold]{info['dataset']}[/] at {info['url']}: version {info['version']}, format {info['format_version']}, layout {info['layout']}")
    t = Table(title="examples per split and label")
    for c in ("split", "label", "examples"):
        t.add_column(c, justify="right" if c == "examples" else "left")
    for split, labels in info["counts"].items():
        for label, n in labels.items():
            t.add_row(split, label, str(n))
    console.print(t)
    d = Table(title="durations")
    for c in ("split", "examples", "hours", "min s", "mean s", "max s", "augmented copies"):
        d.add_column(c)
    for split, s in info["durations"].items():
        copies = str(info["augmented_copies"].get(split, 0))
        d.add_row(split, str(s["n"]), f"{s['hours']:.4f}", f"{s['min_s']:.2f}", f"{s['mean_s']:.2f}", f"{s['max_s']:.2f}", copies)
    console.print(d)
    f = Table(title=f"features (normalization: {info['normalization']}), in the reader's order")
    for c in ("feature", "array shape", "frame shape", "dtype", "dims"):
        f.add_column(c, overflow="fold")
    for name in feature_order(info):
        a = info["features"][name]
        f.add_row(name, str(tuple(a["shape"])), str(tuple(a["frame_shape"] or ())), a["dtype"], dims_text(name, a["dims"]))
    console.print(f)
    if info.get("transcripts"):
        tt = Table(title=f"transcripts (train vocabulary: {len(info.get('text_vocab') or [])} characters)")
        for c in ("split", "with text", "characters", "words", "chars / s", "words / example"):
            tt.add_column(c)
        for split, s in info["transcripts"].items():
            tt.add_row(split, str(s["examples_with_text"]), str(s["characters"]), str(s["words"]),
                       f"{s['chars_per_second']:.1f}", f"{s['words_per_example']:.1f}")
        console.print(tt)
    if info.get("tag_counts"):
        tg = Table(title="tags per split")
        for c in ("split", "tag", "examples"):
            tg.add_column(c)
        for split, tags in info["tag_counts"].items():
            for tag, n in tags.items():
                tg.add_row(split, tag, str(n))
        console.print(tg)
    console.print(f"rejected files: {info['rejects']}; flagged (kept): {info['flagged']}")
    for r in info["reject_rows"][:10]:
        console.print(f"  [yellow]{r['source']}:{r['path']}[/] [{r['stage']}] {r['error_class']}: {r['message']}")
    console.print(f"provenance: catalog {info['catalog_hash']}; " + ", ".join(f"{k} {v}" for k, v in (info["package_versions"] or {}).items()))
    for v in info["versions"][-5:]:
        console.print(f"  version {v['version']}: run {v['run_id']} committed {v['committed']}, {v['examples']} examples, {v['rejected']} rejected")
    for w in info["warnings"]:
        console.print(f"[bold yellow]warning:[/] {w}")
