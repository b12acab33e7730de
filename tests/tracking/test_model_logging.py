"""The model-logging fast path against the pinned MLflow: what it logs loads and predicts exactly as what
MLflow's own `log_model` logs (the fallback, chosen automatically when the internals it relies on are
missing, and run here too). Real sqlite stores."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from mnist_lab import tracking
from mnist_lab.tracking import runs
from tests.helpers import pixel_model_record


def _logged(record, settings) -> tuple[tracking.LoggedRun, Path]:
    logged = tracking.log_model_run(record, settings)
    return logged, Path(mlflow.artifacts.download_artifacts(logged.model_uri))


def _mlmodel(folder: Path) -> dict:
    """The MLmodel file without what differs between any two logged models (ids, times, sizes)."""
    text = yaml.safe_load((folder / "MLmodel").read_text())
    for key in ("run_id", "model_uuid", "model_id", "utc_time_created", "artifact_path", "model_size_bytes"):
        text.pop(key, None)
    for flavor in text["flavors"].values():
        flavor.pop("code", None)
    return text


@pytest.mark.parametrize("kind", ["pyfunc", "sklearn"])
def test_the_fast_path_logs_what_mlflows_log_model_logs(
    kind: str, tracking_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = tracking.TrackingSettings.from_environment(tmp_path)
    mlflow.set_tracking_uri(tracking_store)

    def record():
        made = pixel_model_record()
        made.tags = {"mnist_lab.model": "mlp"}
        if kind == "sklearn":  # a scikit-learn estimator goes in the sklearn flavor, with a signature
            made.model = made.model.pipeline
        return made

    assert runs.model_logging_path() == "fast"  # the pinned MLflow has every internal it relies on
    fast, fast_folder = _logged(record(), settings)
    monkeypatch.setenv(runs.MODEL_LOGGING_ENV, "mlflow-api")
    assert runs.model_logging_path() == "mlflow-api"
    public, public_folder = _logged(record(), settings)

    assert _mlmodel(fast_folder) == _mlmodel(public_folder)
    for name in ("requirements.txt", "python_env.yaml", "input_example.json", "serving_input_example.json"):
        assert (fast_folder / name).read_text() == (public_folder / name).read_text(), name
    example = pixel_model_record().input_example
    answers = [mlflow.pyfunc.load_model(logged.model_uri).predict(example) for logged in (fast, public)]
    if kind == "pyfunc":
        pd.testing.assert_frame_equal(*answers)
    else:
        assert list(answers[0]) == list(answers[1])
    client = mlflow.MlflowClient(tracking_store)
    for logged in (fast, public):
        run = client.get_run(logged.run_id)
        assert run.info.status == "FINISHED"
        model_id = logged.model_uri.removeprefix("models:/")
        assert [output.model_id for output in run.outputs.model_outputs] == [model_id]
        model = client.get_logged_model(model_id)
        assert model.name == "mlp" and model.status.to_proto() == 2  # READY
        assert model.source_run_id == logged.run_id


def test_missing_internals_choose_the_public_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """A future MLflow without one of the internals the fast path uses falls back by itself."""
    from mlflow.tracking.context import registry

    monkeypatch.delattr(registry, "resolve_tags")
    assert runs.model_logging_path() == "mlflow-api"
