"""The pipeline logging to a real MLflow server on 127.0.0.1 instead of the local store (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from tests.helpers import copy_repository, mlflow_server, run

pytestmark = pytest.mark.slow


def test_pipeline_logs_to_a_tracking_server_named_in_dotenv(tmp_path: Path, monkeypatch) -> None:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    root = copy_repository(tmp_path / "repo")
    run(["mnist-lab", "data", "restore"], root)
    with mlflow_server(tmp_path / "server") as url:
        (root / ".env").write_text(f"MLFLOW_TRACKING_URI={url}\nMLFLOW_EXPERIMENT_NAME=remote-e2e\n")
        run(["dvc", "repro"], root)
        client = mlflow.MlflowClient(url)
        experiment = client.get_experiment_by_name("remote-e2e")
        runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
        assert set(runs) == {"sgd", "random_forest", "mlp"}
        for name, run_ in runs.items():
            record = json.loads((root / "reports" / name / "mlflow.json").read_text())
            assert record["run_id"] == run_.info.run_id and record["store"] == url
            assert run_.data.metrics["accuracy"] > 0.85
            assert "figures/confusion_matrix.png" in {
                a.path for a in client.list_artifacts(run_.info.run_id, "figures")
            }
        mlflow.set_tracking_uri(url)
        model = mlflow.pyfunc.load_model(
            json.loads((root / "reports" / "mlp" / "mlflow.json").read_text())["model_uri"]
        )
        assert model.metadata.signature is not None
    assert not (root / "mlflow.db").exists()  # nothing went to the local store
    assert run(["git", "check-ignore", "-q", ".env"], root, check=False).returncode == 0  # never committed
