"""Run summaries as plain data, markdown (Prefect artifact) and table rows."""

from __future__ import annotations

from typing import Any


def feature_order(info: dict[str, Any]) -> list[str]:
    """The features of ``describe()``'s ``info`` in the reader's order (``AudioDataset.feature_names``).

    That is the store's ``feature_names`` (``info["feature_names"]`` where given), else
    the order of the features in its ``feature_params``, which the writer records in the
    same order; any other feature follows, sorted. (``info["features"]`` itself lists the
    arrays in the order the storage lists them.)
    """
    have = info.get("features") or {}
    named = info.get("feature_names") or [k for k in info.get("feature_params") or {} if k in have]
    order = [k for k in named if k in have]
    return order + sorted(k for k in have if k not in order)


def throughput_x_realtime(summary: dict[str, Any]) -> float:
    wall = summary.get("wall_seconds") or 0.0
    return (summary.get("processed_audio_seconds") or 0.0) / wall if wall else 0.0


def markdown_summary(summary: dict[str, Any]) -> str:
    """The run summary a person reads in the Prefect UI."""
    lines = [
        f"# audioprep run {summary.get('run_id', '')}",
        "",
        f"- store: `{summary.get('store')}` (version {summary.get('version')})",
        f"- examples: {summary.get('examples')} ({summary.get('rows')} rows with augmented copies)",
        f"- audio: {summary.get('audio_hours', 0.0):.3f} h in the store; "
        f"{(summary.get('processed_audio_seconds') or 0) / 3600:.3f} h processed by this run",
        f"- new: {summary.get('new_examples', 0)}, removed: {summary.get('removed', 0)}, replaced: {summary.get('replaced', 0)}",
        f"- rejected files: {summary.get('rejected', 0)}",
        f"- wall time: {summary.get('wall_seconds') or 0:.1f} s, throughput {throughput_x_realtime(summary):.1f}x realtime",
        "",
        "| split | label | examples |",
        "|---|---|---|",
    ]
    for split, labels in (summary.get("counts") or {}).items():
        for label, n in labels.items():
            lines.append(f"| {split} | {label} | {n} |")
    return "\n".join(lines) + "\n"


def reject_table_rows(summary: dict[str, Any]) -> list[dict[str, str]]:
    return [
        {"path": f"{r['source']}:{r['path']}", "stage": r["stage"], "error": r["error_class"], "message": r["message"]}
        for r in summary.get("reject_rows", [])
    ]
