"""PyTorch glue for ``iter_batches``: an ``IterableDataset``, a ``collate`` and a resumable loader.

Import it only where torch is installed (``import pipeline.torch``); nothing else in
``pipeline`` imports torch.

- :class:`BatchDataset` yields whole batches. In each DataLoader worker it reads its own
  part of its rank's part of the epoch (``torch.utils.data.get_worker_info``); the rank and
  world size come from ``torch.distributed`` when a process group is initialized.
- :func:`collate` turns a batch into tensors, with a ``mask`` of real frames.
- :class:`StatefulLoader` wraps a ``DataLoader`` over a :class:`BatchDataset`, counts the
  batches it hands out and gives ``state_dict()`` / ``load_state_dict()``: the position of
  the whole job (every rank takes as many batches under DDP), resumable at another world
  size or number of workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.read.stream import Progress
from pipeline.store.reader import BLOCK_BYTES, AudioDataset


def collate(batch: dict[str, Any]) -> dict[str, Any]:
    """A batch of ``iter_batches`` as tensors.

    Returns
    -------
    dict with ``features`` {name: float32 tensor (batch, frames, *bins)}, ``lengths`` int64
    (batch,), ``mask`` bool (batch, frames) (True on real frames), ``label_index`` int64
    (batch,), and ``ids``, ``labels``, ``index``, ``repeat`` as they were. Under DDP a
    batch with ``repeat`` True repeats earlier examples to keep the ranks in step. A store
    with transcripts adds ``texts``, ``text_ids`` int64 (batch, max characters; 0-padded, 0
    is the CTC blank) and ``text_lengths`` int64 (batch,), as ``torch.nn.CTCLoss`` takes
    them; a store with tags adds ``tags`` float32 (batch, tags), multi-hot.
    """
    lengths = torch.from_numpy(np.asarray(batch["lengths"], np.int64))
    frames = max((int(x.shape[1]) for x in batch["features"].values()), default=0)
    targets = {k: torch.from_numpy(np.asarray(batch[k])) for k in ("text_ids", "text_lengths", "tags") if k in batch}
    if "texts" in batch:
        targets["texts"] = list(batch["texts"])
    return {
        **targets,
        "features": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch["features"].items()},
        "lengths": lengths,
        "mask": torch.arange(frames)[None, :] < lengths[:, None],
        "label_index": torch.from_numpy(np.asarray(batch["label_index"], np.int64)),
        "ids": list(batch["ids"]),
        "labels": list(batch["labels"]),
        "index": int(batch["index"]),
        "repeat": bool(batch["repeat"]),
    }


def _rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return int(rank), int(world_size)
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class BatchDataset(IterableDataset):
    """The batches of one rank of ``ds`` for the current epoch (:meth:`set_epoch`).

    Use it with ``DataLoader(..., batch_size=None)`` (it yields batches) or through
    :class:`StatefulLoader`. Keyword arguments are those of ``AudioDataset.iter_batches``.
    ``rank`` / ``world_size`` default to the initialized process group, else 0 / 1.
    """

    def __init__(self, ds: AudioDataset, batch_size: int | None = None, *, rank: int | None = None, world_size: int | None = None,
                 seed: int = 0, shuffle: bool = True, drop_last: bool = False, max_frames: int | None = None,
                 buckets: int | Sequence[int] = 16, blocks_in_buffer: int = 8, block_bytes: int = BLOCK_BYTES, prefetch: int | None = None):
        super().__init__()
        self.ds = ds
        self.rank, self.world_size = _rank_world(rank, world_size)
        self.kwargs = dict(batch_size=batch_size, seed=seed, shuffle=shuffle, drop_last=drop_last, max_frames=max_frames,
                           buckets=buckets, blocks_in_buffer=blocks_in_buffer, block_bytes=block_bytes, prefetch=prefetch)
        self.epoch = 0
        self.resume_state: dict[str, Any] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def stream(self, worker: int = 0, num_workers: int = 1):
        return self.ds.iter_batches(**self.kwargs, epoch=self.epoch, rank=self.rank, world_size=self.world_size,
                                    worker=worker, num_workers=num_workers, state=self.resume_state)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for batch in self.stream(worker, num_workers):
            yield collate(batch)

    def progress(self, num_workers: int) -> Progress:
        """The job's position at the start of this epoch's run, split over ``num_workers``."""
        return self.stream(0, max(1, num_workers)).progress


class StatefulLoader:
    """A ``DataLoader`` over a :class:`BatchDataset` that knows where the job is.

    ``state_dict()`` after ``k`` batches of an epoch is the position once every rank has
    taken ``k`` (DDP keeps them in step), so rank 0 alone saves it. ``load_state_dict(state)``
    then sets the epoch and the batches left, whatever the world size or ``num_workers``.
    Other keyword arguments go to ``DataLoader`` (``num_workers``, ``multiprocessing_context``,
    ...); workers are started for each epoch, so they see the epoch and the resumed state.
    """

    def __init__(self, dataset: BatchDataset, **loader_kwargs: Any):
        if loader_kwargs.get("persistent_workers"):
            raise ValueError("persistent_workers would keep the previous epoch's dataset in the workers; leave it False")
        loader_kwargs.pop("batch_size", None)
        self.dataset = dataset
        self.num_workers = int(loader_kwargs.get("num_workers", 0))
        self.loader = DataLoader(dataset, batch_size=None, **loader_kwargs)
        self.steps = 0
        self._progress: Progress | None = None

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.dataset.epoch:
            self.dataset.resume_state = None
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return sum(len(self.dataset.stream(w, max(1, self.num_workers))) for w in range(max(1, self.num_workers)))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._progress = self.dataset.progress(self.num_workers)
        self.steps = 0
        for batch in self.loader:
            self.steps += 1
            yield batch
        # the epoch is over: a later epoch starts from its beginning
        self.dataset.resume_state = None

    def state_dict(self) -> dict[str, Any]:
        progress = self._progress or self.dataset.progress(self.num_workers)
        return progress.state(self.steps if self._progress is not None else 0)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.set_epoch(int(state["epoch"]))
        self.dataset.resume_state = dict(state)
        self.dataset.progress(self.num_workers)  # checks the state fits these settings now
        self._progress = None
        self.steps = 0
