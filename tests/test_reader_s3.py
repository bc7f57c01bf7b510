"""The reader on a moto S3 endpoint: bulk range reads with prefetching return what the local
store returns, and damage on S3 is named as it is locally."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import open_dataset
from pipeline.errors import StoreError
from tests.s3util import BUCKET, resolved_options, s3_client, s3_endpoint, upload_tree  # noqa: F401 - s3_endpoint is a fixture

SMALL = 64 << 10


@pytest.fixture(scope="module")
def s3_store(s3_endpoint, reader_store):
    upload_tree(s3_endpoint, reader_store, BUCKET, "reader.zarr")
    return f"s3://{BUCKET}/reader.zarr"


@pytest.mark.parametrize("prefetch", [0, 8])
def test_s3_batches_equal_local_batches_across_ranks(s3_endpoint, s3_store, reader_store, prefetch):
    remote = open_dataset(s3_store, storage_options=resolved_options(s3_endpoint))
    local = open_dataset(str(reader_store))
    assert remote._reader("log_mel").format is not None  # the bulk path, not zarr's
    for rank in range(2):
        kw = dict(seed=2, epoch=1, rank=rank, world_size=2, block_bytes=SMALL)
        a = list(remote.iter_batches(11, prefetch=prefetch, **kw))
        b = list(local.iter_batches(11, **kw))
        assert [x["index"] for x in a] == [x["index"] for x in b]
        for x, y in zip(a, b):
            assert x["ids"] == y["ids"]
            for name in x["features"]:
                np.testing.assert_array_equal(x["features"][name], y["features"][name])
    i = 77
    np.testing.assert_array_equal(remote[i]["features"]["mfcc"], local[i]["features"]["mfcc"])


def test_a_missing_shard_on_s3_is_named(s3_endpoint, reader_store):
    upload_tree(s3_endpoint, reader_store, BUCKET, "damaged.zarr")
    s3_client(s3_endpoint).delete_object(Bucket=BUCKET, Key="damaged.zarr/features/log_mel/c/1/0")
    ds = open_dataset(f"s3://{BUCKET}/damaged.zarr", storage_options=resolved_options(s3_endpoint))
    with pytest.raises(StoreError, match=r"features/log_mel/c/1/0 \(rows 8192-.*shard object is missing"):
        list(ds.iter_batches(16, shuffle=False, prefetch=4, block_bytes=SMALL))
