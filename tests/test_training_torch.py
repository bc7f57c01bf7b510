"""pipeline.torch with a real DataLoader (in-process and spawned workers) and a resumable loader.

Skipped where torch is not installed: it is not a dependency of audioprep (`make bench`
installs the CPU wheel; see docs/training.md)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch; `make bench` installs the CPU wheel)")

from pipeline import open_dataset  # noqa: E402
from pipeline.torch import BatchDataset, StatefulLoader, collate  # noqa: E402

SMALL = 64 << 10


def test_collate_makes_tensors_and_a_mask(reader_store):
    ds = open_dataset(str(reader_store))
    batch = next(ds.iter_batches(4, block_bytes=SMALL))
    t = collate(batch)
    assert t["features"]["log_mel"].dtype == torch.float32
    assert torch.equal(t["features"]["log_mel"], torch.from_numpy(batch["features"]["log_mel"]))
    assert t["mask"].shape == batch["features"]["log_mel"].shape[:2]
    assert t["mask"].sum(1).tolist() == batch["lengths"].tolist()
    assert t["label_index"].tolist() == batch["label_index"].tolist()


@pytest.mark.parametrize("num_workers,context", [(0, None), (2, "spawn")])
def test_dataloader_workers_split_the_rank_exactly(reader_store, num_workers, context):
    ds = open_dataset(str(reader_store))
    whole = {b["index"]: b["ids"] for b in ds.iter_batches(6, seed=4, epoch=1, block_bytes=SMALL)}
    got = {}
    for rank in range(2):
        data = BatchDataset(ds, 6, rank=rank, world_size=2, seed=4, block_bytes=SMALL)
        data.set_epoch(1)
        loader = StatefulLoader(data, num_workers=num_workers, multiprocessing_context=context)
        batches = list(loader)
        assert len(batches) == len(loader) == 10
        for b in batches:
            assert b["ids"] == whole[b["index"]]
            if not b["repeat"]:
                assert b["index"] not in got
                got[b["index"]] = b["ids"]
    assert sorted(got) == list(range(20))


def test_stateful_loader_resumes_with_other_workers_and_ranks(reader_store):
    ds = open_dataset(str(reader_store))
    data = BatchDataset(ds, 5, rank=0, world_size=1, seed=9, block_bytes=SMALL)
    loader = StatefulLoader(data, num_workers=0)
    loader.set_epoch(3)
    first = []
    for b in loader:
        first.append(b)
        if len(first) == 7:
            break
    state = loader.state_dict()
    assert state["epoch"] == 3
    second = []
    for rank in range(2):
        again = StatefulLoader(BatchDataset(ds, 5, rank=rank, world_size=2, seed=9, block_bytes=SMALL), num_workers=0)
        again.load_state_dict(state)
        assert again.epoch == 3
        second += list(again)
    real = [b["index"] for b in first + second if not b["repeat"]]
    assert sorted(real) == list(range(24))
    with pytest.raises(ValueError, match="persistent_workers"):
        StatefulLoader(data, num_workers=1, persistent_workers=True)
