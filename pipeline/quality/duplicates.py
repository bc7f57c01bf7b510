"""The duplicate index: per-partition fingerprint files, a bucketed reduction, clusters.

Each partition task writes ``_quality/<partition_id>.npz`` beside its manifest: its
examples' ids, exact PCM hashes, fingerprint codes and sketch keys (plain arrays, read with
``allow_pickle=False``). :func:`reduce_bucket` is one task of the reduction: it reads the
keys of its hash range from every partition file, pairs examples that share a key, and
verifies each pair on the full fingerprints at the offset the key implies. It returns the
edges only, so the coordinator never holds fingerprints; :func:`clusters` joins the edges.
"""

from __future__ import annotations

import io
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from pipeline.io.fs import join
from pipeline.quality.align import candidate_pairs, pair_agreements
from pipeline.quality.config import DuplicatesConfig
from pipeline.quality.fingerprint import BITS, FINGERPRINT_VERSION, INACTIVE, MIN_ACTIVE_FRAMES
from pipeline.store.location import StoreLocation

QUALITY_DIR = "_quality"
#: a sketch key shared by more clips than this is too common to tell clips apart (silence, tones)
MAX_BUCKET = 64
#: frames either side of the offset a shared key implies that verification tries
ALIGN_SLACK = 2
#: candidate rows (pair, offset; one per shared key) made unique at a time: bounds a reducer's memory
CANDIDATE_BATCH_ROWS = 2_000_000


def fingerprint_path(partition_id: str) -> str:
    return f"{QUALITY_DIR}/{partition_id}.npz"


@dataclass(frozen=True)
class Edge:
    """Two examples found to be copies: ``(partition, id)`` each, and their similarity."""

    a: tuple[str, str]
    b: tuple[str, str]
    similarity: float


def pack(ids: list[str], pcm: list[str], codes: list[np.ndarray], keys: list[tuple[np.ndarray, np.ndarray]], frame_seconds: float) -> bytes:
    """The bytes of one partition's fingerprint file (``np.savez`` of plain arrays)."""
    lengths = np.array([c.size for c in codes], np.int64)
    klen = np.array([k.size for k, _ in keys], np.int64)
    buf = io.BytesIO()
    np.savez(
        buf,
        ids=np.array(ids, dtype=str) if ids else np.zeros(0, "<U1"),
        pcm=np.array([int(h[:16], 16) for h in pcm], np.uint64),
        codes=np.concatenate(codes).astype(np.int32) if codes else np.zeros(0, np.int32),
        code_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        keys=np.concatenate([k for k, _ in keys]).astype(np.uint64) if keys else np.zeros(0, np.uint64),
        key_frames=np.concatenate([f for _, f in keys]).astype(np.int32) if keys else np.zeros(0, np.int32),
        key_rows=np.repeat(np.arange(len(keys)), klen).astype(np.int32),
        frame_seconds=np.float64(frame_seconds),
        version=np.int64(FINGERPRINT_VERSION),
    )
    return buf.getvalue()


def write_fingerprints(loc: StoreLocation, partition_id: str, data: bytes) -> None:
    fs, root = loc.fs_root()
    path = join(root, fingerprint_path(partition_id))
    if loc.remote:
        fs.pipe_file(path, data)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)  # written before the manifest: a committed partition has its file


def read_fingerprints(loc: StoreLocation, partition_id: str) -> dict[str, np.ndarray] | None:
    """The arrays of a partition's file; None when it has none, or when it was written by
    another :data:`~pipeline.quality.fingerprint.FINGERPRINT_VERSION` (its fingerprints and
    hashes do not compare with this one's: those rows are left out of the index)."""
    fs, root = loc.fs_root()
    try:
        data = fs.cat_file(join(root, fingerprint_path(partition_id)))
    except FileNotFoundError:
        return None
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        if (int(z["version"]) if "version" in z.files else 1) != FINGERPRINT_VERSION:
            return None
        return {k: z[k] for k in z.files}


def _bucket_of(keys: np.ndarray, n_buckets: int) -> np.ndarray:
    return (keys % np.uint64(n_buckets)).astype(np.int64)


def reduce_bucket(loc: StoreLocation, partition_ids: list[str], bucket: int, n_buckets: int, cfg: DuplicatesConfig) -> list[Edge]:
    """The duplicate edges whose shared key falls in hash range ``bucket`` of ``n_buckets``.

    Exact PCM matches are edges of similarity 1.0 (every member linked to the first);
    near matches are pairs sharing a sketch key, verified with
    :func:`pipeline.quality.fingerprint.similarity` (compiled for many pairs at once:
    :func:`pipeline.quality.align.pair_agreements`) against ``cfg.similarity`` at the offsets
    their shared keys imply. Each partition file is read twice at most: once for its keys,
    once for the fingerprints of the rows that have a candidate.
    """
    exact: dict[int, list[tuple[int, int]]] = defaultdict(list)
    near: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # keys, part, row, frame
    ids: dict[int, np.ndarray] = {}
    frame_seconds = 0.0
    for p, pid in enumerate(partition_ids):
        z = read_fingerprints(loc, pid)
        if z is None:
            continue
        ids[p] = z["ids"]
        frame_seconds = float(z["frame_seconds"])
        for r in np.flatnonzero(_bucket_of(z["pcm"], n_buckets) == bucket):
            exact[int(z["pcm"][r])].append((p, int(r)))
        if cfg.near:
            sel = np.flatnonzero(_bucket_of(z["keys"], n_buckets) == bucket)
            near.append((z["keys"][sel], np.full(sel.size, p, np.int32), z["key_rows"][sel], z["key_frames"][sel]))
        del z

    def name(p: int, r: int) -> tuple[str, str]:
        return partition_ids[p], str(ids[p][r])

    edges: list[Edge] = []
    linked: set[tuple[tuple[int, int], tuple[int, int]]] = set()
    for members in exact.values():
        for m in members[1:]:
            linked.add((members[0], m) if members[0] < m else (m, members[0]))
            edges.append(Edge(name(*members[0]), name(*m), 1.0))
    if not near:
        return edges
    keys = np.concatenate([n[0] for n in near])
    # a clip as one int64, (partition << 32) | row: sorting these sorts (partition, row) pairs
    member = (np.concatenate([n[1] for n in near]).astype(np.int64) << 32) | np.concatenate([n[2] for n in near]).astype(np.int64)
    frame = np.concatenate([n[3] for n in near]).astype(np.int64)
    del near
    order = np.argsort(keys, kind="stable")
    keys, member, frame = keys[order], member[order], frame[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    sizes = np.diff(np.r_[starts, keys.size])
    # only keys shared by 2..MAX_BUCKET clips make candidates; a pair sharing many keys comes
    # once per key, so the rows are made unique batch by batch (memory stays bounded)
    common = np.flatnonzero((sizes >= 2) & (sizes <= MAX_BUCKET))
    g_starts, g_sizes = starts[common], sizes[common]
    rows_per_group = np.cumsum(g_sizes * (g_sizes - 1) // 2)
    parts: list[np.ndarray] = []
    at = 0
    while at < g_starts.size:
        done_rows = rows_per_group[at - 1] if at else 0
        end = max(at + 1, int(np.searchsorted(rows_per_group, done_rows + CANDIDATE_BATCH_ROWS, side="right")))
        parts.append(_unique_rows(*candidate_pairs(g_starts[at:end], g_sizes[at:end], member, frame)))
        at = end
    del keys, member, frame
    if not parts:
        return edges
    # unique (a, b, offset) rows in (a, b, offset) order; the pairs linked exactly are done
    cand = _unique_rows(*np.concatenate(parts).T) if len(parts) > 1 else parts[0]
    del parts
    if linked:
        done = np.array([[(a[0] << 32) | a[1], (b[0] << 32) | b[1]] for a, b in linked], dtype=np.int64)
        cand = cand[~_rows_in(cand[:, :2], done)]
    if cand.shape[0] == 0:
        return edges
    pair_start = np.flatnonzero(np.r_[True, (cand[1:, 0] != cand[:-1, 0]) | (cand[1:, 1] != cand[:-1, 1])])
    clips, inverse = np.unique(cand[:, :2], return_inverse=True)
    inverse = inverse.reshape(-1, 2)
    codes = _needed_codes(loc, partition_ids, {(int(c >> 32), int(c & 0xFFFFFFFF)) for c in clips})
    flat = [codes[(int(c >> 32), int(c & 0xFFFFFFFF))] for c in clips]
    code_len = np.array([f.size for f in flat], dtype=np.int64)
    code_start = np.r_[0, np.cumsum(code_len)[:-1]].astype(np.int64)
    flat_codes = np.concatenate(flat).astype(np.int32) if flat else np.zeros(0, np.int32)
    active = np.array([int(np.count_nonzero(f != INACTIVE)) for f in flat], dtype=np.int64)
    max_offset = int(round(cfg.max_offset_seconds / frame_seconds)) if frame_seconds else 0
    sims = pair_agreements(flat_codes, code_start, code_len, active, inverse[pair_start, 0], inverse[pair_start, 1],
                           np.r_[pair_start, cand.shape[0]].astype(np.int64), np.ascontiguousarray(cand[:, 2]), ALIGN_SLACK,
                           max_offset, float(cfg.min_overlap), MIN_ACTIVE_FRAMES, INACTIVE, BITS)
    for p in np.flatnonzero(sims >= cfg.similarity):
        a, b = int(cand[pair_start[p], 0]), int(cand[pair_start[p], 1])
        edges.append(Edge(name(a >> 32, a & 0xFFFFFFFF), name(b >> 32, b & 0xFFFFFFFF), round(float(sims[p]), 4)))
    return edges


def _unique_rows(pa: np.ndarray, pb: np.ndarray, po: np.ndarray) -> np.ndarray:
    """The distinct ``(a, b, offset)`` rows (n, 3) int64, sorted."""
    order = np.lexsort((po, pb, pa))
    pa, pb, po = pa[order], pb[order], po[order]
    keep = np.r_[True, (pa[1:] != pa[:-1]) | (pb[1:] != pb[:-1]) | (po[1:] != po[:-1])]
    return np.stack([pa[keep], pb[keep], po[keep]], axis=1)


def _rows_in(rows: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Which rows of int64 ``rows`` (n, 2) are rows of ``table`` (m, 2)."""
    view = np.dtype([("a", np.int64), ("b", np.int64)])
    return np.isin(np.ascontiguousarray(rows).view(view).ravel(), np.ascontiguousarray(table).view(view).ravel())


def _needed_codes(loc: StoreLocation, partition_ids: list[str], rows: set[tuple[int, int]]) -> dict[tuple[int, int], np.ndarray]:
    """The fingerprint codes of ``rows`` (``(partition index, row)``), one read per partition."""
    by_part: dict[int, list[int]] = defaultdict(list)
    for p, r in rows:
        by_part[p].append(r)
    out: dict[tuple[int, int], np.ndarray] = {}
    for p, rs in sorted(by_part.items()):
        z = read_fingerprints(loc, partition_ids[p])
        assert z is not None
        off = z["code_offsets"]
        for r in rs:
            out[(p, r)] = z["codes"][off[r] : off[r + 1]].copy()
    return out


def clusters(edges: Iterable[Edge], index_of: dict[tuple[str, str], int]) -> list[list[int]]:
    """Connected components (size >= 2) of the edges between the rows ``index_of`` knows
    (``(partition, id) -> row index``); edges to other rows (removed, replaced) are dropped.
    Each cluster is sorted, and the list is sorted by first member."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for e in edges:
        a, b = index_of.get(e.a), index_of.get(e.b)
        if a is None or b is None or a == b:
            continue
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = defaultdict(list)
    for x in parent:
        groups[find(x)].append(x)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


#: sketch keys (with their row and frame: 16 bytes) one reducer holds at most, about
REDUCER_KEY_BYTES = 128 * 2**20


def reduction_inputs(plan, min_buckets: int = 1) -> tuple[list[str], int]:
    """``(partition ids, number of buckets)`` of a run's duplicate reduction: this run's
    partitions and those of earlier versions with active rows (new files are compared with
    the whole store). Buckets are sized so a reducer holds about :data:`REDUCER_KEY_BYTES`,
    and there are at least ``min_buckets`` (the flow passes its cluster's worker threads:
    the reduction runs after the last partition, on every worker). The clusters found do
    not depend on the number of buckets: a pair is verified in the bucket of each key it
    shares, at the offsets those keys imply, so some bucket sees the offset a single one would."""
    from pipeline.quality.fingerprint import SKETCH_KEYS

    ids = {p.partition_id for p in plan.partitions}
    rows = 0
    if plan.previous is not None:
        for r in plan.previous.table:
            if r["status"] in ("ok", "flagged") and r["copy"] == 0:
                ids.add(r["partition"])
                rows += 1
    rows += sum(len(p.items) for p in plan.partitions)
    n_buckets = max(1, min_buckets, -(-rows * SKETCH_KEYS * 16 // REDUCER_KEY_BYTES))
    return sorted(ids), n_buckets


def find_edges(plan, cfg: DuplicatesConfig, map_fn=map) -> list[Edge]:
    """Every duplicate edge of the store after this run, one :func:`reduce_bucket` per bucket
    through ``map_fn`` (the flow submits them as Dask tasks instead). A pair sharing keys in
    several buckets comes once from each."""
    ids, n = reduction_inputs(plan)
    out: list[Edge] = []
    for edges in map_fn(lambda b: reduce_bucket(plan.location, ids, b, n, cfg), range(n)):
        out.extend(edges)
    return out
