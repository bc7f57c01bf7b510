"""Apply the duplicate clusters to a version's rows at commit: one split per cluster,
``cluster``/``duplicate`` marks, and the ``duplicates.policy``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from pipeline.errors import DuplicateError
from pipeline.plan.splits import ClusterMember, SplitConflict, cluster_split
from pipeline.quality.config import DuplicatesConfig
from pipeline.quality.duplicates import Edge, clusters

ACTIVE = ("ok", "flagged")
SHOW_CLUSTERS = 10


def _representative(rows: list[dict[str, Any]], members: list[int], version: int) -> int:
    """The member that stays when copies are dropped: one committed earlier, else the widest
    band, then the longest, then the first by source and path."""
    return min(
        members,
        key=lambda i: (
            rows[i].get("version_added", version) == version,
            -_num(rows[i].get("bandwidth_hz")),
            -float(rows[i]["duration_seconds"]),
            rows[i]["source"],
            rows[i]["path"],
            rows[i]["id"],
        ),
    )


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return 0.0
    return f if f == f else 0.0


def _describe(rows: list[dict[str, Any]], members: list[int]) -> str:
    return ", ".join(f"{rows[i]['source']}:{rows[i]['path']} [{rows[i]['split']}]" for i in members)


def apply_duplicates(
    rows: list[dict[str, Any]],
    edges: Iterable[Edge],
    cfg: DuplicatesConfig,
    *,
    version: int,
    forced_splits: dict[str, str],
    augment_splits: Iterable[str],
) -> tuple[list[bool], list[dict[str, Any]], list[list[int]]]:
    """Place each cluster in one split and apply the policy, editing ``rows`` in place.

    Parameters
    ----------
    rows : the new version's example rows (earlier versions' first); each active original
        is known to the edges by ``(partition, id)``.
    edges : from :func:`pipeline.quality.duplicates.reduce_bucket`.
    forced_splits : example id -> split a manifest forces.
    augment_splits : splits whose examples have augmented copies; a copy row of an example
        moved out of them is dropped.

    Returns
    -------
    keep : (len(rows),) False for rows that leave the table (dropped copies, their augmented rows).
    rejects : reject records of the copies ``drop_copies`` removed.
    clusters : row indices of each cluster.

    Raises
    ------
    DuplicateError : ``policy: error`` and a cluster exists, or a cluster is bound to two splits.
    """
    index_of = {(r["partition"], r["id"]): i for i, r in enumerate(rows) if r["status"] in ACTIVE and r["copy"] == 0}
    for i in index_of.values():  # clusters are found afresh over the whole store at every commit
        r = rows[i]
        if r.get("cluster"):
            r["cluster"] = ""
            r["flags"] = ",".join(f for f in str(r["flags"]).split(",") if f and f != "duplicate")
            r["status"] = "flagged" if r["flags"] else "ok"
    found = clusters(edges, index_of)
    keep = [True] * len(rows)
    if not found:
        return keep, [], []
    if cfg.policy == "error":
        shown = "\n".join(f"  - {_describe(rows, c)}" for c in found[:SHOW_CLUSTERS])
        more = f"\n  ... and {len(found) - SHOW_CLUSTERS} more" if len(found) > SHOW_CLUSTERS else ""
        raise DuplicateError(
            f"{len(found)} duplicate cluster(s) and duplicates.policy is error:\n{shown}{more}\n"
            "Remove the copies, or set duplicates.policy: keep (flag them) or drop_copies (reject all but one)."
        )
    copies_of: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if r["copy"] > 0 and r["status"] in ACTIVE:
            copies_of[(r["partition"], r["parent"])].append(i)
    aug = set(augment_splits)
    rejects: list[dict[str, Any]] = []
    conflicts: list[str] = []
    for members in found:
        new = [rows[i].get("version_added") == version for i in members]
        try:
            target = cluster_split(
                ClusterMember(rows[i]["id"], f"{rows[i]['source']}:{rows[i]['path']}", rows[i]["split"], fixed=not n,
                              forced_split=forced_splits.get(rows[i].get("file_id") or rows[i]["id"], "") if n else "")
                for i, n in zip(members, new)
            )
        except SplitConflict as exc:
            conflicts.append(str(exc))
            continue
        rep = _representative(rows, members, version)
        for i, is_new in zip(members, new):
            r = rows[i]
            r["cluster"] = rows[rep]["id"]
            extra = copies_of.get((r["partition"], r["id"]), [])
            if i != rep and is_new and cfg.policy == "drop_copies":
                keep[i] = False
                for j in extra:
                    keep[j] = False
                rejects.append({
                    "id": r.get("file_id") or r["id"], "source": r["source"], "path": r["path"], "path_bytes": r.get("path_bytes", ""),
                    "content_key": r["content_key"],
                    "stage": "duplicate", "error_class": "Duplicate",
                    "message": f"{r['path']}: a copy of {rows[rep]['source']}:{rows[rep]['path']} (duplicates.policy: drop_copies)"[:500],
                    "version_added": version,
                })
                continue
            if i != rep:
                r["flags"] = ",".join([f for f in str(r["flags"]).split(",") if f] + ["duplicate"])
                r["status"] = "flagged"
            if r["split"] != target:
                r["split"] = target
                for j in extra:
                    if target in aug:
                        rows[j]["split"] = target
                    else:
                        keep[j] = False
    if conflicts:
        shown = "\n".join(f"  - {c}" for c in conflicts[:SHOW_CLUSTERS])
        raise DuplicateError(
            f"{len(conflicts)} duplicate cluster(s) cannot be placed in one split:\n{shown}\n"
            "Give the copies the same split in the manifest, remove the copies, or rebuild the store (--overwrite)."
        )
    return keep, rejects, found
