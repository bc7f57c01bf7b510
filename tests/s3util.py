"""A real S3 endpoint on loopback for tests and benches: moto's ThreadedMotoServer.

Nothing here mocks the pipeline: s3fs talks HTTP to the moto server exactly as it talks
to AWS. Each server gets its own port, so fsspec's per-process filesystem cache (keyed by
the options, which hold the endpoint URL) never hands one server's client to another.
"""

from __future__ import annotations

import io
import logging
import pathlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import soundfile as sf

ACCESS_KEY = "testing"
SECRET = "SECRET-abc123-DO-NOT-LEAK"
"""Recognisable, so a test can grep every output for it."""
REGION = "us-east-1"
BUCKET = "bucket"
ODD_NAMES = ("tone/spk00_naïve name é.wav", "tone/spk01_take [1].wav")
"""Extra corpus files: a space and non-ASCII characters; glob characters."""


@contextmanager
def moto_server() -> Iterator[str]:
    """Start a ThreadedMotoServer on 127.0.0.1 (free port); yield its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one INFO line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str, *, key: str = ACCESS_KEY, secret: str = SECRET):
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret, region_name=REGION
    )


def make_bucket(endpoint: str, bucket: str) -> None:
    s3_client(endpoint).create_bucket(Bucket=bucket)


def upload_tree(endpoint: str, root: pathlib.Path, bucket: str, prefix: str) -> list[str]:
    """Upload every file under ``root`` to ``s3://bucket/prefix/<relative path>``; return the keys."""
    client = s3_client(endpoint)
    keys = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            key = f"{prefix.strip('/')}/{p.relative_to(root).as_posix()}"
            client.put_object(Bucket=bucket, Key=key, Body=p.read_bytes())
            keys.append(key)
    return keys


def put(endpoint: str, bucket: str, key: str, data: bytes) -> None:
    s3_client(endpoint).put_object(Bucket=bucket, Key=key, Body=data)


def all_objects(endpoint: str, bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Every object under ``prefix``, key -> bytes (read with boto3, not the code under test)."""
    client = s3_client(endpoint)
    out: dict[str, bytes] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


def storage_options(endpoint: str, *, key: str = "${AWS_ACCESS_KEY_ID}", secret: str = "${AWS_SECRET_ACCESS_KEY}") -> dict[str, Any]:
    """Catalog-style s3fs options (``${VAR}`` placeholders by default)."""
    return {"key": key, "secret": secret, "client_kwargs": {"endpoint_url": endpoint, "region_name": REGION}}


def resolved_options(endpoint: str) -> dict[str, Any]:
    """The same options with the credentials filled in, for calls outside a catalog."""
    return storage_options(endpoint, key=ACCESS_KEY, secret=SECRET)


def wav_bytes(y: np.ndarray, sample_rate: int = 16000) -> bytes:
    b = io.BytesIO()
    sf.write(b, y, sample_rate, subtype="PCM_16", format="WAV")
    return b.getvalue()


def tone(freq_hz: float, seconds: float = 0.8, sample_rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.3 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def corpus_with_odd_names(tiny_corpus: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    """A copy of the tiny corpus plus :data:`ODD_NAMES` (34 files)."""
    shutil.copytree(tiny_corpus, dst)
    for i, name in enumerate(ODD_NAMES):
        (dst / name).write_bytes(wav_bytes(tone(300.0 + 50 * i)))
    return dst


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server for this test module, with an empty bucket :data:`BUCKET`."""
    with moto_server() as endpoint:
        make_bucket(endpoint, BUCKET)
        yield endpoint


@pytest.fixture
def s3_env(monkeypatch) -> None:
    """Credentials the way production passes them: environment variables."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
