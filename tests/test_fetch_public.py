"""Fetching and listing through fsspec's public API (pipeline.io.fetch, pipeline.io.fs), against
moto's S3 server on loopback: the content keys read concurrently for the cache, one GET per
object, and forgetting cached listings below a root."""

from __future__ import annotations

import os

import numpy as np

from pipeline.io.fetch import _one_get, cache_file_name, fetch_many
from pipeline.io.fs import content_key, filesystem, forget_listings, local_path
from tests.s3util import BUCKET, put, resolved_options, s3_client, s3_endpoint  # noqa: F401 - s3_endpoint is a fixture


def test_cache_without_listed_keys_reads_every_key_and_stores_each_file_once(s3_endpoint, tmp_path):
    rng = np.random.default_rng(3)
    expected = {}
    for i in range(24):
        name = f"keys/{i:02d} {'[x]' if i % 5 == 0 else ''}é.bin"
        data = rng.bytes(int(rng.integers(1, 5000)))
        put(s3_endpoint, BUCKET, name, data)
        expected[f"s3://{BUCKET}/{name}"] = data
    urls = [*expected, f"s3://{BUCKET}/keys/missing.bin"]
    opts = resolved_options(s3_endpoint)
    got = fetch_many(urls, opts, concurrency=8, cache="filecache", cache_dir=str(tmp_path))
    assert list(got) == urls
    assert {u: got[u] for u in expected} == expected
    assert isinstance(got[urls[-1]], FileNotFoundError)
    # one local copy per object, named by the URL and the object's current size and ETag
    client = s3_client(s3_endpoint)
    names = set()
    for u in expected:
        head = client.head_object(Bucket=BUCKET, Key=u.split("/", 3)[3])
        names.add(cache_file_name(u, f"{head['ContentLength']}:{head['ETag'].strip(chr(34))}"))
    assert set(os.listdir(tmp_path)) == names
    # served from those copies: equal bytes again, and no new files
    assert fetch_many(urls[:-1], opts, concurrency=8, cache="filecache", cache_dir=str(tmp_path)) == expected
    assert set(os.listdir(tmp_path)) == names


def test_s3_reads_ask_for_one_get_per_object_and_other_filesystems_get_no_keyword(s3_endpoint, tmp_path):
    fs, _ = filesystem(f"s3://{BUCKET}/x", resolved_options(s3_endpoint))
    import s3fs
    from packaging.version import Version

    # s3fs documents max_concurrency from 2026.3.0; older ones read a small object with a HEAD and a GET
    assert _one_get(fs) == ({"max_concurrency": 1} if Version(s3fs.__version__) >= Version("2026.3.0") else {})
    local, _ = filesystem(str(tmp_path))
    assert _one_get(local) == {}


def test_forget_listings_drops_the_root_and_everything_below_it_only(s3_endpoint):
    for key in ("tree/a/1.bin", "tree/a/sub/2.bin", "tree/b/3.bin"):
        put(s3_endpoint, BUCKET, key, b"x")
    fs, root = filesystem(f"s3://{BUCKET}/tree/a", resolved_options(s3_endpoint))
    assert root == f"{BUCKET}/tree/a"
    fs.ls(f"{BUCKET}/tree/a/sub")
    fs.ls(f"{BUCKET}/tree/b")
    fs.ls(root)
    assert {f"{BUCKET}/tree/a", f"{BUCKET}/tree/a/sub", f"{BUCKET}/tree/b"} <= set(fs.dircache)
    forget_listings(fs, root)
    assert f"{BUCKET}/tree/a" not in fs.dircache and f"{BUCKET}/tree/a/sub" not in fs.dircache
    assert f"{BUCKET}/tree/b" in fs.dircache
    put(s3_endpoint, BUCKET, "tree/a/sub/new.bin", b"yy")
    assert fs.ls(f"{BUCKET}/tree/a/sub", detail=False) == [f"{BUCKET}/tree/a/sub/2.bin", f"{BUCKET}/tree/a/sub/new.bin"]
    assert content_key(fs.info(f"{BUCKET}/tree/a/sub/new.bin")).startswith("2:")


def test_local_path_of_paths_and_file_urls(tmp_path):
    p = tmp_path / "d [1]" / "a b é.flac"
    assert local_path(str(p)) == local_path(f"file://{p}") == str(p)
