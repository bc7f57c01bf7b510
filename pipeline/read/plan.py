"""The batches of an epoch, and who reads which: pure functions of the example table.

An epoch's **global batch list** depends only on the dataset (its examples' offsets and
lengths), the batch settings and ``(seed, epoch)``: never on the number of ranks or
DataLoader workers.

1. Examples are grouped into *blocks*: runs that are contiguous on disk, about
   ``block_rows`` rows of the feature arrays each (the unit of reading).
2. With ``shuffle``, the blocks are permuted; consecutive blocks form *windows* of
   ``blocks_in_buffer`` blocks, and the examples of each window are permuted.
3. The examples, in that order, are cut into batches: ``batch_size`` examples each, or
   with ``max_frames`` (duration buckets) as many examples of one length bucket as keep
   ``examples x longest <= max_frames``.

A job's ranks then take contiguous, equal parts of the batches not consumed yet, and each
rank's DataLoader workers contiguous parts of the rank's part (:func:`assign`), so every
batch is read by one worker only and each worker reads runs of neighbouring blocks.
The state of an epoch is the set of batches not consumed yet, as runs of batch indices
(:func:`consumed`): a resumed job, with any number of ranks and workers, splits what is left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

TAILS = ("keep", "pad", "drop")


@dataclass(frozen=True)
class BatchSettings:
    """What an epoch's batch list depends on, besides the examples and ``(seed, epoch)``."""

    batch_size: int | None
    """Examples per batch; with ``max_frames`` an optional cap on it."""
    max_frames: int | None = None
    """Cap on ``examples x longest example`` (padded frames) per batch: duration buckets."""
    bucket_edges: tuple[int, ...] = ()
    """Frame counts that separate the length buckets (ascending); used with ``max_frames``."""
    shuffle: bool = True
    blocks_in_buffer: int = 8
    """Blocks per shuffling window."""
    tail: str = "keep"
    """``keep`` a short last batch, ``pad`` it by repeating the epoch's first examples, or ``drop`` it."""
    bucket_wait: int = 8
    """Windows a bucket's unfinished batch waits for more examples before it goes out short:
    the blocks a batch needs stay within that many windows, so memory stays bounded."""

    def __post_init__(self):
        if self.max_frames is None and (self.batch_size is None or self.batch_size < 1):
            raise ValueError("batch_size must be >= 1 (or give max_frames)")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError("max_frames must be >= 1")
        if self.blocks_in_buffer < 1:
            raise ValueError("blocks_in_buffer must be >= 1")
        if self.bucket_wait < 1:
            raise ValueError("bucket_wait must be >= 1")
        if self.tail not in TAILS:
            raise ValueError(f"tail must be one of {TAILS}, not {self.tail!r}")
        if list(self.bucket_edges) != sorted(set(self.bucket_edges)):
            raise ValueError(f"bucket edges must be ascending and distinct: {self.bucket_edges}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bucket_edges"] = list(self.bucket_edges)
        return d


def make_blocks(offsets: np.ndarray, block_rows: int) -> list[np.ndarray]:
    """Positions grouped into disk-contiguous blocks.

    Parameters
    ----------
    offsets : (n,) first row of each example along axis 0 of the feature arrays.
    block_rows : a block holds the examples that start in one span of ``block_rows`` rows
        (a multiple of the chunk length keeps blocks on chunk boundaries).

    Returns
    -------
    list of (k,) int64 arrays of positions, in disk order; every position in exactly one.
    """
    offsets = np.asarray(offsets, np.int64)
    order = np.argsort(offsets, kind="stable")
    if not len(order):
        return []
    key = offsets[order] // max(1, int(block_rows))
    cuts = np.flatnonzero(np.diff(key)) + 1
    return [b.astype(np.int64) for b in np.split(order, cuts)]


def bucket_edges_for(frames: np.ndarray, buckets: int | Sequence[int]) -> tuple[int, ...]:
    """Edges between length buckets: ``buckets`` equal-count quantiles of ``frames``, or the
    given frame counts."""
    if isinstance(buckets, (int, np.integer)):
        if buckets < 1:
            raise ValueError("buckets must be >= 1")
        if buckets == 1 or not len(frames):
            return ()
        q = np.quantile(np.asarray(frames, np.float64), np.arange(1, int(buckets)) / int(buckets))
        return tuple(sorted({int(np.ceil(x)) for x in q}))
    return tuple(int(x) for x in buckets)


@dataclass(frozen=True)
class EpochPlan:
    """The global batch list of one epoch."""

    batches: list[np.ndarray]
    """Positions (into the dataset) of each batch, in global order."""
    frames: np.ndarray
    """(n,) frames of each example."""
    block_of: np.ndarray
    """(n,) block of each example."""

    def __len__(self) -> int:
        return len(self.batches)

    def padding(self, batch_ids: Sequence[int] | None = None) -> dict[str, float]:
        """Real frames, padded frames (examples x longest, summed over batches) and their ratio."""
        ids = range(len(self.batches)) if batch_ids is None else batch_ids
        real = padded = 0
        for j in ids:
            f = self.frames[self.batches[j]]
            if len(f):
                real += int(f.sum())
                padded += int(f.max()) * len(f)
        return {"real_frames": real, "padded_frames": padded, "padding_efficiency": real / padded if padded else 1.0}


def plan_epoch(frames: np.ndarray, blocks: list[np.ndarray], settings: BatchSettings, seed: int, epoch: int) -> EpochPlan:
    """The global batch list of epoch ``epoch``: a function of (examples, settings, seed, epoch) only."""
    frames = np.asarray(frames, np.int64)
    n = len(frames)
    block_of = np.zeros(n, np.int64)
    for b, pos in enumerate(blocks):
        block_of[pos] = b
    rng = np.random.default_rng([int(seed), int(epoch), 0x5EED])
    order = rng.permutation(len(blocks)) if settings.shuffle else np.arange(len(blocks))
    k = settings.blocks_in_buffer
    windows = []
    for w0 in range(0, len(order), k):
        pos = np.concatenate([blocks[b] for b in order[w0 : w0 + k]]) if len(order) else np.zeros(0, np.int64)
        windows.append(pos[rng.permutation(len(pos))] if settings.shuffle else pos)
    if settings.max_frames is None:
        batches = _fixed(np.concatenate(windows) if windows else np.zeros(0, np.int64), settings)
    else:
        batches = _bucketed(windows, frames, settings)
    return EpochPlan(batches, frames, block_of)


def _fixed(seq: np.ndarray, s: BatchSettings) -> list[np.ndarray]:
    b = int(s.batch_size)
    batches = [seq[i : i + b] for i in range(0, len(seq), b)]
    if batches and len(batches[-1]) < b:
        if s.tail == "drop":
            batches.pop()
        elif s.tail == "pad":
            short = batches[-1]
            fill = np.resize(seq, b - len(short))  # the epoch's first examples, repeated if need be
            batches[-1] = np.concatenate([short, fill])
    return batches


def _bucketed(windows: list[np.ndarray], frames: np.ndarray, s: BatchSettings) -> list[np.ndarray]:
    """Dynamic bucketing: each bucket fills a batch until ``count x longest`` would pass
    ``max_frames`` (or the count ``batch_size``); an unfinished batch carries over to later
    windows, for at most ``bucket_wait`` of them."""
    edges = np.asarray(s.bucket_edges, np.int64)
    cap_n = s.batch_size or np.iinfo(np.int64).max
    pending: dict[int, list[int]] = {}
    longest: dict[int, int] = {}
    since: dict[int, int] = {}  # the window a bucket's pending batch started in
    out: list[np.ndarray] = []
    for w, pos in enumerate(windows):
        buckets = np.searchsorted(edges, frames[pos], side="right") if len(edges) else np.zeros(len(pos), np.int64)
        for p, q in zip(pos.tolist(), buckets.tolist()):
            f = int(frames[p])
            cur = pending.setdefault(q, [])
            m = max(longest.get(q, 0), f)
            if cur and ((len(cur) + 1) * m > s.max_frames or len(cur) + 1 > cap_n):
                out.append(np.asarray(cur, np.int64))
                cur.clear()
                m = f
            if not cur:
                since[q] = w
            cur.append(p)
            longest[q] = m
        for q in sorted(pending):
            if pending[q] and w - since[q] + 1 >= s.bucket_wait:
                out.append(np.asarray(pending[q], np.int64))
                pending[q] = []
                longest[q] = 0
    if s.tail != "drop":
        out.extend(np.asarray(pending[q], np.int64) for q in sorted(pending) if pending[q])
    return out


# --- who reads which batch ---------------------------------------------------------------


def runs_to_ids(runs: Sequence[Sequence[int]]) -> np.ndarray:
    """[[a, b), ...] -> the batch indices, ascending."""
    parts = [np.arange(int(a), int(b), dtype=np.int64) for a, b in runs]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def ids_to_runs(ids: np.ndarray) -> list[list[int]]:
    ids = np.unique(np.asarray(ids, np.int64))
    if not len(ids):
        return []
    cuts = np.flatnonzero(np.diff(ids) != 1) + 1
    return [[int(r[0]), int(r[-1]) + 1] for r in np.split(ids, cuts)]


@dataclass(frozen=True)
class Part:
    """The batches one worker of one rank delivers, in order."""

    ids: np.ndarray
    """Global batch indices, in the order this worker yields them."""
    real: int
    """The first ``real`` are this worker's share; the rest repeat batches to even out the ranks."""


def rank_share(remaining: np.ndarray, world_size: int, rank: int, tail: str) -> tuple[np.ndarray, np.ndarray]:
    """(the rank's contiguous share of ``remaining``, repeated batches that even it out).

    ``pad``: every rank gets ``ceil(L / W)`` batches, short ranks repeating the first
    remaining batches; ``drop``: every rank ``floor(L / W)``, the last ``L mod W`` batches
    are left out; ``keep``: shares differ by at most one.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), not {rank}")
    total = len(remaining)
    if tail == "drop":
        q = total // world_size
        return remaining[rank * q : (rank + 1) * q], remaining[:0]
    if tail == "pad":
        q = -(-total // world_size)
        real = remaining[rank * q : min((rank + 1) * q, total)]
        return real, np.resize(remaining, q - len(real)) if total else remaining[:0]
    q, extra = divmod(total, world_size)
    start = rank * q + min(rank, extra)
    return remaining[start : start + q + (rank < extra)], remaining[:0]


def worker_parts(ids: np.ndarray, num_workers: int) -> list[np.ndarray]:
    """Contiguous parts of a rank's list for its workers; the first ones one longer."""
    q, extra = divmod(len(ids), num_workers)
    out, at = [], 0
    for k in range(num_workers):
        n = q + (k < extra)
        out.append(ids[at : at + n])
        at += n
    return out


def delivered(sizes: Sequence[int], steps: int) -> list[int]:
    """How many batches of each worker a DataLoader has handed out after ``steps`` batches:
    it takes one from each worker in turn and skips exhausted ones."""
    counts = [0] * len(sizes)
    left = int(steps)
    rounds = 0
    while left > 0:
        active = [k for k, n in enumerate(sizes) if n > rounds]
        if not active:
            break
        for k in active:
            if left == 0:
                break
            counts[k] += 1
            left -= 1
        rounds += 1
    return counts


def assign(remaining: np.ndarray, world_size: int, rank: int, num_workers: int, worker: int, tail: str) -> Part:
    """The batches worker ``worker`` of rank ``rank`` yields, from the batches ``remaining``."""
    real, pads = rank_share(remaining, world_size, rank, tail)
    mine = np.concatenate([real, pads])
    parts = worker_parts(mine, num_workers)
    start = sum(len(p) for p in parts[:worker])
    return Part(parts[worker], max(0, min(len(parts[worker]), len(real) - start)))


def consumed(remaining: np.ndarray, world_size: int, num_workers: int, tail: str, steps: int) -> np.ndarray:
    """The batches of ``remaining`` consumed once every rank has taken ``steps`` batches
    (ranks advance in lockstep under DDP). Repeated (padding) batches count for nothing."""
    used = []
    for r in range(world_size):
        real, pads = rank_share(remaining, world_size, r, tail)
        parts = worker_parts(np.concatenate([real, pads]), num_workers)
        counts = delivered([len(p) for p in parts], steps)
        at = 0
        for p, c in zip(parts, counts):
            n_real = max(0, min(len(p), len(real) - at))
            used.append(p[: min(c, n_real)])
            at += len(p)
    return np.concatenate(used) if used else np.zeros(0, np.int64)
