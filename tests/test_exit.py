"""Processes that end after a run (the CLI, the workers' fork server, the API server) leave
their heap to the OS instead of collecting it at exit."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# registered first, so it runs last: after every handler registered by the code under test
PROBE = "import atexit, gc\natexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"


def _frozen_at_exit(code: str) -> bool:
    out = subprocess.run([sys.executable, "-c", PROBE + code], capture_output=True, text=True, cwd=ROOT, timeout=120, check=True).stdout
    return out.strip().splitlines()[-1] == "frozen True"


@pytest.mark.parametrize(
    ("code", "frozen"),
    [
        ("pass", False),
        ("from pipeline.run.warmup import skip_final_collection\nskip_final_collection()", True),
        ("import pipeline.run.warmed", True),  # the fork server's preload
    ],
)
def test_exit_skips_the_final_collection_only_where_asked(code, frozen):
    assert _frozen_at_exit(code) is frozen


def test_the_api_server_command_freezes_its_heap_at_exit():
    from flows import server

    assert "atexit.register(gc.freeze)" in server._UVICORN
    out = subprocess.run([sys.executable, "-c", PROBE + server._UVICORN, "--version"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "uvicorn" in out.stdout.lower() and out.stdout.strip().splitlines()[-1] == "frozen True"
