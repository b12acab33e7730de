"""A canary secret in `.env`, the whole pipeline against an authenticated MLflow server and an
authenticated DVC remote: the canary is found nowhere it could leak to (slow)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import mlflow
import pytest

from tests.helpers import MlflowServer, run
from tests.servers import basic_auth_http_server

pytestmark = pytest.mark.slow


def all_artifacts(client: mlflow.MlflowClient, run_id: str, folder: Path) -> list[Path]:
    local = Path(client.download_artifacts(run_id, "", str(folder)))
    return [p for p in local.rglob("*") if p.is_file()]


def test_the_canary_is_nowhere(tmp_path: Path, restored_repo: Path, monkeypatch) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    root = restored_repo
    server = MlflowServer(tmp_path / "mlflow", basic_auth=True, admin_password=canary).start()
    outputs: list[str] = []
    try:
        with basic_auth_http_server(tmp_path / "dvc-store", "alice", canary) as remote:
            (root / ".env").write_text(
                f"MLFLOW_TRACKING_URI={server.url}\nMLFLOW_TRACKING_USERNAME=admin\n"
                f"MLFLOW_TRACKING_PASSWORD={canary}\n"
                f"DVC_REMOTE_URL={remote.url}\nDVC_REMOTE_USER=alice\nDVC_REMOTE_PASSWORD={canary}\n"
            )
            for command in (
                ["mnist-lab", "remote", "setup"],
                ["mnist-lab", "data", "restore"],
                ["dvc", "repro"],
                ["mnist-lab", "sync"],
                ["mnist-lab", "report"],
                ["mnist-lab", "remote", "check"],
                ["dvc", "push"],
                ["dvc", "status", "--cloud"],
                ["dvc", "metrics", "show"],
            ):
                done = run(command, root)
                outputs.append(done.stdout + done.stderr)
            run(["git", "add", "-A"], root)
            run(
                ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "experiment"],
                root,
            )

            assert all(canary not in text for text in outputs)
            tracked = run(["git", "ls-files"], root).stdout.split()
            assert ".env" not in tracked and ".dvc/config.local" not in tracked
            assert (root / ".dvc" / "config.local").read_text().count(canary) == 1  # where it belongs
            for path in tracked:
                assert canary.encode() not in (root / path).read_bytes(), path
            history = subprocess.run(["git", "log", "-p", "--all"], cwd=root, capture_output=True).stdout
            assert canary.encode() not in history
            for path in root.rglob("*"):  # every file the pipeline made, cached or not
                if path.is_file() and ".git" not in path.parts and path.name not in (".env", "config.local"):
                    assert canary.encode() not in path.read_bytes(), path
            for path in Path(remote.root).rglob("*"):  # what the DVC remote holds
                if path.is_file():
                    assert canary.encode() not in path.read_bytes(), path

            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", canary)
            client = mlflow.MlflowClient(server.url)
            experiment = client.get_experiment_by_name("mnist-lab")
            runs = client.search_runs([experiment.experiment_id])
            assert len(runs) == 4
            for logged in runs:
                assert canary not in repr(logged.data.params) + repr(logged.data.tags) + repr(
                    logged.data.metrics
                )
                files = all_artifacts(client, logged.info.run_id, tmp_path / "artifacts" / logged.info.run_id)
                assert files
                for path in files:
                    assert canary.encode() not in path.read_bytes(), path
            for path in (tmp_path / "mlflow").rglob("*"):  # the server's own store and artifacts
                if path.is_file() and path.suffix != ".log" and "auth" not in path.name:
                    assert canary.encode() not in path.read_bytes(), path
    finally:
        server.stop()
