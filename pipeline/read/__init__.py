"""Reading a store for training jobs (``AudioDataset.iter_batches`` in ``pipeline.store.reader``).

- ``chunks``: bulk decoding of feature rows straight from the shard objects;
- ``plan``: an epoch's global batch list (blocks, shuffling windows, duration buckets) and
  its split over ranks and DataLoader workers, pure functions of the example table;
- ``stream``: one worker's batches, fetched ahead on threads, with a resumable position;
- ``views``: ``open_xarray`` and the join metadata of the Parquet export.

``pipeline.open_dataset`` and ``pipeline.open_xarray`` are the entry points; ``pipeline.torch``
wraps ``iter_batches`` for PyTorch.
"""
