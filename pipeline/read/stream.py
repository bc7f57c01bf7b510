"""Iterating one worker's batches: blocks read ahead on threads, batches collated, position kept.

:class:`Progress` is the resumable position of a job in an epoch: the batches not consumed
when this run started, and how this run splits them (ranks, workers, tail policy).
``Progress.state(steps)`` is the position after every rank took ``steps`` batches.
:class:`BatchStream` is what ``AudioDataset.iter_batches`` returns.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.read.plan import BatchSettings, EpochPlan, assign, consumed, ids_to_runs, runs_to_ids

STATE_FORMAT = "audioprep.reader/1"


@dataclass
class Progress:
    """Where a job stands in one epoch, and how this run splits the rest."""

    settings: BatchSettings
    seed: int
    epoch: int
    n_batches: int
    fingerprint: dict[str, Any]
    remaining: np.ndarray
    """Global batch indices not consumed when this run started, ascending."""
    world_size: int = 1
    num_workers: int = 1
    split: str = "keep"
    """How the ranks' shares are evened out (``keep``, ``pad``, ``drop``; :func:`pipeline.read.plan.rank_share`)."""

    def state(self, steps: int) -> dict[str, Any]:
        """The resumable state after every rank took ``steps`` batches of this run (JSON-able)."""
        used = consumed(self.remaining, self.world_size, self.num_workers, self.split, steps)
        left = np.setdiff1d(self.remaining, used, assume_unique=True)
        return {
            "format": STATE_FORMAT,
            "seed": int(self.seed),
            "epoch": int(self.epoch),
            "n_batches": int(self.n_batches),
            "settings": self.settings.to_dict(),
            "dataset": dict(self.fingerprint),
            "remaining": ids_to_runs(left),
        }

    def resume(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`state`, possibly of a run with other ranks/workers)."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a reader state (format {state.get('format')!r}, expected {STATE_FORMAT!r})")
        mine = {"seed": self.seed, "epoch": self.epoch, "n_batches": self.n_batches, "settings": self.settings.to_dict(),
                "dataset": dict(self.fingerprint)}
        theirs = {k: state.get(k) for k in mine}
        diff = [k for k in mine if _plain(mine[k]) != _plain(theirs[k])]
        if diff:
            shown = "; ".join(f"{k}: saved {theirs[k]!r}, now {mine[k]!r}" for k in diff)
            raise ValueError(f"the reader state is for other settings ({shown}); resume with the same dataset, seed, epoch and batch settings")
        self.remaining = runs_to_ids(state["remaining"])


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


@dataclass
class StreamStats:
    batches: int = 0
    examples: int = 0
    real_frames: int = 0
    padded_frames: int = 0
    bytes: int = 0
    repeated_batches: int = 0
    blocks_read: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def padding_efficiency(self) -> float:
        return self.real_frames / self.padded_frames if self.padded_frames else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "examples": self.examples, "real_frames": self.real_frames, "padded_frames": self.padded_frames,
                "padding_efficiency": self.padding_efficiency, "bytes": self.bytes, "repeated_batches": self.repeated_batches,
                "blocks_read": self.blocks_read}


class BatchStream(Iterator[dict[str, Any]]):
    """The batches of one worker of one rank, in order; an iterator.

    Each batch is a dict: ``features`` {name: (batch, longest, *bins) float32, zero-padded},
    ``lengths`` (batch,), ``labels``, ``label_index`` (batch,), ``ids``, ``index`` (the
    batch's position in the epoch's global list: the same batch, whatever the job's size)
    and ``repeat`` (True for a batch repeated to even out the ranks).

    ``state_dict()`` is the position after the batches yielded so far, assuming every rank
    yielded as many (use it with ``num_workers`` 1; a DataLoader with workers keeps its own
    count, see ``pipeline.torch``); ``load_state_dict(state)`` before the first batch resumes.
    ``stats`` counts batches, examples, bytes and padding.
    """

    def __init__(self, plan: EpochPlan, progress: Progress, rank: int, worker: int, fetch_block: Callable[[int], Any],
                 decode_block: Callable[[int, Any], dict[str, np.ndarray]], collate: Callable[..., dict[str, Any]], prefetch: int):
        self.plan = plan
        self.progress = progress
        self.rank = rank
        self.worker = worker
        self._fetch_block = fetch_block
        self._decode_block = decode_block
        self._collate = collate
        self._prefetch = max(0, int(prefetch))
        self._it: Iterator[dict[str, Any]] | None = None
        self._yielded = 0
        self.stats = StreamStats()

    # --- position ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return self.progress.state(self._yielded)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._it is not None:
            raise RuntimeError("load_state_dict before the first batch: this stream has started")
        self.progress.resume(state)

    def __len__(self) -> int:
        return len(self._part().ids)

    def _part(self):
        p = self.progress
        return assign(p.remaining, p.world_size, self.rank, p.num_workers, self.worker, p.split)

    # --- iteration --------------------------------------------------------------------------
    def __next__(self) -> dict[str, Any]:
        if self._it is None:
            self._it = self._run()
        batch = next(self._it)
        self._yielded += 1
        return batch

    def close(self) -> None:
        if self._it is not None:
            self._it.close()

    def _run(self) -> Iterator[dict[str, Any]]:
        part = self._part()
        ids = part.ids
        need = [np.unique(self.plan.block_of[self.plan.batches[j]]) for j in ids]
        last_use: dict[int, int] = {}
        order: list[int] = []
        for i, blocks in enumerate(need):
            for b in blocks.tolist():
                if b not in last_use:
                    order.append(b)
                last_use[b] = i
        # threads only fetch (I/O: range reads, GETs); decoding is CPU work, done here when a
        # batch first needs the block (threads decoding on the same core only contend)
        pool = ThreadPoolExecutor(self._prefetch, thread_name_prefix="audioprep-reader") if self._prefetch else None
        fetched: dict[int, Future] = {}  # block -> its fetch, in flight or done
        decoded: dict[int, dict[str, np.ndarray]] = {}
        queue = collections.deque(order)
        try:
            for i, j in enumerate(ids):
                wanted = need[i].tolist()
                # keep `prefetch` fetches beyond this batch's blocks in flight, in the order batches need them
                if pool is not None:
                    while queue and (queue[0] in wanted or len(fetched) < self._prefetch):
                        b = queue.popleft()
                        fetched[b] = pool.submit(self._fetch_block, b)
                        self.stats.blocks_read += 1
                for b in wanted:
                    if b not in decoded:
                        if b in fetched:
                            decoded[b] = self._decode_block(b, fetched.pop(b).result())
                        else:  # not prefetched: fetch and decode here
                            decoded[b] = self._decode_block(b, None)
                            self.stats.blocks_read += 1
                pos = self.plan.batches[j]
                batch = self._collate(pos, self.plan.block_of[pos], decoded)
                batch["index"] = int(j)
                batch["repeat"] = i >= part.real
                self._count(batch, pos)
                for b in wanted:
                    if last_use[b] == i:
                        del decoded[b]
                yield batch
        finally:
            for f in fetched.values():
                f.cancel()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _count(self, batch: dict[str, Any], positions: np.ndarray) -> None:
        st = self.stats
        st.batches += 1
        st.repeated_batches += int(batch["repeat"])
        st.examples += len(positions)
        lengths = batch["lengths"]
        st.real_frames += int(lengths.sum())
        st.padded_frames += int(lengths.max()) * len(lengths) if len(lengths) else 0
        st.bytes += sum(int(x.nbytes) for x in batch["features"].values())
