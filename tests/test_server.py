"""The local Prefect API process: starts, answers, exports its URL, stops; a real port
conflict is a clear error."""

from __future__ import annotations

import json
import os
import socket
import urllib.request

import pytest

from flows import server


def test_local_api_answers_exports_its_url_and_stops(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    seen = []
    with server.prefect_api(while_starting=seen.append) as url:
        assert seen == [url] and os.environ["PREFECT_API_URL"] == url and url.startswith("http://127.0.0.1:")
        with server._DIRECT.open(f"{url}/health", timeout=5) as r:
            assert r.status == 200 and json.loads(r.read()) is True
        port = int(url.rsplit(":", 1)[1].split("/")[0])
    assert "PREFECT_API_URL" not in os.environ
    with pytest.raises(OSError):
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"http://127.0.0.1:{port}/api/health", timeout=2)


def test_a_port_taken_by_another_process_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        monkeypatch.setattr(server, "free_port", lambda: busy.getsockname()[1])
        with pytest.raises(RuntimeError, match="local Prefect API exited with code"):
            with server.prefect_api():
                pass
    assert "PREFECT_API_URL" not in os.environ
