"""The console script, run as a user runs it (a subprocess), against real stores."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sqlite3
import subprocess
import sys

import pytest

from tests.conftest import base_catalog, write_catalog

BIN = pathlib.Path(sys.executable).with_name("audioprep")


def cli(*args, env_extra=None, timeout=300):
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "200"}
    env.update(env_extra or {})
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_validate_reports_all_problems_with_key_paths(tiny_corpus, tmp_path):
    cat = base_catalog(tiny_corpus, tmp_path / "s.zarr")
    cat["splits"] = {"train": 0.9, "val": 0.2, "test": 0.1}
    cat["audio"]["smaple_rate"] = 1
    cat["sources"][0]["url"] = str(tmp_path / "missing")
    p = write_catalog(tmp_path / "c.yaml", cat)
    r = cli("validate", str(p))
    assert r.returncode == 2
    assert "splits" in r.stderr and "audio.smaple_rate" in r.stderr
    assert "Traceback" not in r.stderr
    cat = base_catalog(tiny_corpus, tmp_path / "s.zarr")
    cat["sources"][0]["url"] = str(tmp_path / "missing")
    r = cli("validate", write_catalog(tmp_path / "c2.yaml", cat).as_posix())
    assert r.returncode == 2 and "sources.0.url" in r.stderr and "does not exist" in r.stderr
    r = cli("validate", write_catalog(tmp_path / "c3.yaml", base_catalog(tiny_corpus, tmp_path / "s.zarr")).as_posix())
    assert r.returncode == 0, r.stderr


def test_every_command_prints_its_help():
    """--help is the first thing a new user types (typer < 0.16 with click >= 8.2 fails it)."""
    from typer.main import get_command

    from audioprep.cli import app

    names = sorted(get_command(app).commands)
    assert {"run", "validate", "report", "inspect", "export", "verify", "serve"} <= set(names)
    r = cli("--help")
    assert r.returncode == 0 and "Usage" in r.stdout, r.stderr
    for name in names:
        r = cli(name, "--help")
        assert r.returncode == 0 and "Usage" in r.stdout, (name, r.stderr[-2000:])


@pytest.mark.slow
def test_run_inspect_export_and_rerun(tiny_corpus, tmp_path):
    p = write_catalog(tmp_path / "c.yaml", base_catalog(tiny_corpus, tmp_path / "s.zarr", features={"log_mel": {"n_mels": 40}, "summaries": ["mean", "std"]}))
    env = {"PREFECT_HOME": str(tmp_path / "prefect")}
    r = cli("run", str(p), "--workers", "2", "--json", str(tmp_path / "sum.json"), env_extra=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    for word in ("train", "val", "test", "rejected files: 0", "store:"):
        assert word in out, word
    assert "sources.0 (demo): 32 file(s) matched" in out, out  # per source, as validate says it
    summary = json.loads((tmp_path / "sum.json").read_text())
    # one throughput, saying what it divides; start-up on its own; where the report went
    x = summary["processed_audio_seconds"] / summary["wall_seconds"]
    assert f"throughput: {x:.1f}x realtime (audio processed this run / wall time)" in out
    assert f"processed {summary['processed_audio_seconds'] / 3600:.4f} h in {summary['partitions']} partition(s)" in out
    assert f"(ready in {summary['ready_seconds']:.1f} s)" in out and 0 < summary["ready_seconds"] < summary["wall_seconds"]
    report_dir = tmp_path / "s.zarr.report" / "v00001"
    assert f"report: {report_dir}" in out and (report_dir / "index.html").exists()
    assert summary["examples"] == 32 and sum(sum(v.values()) for v in summary["counts"].values()) == 32
    # the run's own API wrote task-run states in batches (flows.server.TASK_RUN_RECORDER_BATCHING);
    # the last batch went to its database when it stopped: every partition is recorded, completed
    with contextlib.closing(sqlite3.connect(tmp_path / "prefect" / "prefect.db")) as db:
        states = db.execute("SELECT name, state_type FROM task_run WHERE name LIKE 'partition-%' ORDER BY name").fetchall()
    assert states == [(f"partition-{i:05d}", "COMPLETED") for i in range(summary["partitions"])]
    r = cli("inspect", str(tmp_path / "s.zarr"))
    assert r.returncode == 0 and "log_mel" in r.stdout and "float32" in r.stdout and "provenance" in r.stdout
    r = cli("export", str(tmp_path / "s.zarr"), "--table", "summaries", "--format", "csv", "--out", str(tmp_path / "sum.csv"))
    assert r.returncode == 0, r.stderr
    header = (tmp_path / "sum.csv").read_text().splitlines()[0].split(",")
    assert "label" in header and any(h.startswith("log_mel") and h.endswith("mean") for h in header)
    assert len((tmp_path / "sum.csv").read_text().splitlines()) == 33
    r = cli("export", str(tmp_path / "s.zarr"), "--table", "summaries", "--format", "parquet", "--out", str(tmp_path / "sum.parquet"))
    assert r.returncode == 0, r.stderr
    import pyarrow.parquet as pq

    t = pq.read_table(tmp_path / "sum.parquet")
    assert t.num_rows == 32 and t.column_names == header
    # Answered before any API or cluster starts: an unreachable API URL is never contacted.
    offline = {**env, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    r = cli("run", str(p), "--workers", "1", env_extra=offline)
    assert r.returncode == 0 and "up to date: nothing to do" in r.stdout and "realtime" not in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    # --store stands in for a catalog without output.store
    bare = base_catalog(tiny_corpus, tmp_path / "unused.zarr", features={"log_mel": {"n_mels": 40}, "summaries": ["mean", "std"]})
    del bare["output"]
    r = cli("run", str(write_catalog(tmp_path / "c-no-output.yaml", bare)), "--store", str(tmp_path / "s.zarr"), env_extra=offline)
    assert r.returncode == 0 and "up to date: nothing to do" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    r = cli("run", str(tmp_path / "c-no-output.yaml"), env_extra=offline)
    assert r.returncode == 2 and "output" in r.stderr, r.stderr
    # a store written with other settings is refused the same way, naming the way out
    other = write_catalog(tmp_path / "c-other.yaml", base_catalog(tiny_corpus, tmp_path / "s.zarr", features={"log_mel": {"n_mels": 64}}))
    r = cli("run", str(other), env_extra=offline)
    err = " ".join(r.stderr.split())  # the terminal wraps long paths wherever they end
    assert r.returncode == 2 and "features.log_mel.n_mels: 40 -> 64" in err and "--overwrite" in err, r.stderr
    # a store locked by a live run elsewhere too
    lock = {"host": "another-host", "pid": 1, "run_id": "20260101T000000Z-abcdef", "since": "2026-01-01T00:00:00+00:00"}
    (tmp_path / "s.zarr" / "_lock.json").write_text(json.dumps(lock))
    r = cli("run", str(p), env_extra=offline)
    assert r.returncode == 2 and "is locked by run 20260101T000000Z-abcdef" in " ".join(r.stderr.split()), r.stderr
    assert "Traceback" not in r.stderr


def test_inspect_missing_store_is_a_clear_error(tmp_path):
    r = cli("inspect", str(tmp_path / "nothing.zarr"))
    assert r.returncode == 2 and "no" in r.stderr.lower() and "Traceback" not in r.stderr


@pytest.mark.slow
def test_a_refusal_inside_the_flow_is_one_line(tiny_corpus, tmp_path):
    """Two runs started at once on a new store both pass the early checks; the one that loses
    the lock inside the flow says so in one line, without Prefect's tracebacks."""
    p = write_catalog(tmp_path / "c.yaml", base_catalog(tiny_corpus, tmp_path / "s.zarr", execution={"partition_seconds": 1000}))
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "200", "PREFECT_HOME": str(tmp_path / "prefect"),
           "AUDIOPREP_TEST_PARTITION_DELAY_SECONDS": "10"}  # the winner's one partition still holds the lock when the loser starts
    env.pop("PREFECT_API_URL", None)
    runs = [subprocess.Popen([str(BIN), "run", str(p), "--workers", "1", "--no-report"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for _ in range(2)]
    outs = [r.communicate(timeout=300) for r in runs]
    codes = sorted(r.returncode for r in runs)
    assert codes == [0, 2], outs
    out, err = outs[[r.returncode for r in runs].index(2)]
    assert err.startswith("error: store ") and "is locked by run" in err, err
    assert len(err.strip().splitlines()) <= 3 and "Traceback" not in err and "Finished in state" not in err, err
