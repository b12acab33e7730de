"""`mnist-lab ui` (what `make ui` runs) serves this repository's store (slow: starts the MLflow UI)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import BIN, free_port, run

pytestmark = pytest.mark.slow


def test_ui_serves_the_runs_of_the_local_store(tmp_path: Path, restored_repo: Path) -> None:
    root = restored_repo
    run(["dvc", "repro", "select"], root)
    port = free_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen(
        [str(BIN / "mnist-lab"), "ui", "--port", str(port)],
        cwd=root / "src",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        body = None
        deadline = time.monotonic() + 90
        while body is None and time.monotonic() < deadline and server.poll() is None:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search",
                data=json.dumps({"max_results": 10}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with contextlib.suppress(OSError):
                body = json.loads(urllib.request.urlopen(request, timeout=2).read())
            time.sleep(0.5)
        assert body is not None, (
            server.communicate(timeout=5)[0] if server.poll() is not None else "no answer"
        )
        assert "mnist-lab" in {e["name"] for e in body["experiments"]}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
