"""The recipes of docs/training.md ("Training jobs"), run as written: DDP on 2 CPU processes
with gloo (where torch is installed), resume after a hard crash, duration buckets."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from pipeline import open_dataset

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "training.md").read_text()


def recipe(name: str, tmp_path: pathlib.Path) -> pathlib.Path:
    blocks = [b for b in re.findall(r"```python\n(.*?)```", DOC, re.S) if b.startswith(f"# recipe: {name}\n")]
    assert len(blocks) == 1, f"docs/training.md has {len(blocks)} '# recipe: {name}' blocks"
    path = tmp_path / f"{name}.py"
    path.write_text(blocks[0])
    return path


def run(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_ddp_recipe_on_two_cpu_processes_sees_every_example_once_per_epoch(reader_store, tmp_path):
    pytest.importorskip("torch", reason="torch is not installed: the DDP recipe needs it (`make bench` installs the CPU wheel)")
    script = recipe("ddp", tmp_path)
    proc = run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(reader_store), "--workers", "1"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("epoch ")]
    assert [ln.split(":")[0] for ln in lines] == ["epoch 0", "epoch 1"]
    for ln in lines:
        assert "120 examples on 2 ranks, each exactly once: True" in ln


def test_resume_recipe_after_a_crash_trains_on_each_example_once_per_epoch(reader_store, tmp_path):
    script, ckpt = recipe("resume", tmp_path), tmp_path / "ckpt.json"
    crashed = run([str(script), str(reader_store), str(ckpt), "--crash-after", "3"])
    assert crashed.returncode == 1 and "done" not in crashed.stdout
    assert json.loads(ckpt.read_text())["reader"]["epoch"] == 0
    crashed = run([str(script), str(reader_store), str(ckpt), "--crash-after", "4"])  # crosses into epoch 1
    assert crashed.returncode == 1
    done = run([str(script), str(reader_store), str(ckpt)])
    assert done.returncode == 0 and "done: 1 steps in this run" in done.stdout, done.stdout + done.stderr
    trained = [json.loads(line) for line in (tmp_path / "ckpt.json.trained").read_text().splitlines()]
    ds = open_dataset(str(reader_store), "train")
    for e in (0, 1):
        rows = [t for t in trained if t["epoch"] == e]
        assert [t["index"] for t in rows] == [0, 1, 2, 3]  # 120 in batches of 32, in order, none twice
        whole = list(ds.iter_batches(32, seed=0, epoch=e))
        assert [t["ids"] for t in rows] == [b["ids"] for b in whole]


def test_buckets_recipe_reports_the_padding_it_reads(reader_store, tmp_path):
    proc = run([str(recipe("buckets", tmp_path)), str(reader_store)])
    assert proc.returncode == 0, proc.stderr
    planned = re.search(r"padding efficiency ([\d.]+) \(batches of 16: ([\d.]+)\)", proc.stdout)
    read = re.search(r"read 120 examples, padding efficiency ([\d.]+)", proc.stdout)
    assert planned and read, proc.stdout
    assert planned.group(1) == read.group(1)
    assert float(planned.group(1)) > float(planned.group(2))
    ds = open_dataset(str(reader_store), "train")
    plan = ds.plan_epoch(ds.batch_settings(None, max_frames=2000, buckets=8))
    assert float(read.group(1)) == pytest.approx(plan.padding()["padding_efficiency"], abs=5e-4)
    assert all(len(b) * ds.frames[b].max() <= 2000 for b in plan.batches if len(b) > 1)
    assert np.sort(np.concatenate(plan.batches)).tolist() == list(range(120))
