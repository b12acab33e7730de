"""Helpers shared by tests: run commands, copy the repository, make images."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(
    command: list[str], cwd: Path, env: dict | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run a command with this environment's executables first on PATH; fail with its output."""
    full_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
    done = subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def copy_repository(destination: Path) -> Path:
    """A fresh git repository holding this repository's committed files as they are in the working tree
    (what a clone would have, plus uncommitted edits to tracked files)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True)
    for relative in filter(None, listed.stdout.decode().split("\0")):
        source = REPO_ROOT / relative
        if source.is_file():
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    run(["git", "init", "-q", "-b", "main"], destination)
    run(["git", "add", "-A"], destination)
    run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "commit", "-qm", "copy"],
        destination,
    )
    return destination


def random_images(count: int, rows: int, cols: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images and balanced labels 0-9."""
    generator = np.random.default_rng(seed)
    images = generator.integers(0, 256, size=(count, rows, cols), dtype=np.uint8)
    labels = (np.arange(count) % 10).astype(np.uint8)
    return images, labels


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(folder: Path, extra_args: tuple[str, ...] = (), env: dict | None = None) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 (one worker), store and artifacts in `folder`; yields its URL."""
    import time
    import urllib.request

    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        str(BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{folder / 'server.db'}",
        "--artifacts-destination",
        str(folder / "artifacts"),
        *extra_args,
    ]
    log = open(folder / "server.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"mlflow server did not start:\n{(folder / 'server.log').read_text()[-3000:]}"
                )
            time.sleep(0.3)
        yield url
    finally:
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
