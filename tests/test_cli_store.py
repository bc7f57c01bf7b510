"""The store commands as a user runs them (the console script, a subprocess): verify,
unlock, unknown versions, `run --overwrite`'s refusals, and stores on S3 (moto's server)
reached with --catalog or --storage-options."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import base_catalog, write_catalog
from tests.s3util import ACCESS_KEY, BUCKET, SECRET, all_objects, resolved_options, s3_client, s3_endpoint, storage_options, upload_tree
from tests.test_verify_store import built, store  # noqa: F401 - fixtures shared with the library tests

__all__ = ["s3_endpoint"]  # the module's fixture

BIN = pathlib.Path(sys.executable).with_name("audioprep")


def cli(*args, env_extra=None, timeout=300):
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "200"}
    env.update(env_extra or {})
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=timeout, env=env)




def s3_catalog(tiny_corpus, tmp_path, url, endpoint):
    """A catalog whose store is on S3, with ``${VAR}`` credentials in its storage options."""
    return {**base_catalog(tiny_corpus, tmp_path / "unused"), "output": {"store": url, "storage_options": storage_options(endpoint)}}


def test_verify_exit_codes_and_the_damage_listed(store):
    r = cli("verify", str(store))
    assert r.returncode == 0 and "no damage" in r.stdout and "8 shard(s)" in r.stdout, r.stdout + r.stderr
    assert cli("export", str(store), "--table", "examples", "--format", "csv", "--out", str(store.parent / "x.csv")).returncode == 0
    os.remove(store / "features/log_mel/c/1/0")
    b = bytearray((store / "features/mfcc/c/3/0").read_bytes())
    b[100] ^= 4
    (store / "features/mfcc/c/3/0").write_bytes(bytes(b))
    r = cli("verify", str(store), "--json", str(store.parent / "v.json"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "2 damaged object(s)" in r.stderr
    assert "features/log_mel/c/1/0" in r.stderr and "missing" in r.stderr
    assert "features/mfcc/c/3/0" in r.stderr and "checksum" in r.stderr
    found = json.loads((store.parent / "v.json").read_text())
    assert found["ok"] is False and {d["shard"] for d in found["damage"]} == {"features/log_mel/c/1/0", "features/mfcc/c/3/0"}
    rows = (store.parent / "x.csv").read_text().splitlines()
    head = rows[0].split(",")
    table = [dict(zip(head, line.split(","))) for line in rows[1:]]
    in_shard = sorted(t["id"] for t in table if int(t["offset"]) < 8192 and int(t["offset"]) + int(t["length"]) > 4096 and int(t["length"]) > 0)
    assert sorted(next(d for d in found["damage"] if d["array"] == "features/log_mel")["example_ids"]) == in_shard
    assert all(i in r.stderr for i in in_shard[:3])
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("command", [("inspect",), ("export", "--table", "examples"), ("report", "--out", "REPORT")])
def test_an_unknown_version_names_the_versions(store, command):
    args = [str(store.parent / "rep") if a == "REPORT" else a for a in command]
    r = cli(args[0], str(store), *args[1:], "--version", "9")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "has no version 9; its versions: 1" in r.stderr and "KeyError" not in r.stderr and "Traceback" not in r.stderr


def test_unlock_refuses_a_live_lock_without_force(store):
    lock = {"host": "another-host", "pid": 1, "run_id": "20260101T000000Z-abcdef", "since": "2026-01-01T00:00:00+00:00"}
    (store / "_lock.json").write_text(json.dumps(lock))
    r = cli("unlock", str(store))
    assert r.returncode == 2 and "locked by run 20260101T000000Z-abcdef" in r.stderr and "--force" in r.stderr, r.stderr
    assert json.loads((store / "_lock.json").read_text()) == lock
    r = cli("unlock", str(store), "--force")
    assert r.returncode == 0 and "lock removed" in r.stdout and "20260101T000000Z-abcdef" in r.stdout and "another-host" in r.stdout, r.stdout
    assert not (store / "_lock.json").exists()
    r = cli("unlock", str(store))
    assert r.returncode == 0 and "no lock was held" in r.stdout


def test_run_overwrite_refuses_what_is_not_a_store(tiny_corpus, tmp_path, store):
    env = {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": "http://127.0.0.1:9/api"}  # never reached
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    cat = write_catalog(tmp_path / "c.yaml", base_catalog(tiny_corpus, home))
    r = cli("run", str(cat), "--overwrite", env_extra=env)
    assert r.returncode == 2 and "not an audioprep store" in r.stderr and "thesis.tex" in r.stderr, r.stderr
    assert (home / "thesis.tex").read_text() == "years of work"
    (store / "notes.txt").write_text("mine")
    cat = write_catalog(tmp_path / "c2.yaml", base_catalog(tiny_corpus, store))
    r = cli("run", str(cat), "--overwrite", env_extra=env)
    assert r.returncode == 2 and "notes.txt" in r.stderr and "not deleted" in r.stderr, r.stderr
    assert (store / "zarr.json").exists() and (store / "features/log_mel/c/0/0").exists()
    (store / "notes.txt").unlink()
    lock = {"host": "another-host", "pid": 1, "run_id": "20260101T000000Z-live", "since": "2026-01-01T00:00:00+00:00"}
    (store / "_lock.json").write_text(json.dumps(lock))
    r = cli("run", str(cat), "--overwrite", env_extra=env)
    assert r.returncode == 2 and "is locked by run 20260101T000000Z-live" in r.stderr, r.stderr
    assert (store / "zarr.json").exists() and (store / "features/log_mel/c/0/0").exists()
    assert "Traceback" not in r.stderr


def test_store_commands_reach_an_s3_store(built, tiny_corpus, tmp_path, s3_endpoint):
    prefix = "cli/s.zarr"
    upload_tree(s3_endpoint, built, BUCKET, prefix)
    url = f"s3://{BUCKET}/{prefix}"
    cat = write_catalog(tmp_path / "c.yaml", s3_catalog(tiny_corpus, tmp_path, url, s3_endpoint))
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
    opts = json.dumps(resolved_options(s3_endpoint))
    outs = []

    def ok(*args):
        r = cli(*args, env_extra=env)
        outs.append(r.stdout + r.stderr)
        assert r.returncode == 0, r.stdout + r.stderr
        return r

    assert "log_mel" in ok("inspect", "--catalog", str(cat)).stdout
    assert "log_mel" in ok("inspect", url, "--storage-options", opts).stdout
    ok("export", "--catalog", str(cat), "--table", "examples", "--format", "csv", "--out", str(tmp_path / "e.csv"))
    assert len((tmp_path / "e.csv").read_text().splitlines()) == 33
    assert "no damage" in ok("verify", "--catalog", str(cat)).stdout
    ok("report", "--catalog", str(cat), "--out", str(tmp_path / "rep"))
    assert (tmp_path / "rep" / "index.html").exists()
    # the lock: refused while its run may be alive, removed with --force
    lock = {"host": "another-host", "pid": 1, "run_id": "20260101T000000Z-s3", "since": "2026-01-01T00:00:00+00:00"}
    s3_client(s3_endpoint).put_object(Bucket=BUCKET, Key=f"{prefix}/_lock.json", Body=json.dumps(lock).encode())
    r = cli("unlock", "--catalog", str(cat), env_extra=env)
    outs.append(r.stdout + r.stderr)
    assert r.returncode == 2 and "20260101T000000Z-s3" in r.stderr and "--force" in r.stderr, r.stderr
    assert f"{prefix}/_lock.json" in all_objects(s3_endpoint, BUCKET, prefix)
    assert "20260101T000000Z-s3" in ok("unlock", "--catalog", str(cat), "--force").stdout
    assert f"{prefix}/_lock.json" not in all_objects(s3_endpoint, BUCKET, prefix)
    # a deleted shard object on S3 is found
    s3_client(s3_endpoint).delete_object(Bucket=BUCKET, Key=f"{prefix}/features/mfcc/c/2/0")
    r = cli("verify", url, "--storage-options", opts, env_extra=env)
    outs.append(r.stdout + r.stderr)
    assert r.returncode == 1 and "features/mfcc/c/2/0" in r.stderr and "missing" in r.stderr, r.stdout + r.stderr
    assert not any(SECRET in o for o in outs)


def test_a_lock_error_on_an_s3_store_prints_an_unlock_command_that_works(built, tiny_corpus, tmp_path, s3_endpoint):
    prefix = "locked/s.zarr"
    upload_tree(s3_endpoint, built, BUCKET, prefix)
    url = f"s3://{BUCKET}/{prefix}"
    cat = write_catalog(tmp_path / "c.yaml", s3_catalog(tiny_corpus, tmp_path, url, s3_endpoint))
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    lock = {"host": "another-host", "pid": 1, "run_id": "20260101T000000Z-dead", "since": "2026-01-01T00:00:00+00:00"}
    s3_client(s3_endpoint).put_object(Bucket=BUCKET, Key=f"{prefix}/_lock.json", Body=json.dumps(lock).encode())
    r = cli("run", str(cat), env_extra=env)
    assert r.returncode == 2 and "is locked by run 20260101T000000Z-dead" in r.stderr, r.stderr
    printed = next(line for line in r.stderr.splitlines() if "audioprep unlock" in line and "--catalog" in line)
    command = printed.split("audioprep unlock", 1)[1].split()
    r = cli("unlock", *command, env_extra=env)
    assert r.returncode == 0 and "20260101T000000Z-dead" in r.stdout, r.stdout + r.stderr
    assert f"{prefix}/_lock.json" not in all_objects(s3_endpoint, BUCKET, prefix)


@pytest.mark.slow
def test_run_overwrite_rebuilds_a_store_and_removes_its_report(tiny_corpus, tmp_path, store):
    report = tmp_path / "s.zarr.report" / "v00007"
    report.mkdir(parents=True)
    (report / "index.html").write_text("old")
    (store / "features/log_mel/c/1/0").write_bytes(b"damaged")
    cat = write_catalog(tmp_path / "c.yaml", base_catalog(tiny_corpus, store))
    r = cli("run", str(cat), "--overwrite", "--workers", "1", "--no-report", env_extra={"PREFECT_HOME": str(tmp_path / "prefect")})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"deleted store {store}" in r.stdout and not report.exists()
    r = cli("verify", str(store))
    assert r.returncode == 0 and "no damage" in r.stdout, r.stdout + r.stderr
    assert not (store / "_lock.json").exists()
