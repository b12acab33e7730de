"""The tracking store's runs that no experiment names become rows of the table (a real sqlite store)."""

from __future__ import annotations

import json
import subprocess

import pytest
from fastapi.testclient import TestClient

from mnist_lab.board.app import create_app
from mnist_lab.core.features import pixel_frame
from tests.board.experiment_history import GIT, write_history


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    import mlflow

    root = tmp_path_factory.mktemp("runs")
    commits = write_history(root, 3)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("mnist-lab")

    def new_run(model: str, alpha: str, accuracy: float, **tags: str) -> str:
        run = client.create_run(
            experiment, run_name=f"{model}@{commits[0][:8]}", tags={"mnist_lab.model": model, **tags}
        )
        client.log_param(run.info.run_id, "model.alpha", alpha)
        client.log_param(run.info.run_id, "seed", "42")
        client.log_metric(run.info.run_id, "accuracy", accuracy)
        for epoch in (1, 2, 3):
            client.log_metric(run.info.run_id, "train_loss", 1.0 / epoch, step=epoch)
        client.set_terminated(run.info.run_id)
        return run.info.run_id

    linked = new_run("mlp", "0.001", 0.95, **{"mnist_lab.git_commit": commits[0]})
    loose = new_run(
        "mlp", "0.01", 0.97, **{"mnist_lab.git_commit": commits[0], "mnist_lab.git_dirty": "true"}
    )
    candidate = client.create_run(experiment, tags={"mlflow.parentRunId": loose}).info.run_id
    # an experiment commit naming `linked` in its trailers
    (root / "metrics.json").write_text(json.dumps({"models": {"mlp": {"accuracy": 0.95}}}))
    message = f"Experiment: linked\n\nMLflow-Run: mlp run={linked} record={'0' * 32}\n"
    subprocess.run([*GIT, "commit", "-qam", message], cwd=root, check=True)
    return root, uri, {"linked": linked, "loose": loose, "candidate": candidate}


def test_runs_no_experiment_names_are_rows_with_their_params_and_metrics(store, monkeypatch) -> None:
    root, uri, runs = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    http = TestClient(create_app(root))
    rows = http.get("/api/runs").json()["rows"]
    assert [row["id"] for row in rows] == [f"run:{runs['loose']}"]  # not the linked one, not a candidate
    row = rows[0]
    assert row["source"] == "run" and row["dirty"] is True and row["model"] == "mlp"
    assert row["dirty_because"] == ["uncommitted changes (the run's git/uncommitted.diff)"]
    assert row["params.models.mlp.alpha"] == 0.01 and row["params.seed"] == 42
    assert row["metrics.models.mlp.accuracy"] == 0.97 and row["accuracy"] == 0.97
    table = http.get("/api/experiments", params={"runs": "true", "q": "source = run and accuracy > 0.96"})
    assert [r["id"] for r in table.json()["rows"]] == [f"run:{runs['loose']}"]
    assert len(http.get("/api/experiments").json()["rows"]) == 4  # without runs=true: the commits only
    # a label on a run row is in the answer and the table at once, not after the store is read again
    page = TestClient(create_app(root), headers={"X-Mnist-Lab": "board"})
    page.get("/api/runs")
    labelled = page.post("/api/labels", json={"experiment": f"run:{runs['loose']}", "label": "baseline"})
    assert labelled.status_code == 200 and labelled.json()["labels"] == ["baseline"]
    assert page.get("/api/runs").json()["rows"][0]["labels"] == ["baseline"]
    # the digit pad answers with a run's logged model: this one logged none
    refused = page.get("/api/model", params={"experiment": f"run:{runs['loose']}"})
    assert refused.status_code == 400
    assert refused.json()["error"] == (
        f"run:{runs['loose']} logged no model: the pad answers with a model; pick another row"
    )


def test_a_run_row_compares_with_its_curves_from_the_store(store, monkeypatch) -> None:
    root, uri, runs = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    http = TestClient(create_app(root))
    head = http.get("/api/experiments").json()["rows"][0]["id"]
    answer = http.get("/api/compare", params={"ids": f"{head},run:{runs['loose']}"}).json()
    curve = answer["curves"][f"run:{runs['loose']}"]["mlp"]
    assert [point["epoch"] for point in curve] == [1, 2, 3] and curve[2]["train_loss"] == pytest.approx(1 / 3)
    assert answer["params"]["models.mlp.alpha"]["values"][1] == 0.01


def test_an_unreachable_store_leaves_the_table_working(store, monkeypatch) -> None:
    root, _, _ = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    http = TestClient(create_app(root))
    answer = http.get("/api/runs")
    assert answer.status_code == 503 and "cannot read the tracking store's runs" in answer.json()["error"]
    assert len(http.get("/api/experiments").json()["rows"]) == 4
    for path in ("/api/experiments?runs=true", f"/api/experiments/run:{'a' * 32}"):  # what needs the runs
        answer = http.get(path)
        assert answer.status_code == 503, path
        assert "cannot read the tracking store's runs" in answer.json()["error"], path


# last: it adds a run to the module's store
def test_the_pad_answers_with_a_run_rows_logged_model(store, monkeypatch) -> None:
    """A run no commit records (a `dvc exp run` discarded, a notebook's): its own logged model answers,
    the pyfunc `mnist-lab serve --model <its URI>` would serve."""
    import numpy as np

    from mnist_lab import tracking
    from tests.helpers import pixel_model_record

    root, uri, _ = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    record = pixel_model_record()
    record.tags = {"mnist_lab.model": "logistic"}
    logged = tracking.log_model_run(record, tracking.TrackingSettings.from_environment(root))
    page = TestClient(create_app(root), headers={"X-Mnist-Lab": "board"})
    assert f"run:{logged.run_id}" in [row["id"] for row in page.get("/api/runs").json()["rows"]]
    described = page.get("/api/model", params={"experiment": f"run:{logged.run_id}"}).json()
    assert described["n_pixels"] == 16 and described["model"].startswith(
        f"logistic of run {logged.run_id[:12]}"
    )
    pixels = np.random.default_rng(1).integers(0, 256, size=(60, 16))[:4]
    answer = page.post("/api/predict", json={"pixels": pixels.tolist(), "experiment": f"run:{logged.run_id}"})
    assert answer.status_code == 200, answer.json()
    expected = record.model.predict(None, pixel_frame(pixels))["label"].tolist()
    assert [p["label"] for p in answer.json()["predictions"]] == expected


def test_a_run_of_a_commit_this_clone_lacks_compares_without_a_diff(store, monkeypatch) -> None:
    """A run logged by a teammate at a commit never fetched here (a shared store): comparing it failed as a
    whole (400, git's "bad object"), metrics and curves with it. It compares, with a note for the diff."""
    import mlflow

    root, uri, _ = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("mnist-lab").experiment_id
    elsewhere = "f" * 40
    run = client.create_run(experiment, tags={"mnist_lab.model": "mlp", "mnist_lab.git_commit": elsewhere})
    client.log_metric(run.info.run_id, "accuracy", 0.5)
    client.set_terminated(run.info.run_id)
    try:
        http = TestClient(create_app(root))
        head = http.get("/api/experiments").json()["rows"][0]["id"]
        answer = http.get("/api/compare", params={"ids": f"{head},run:{run.info.run_id}"})
        assert answer.status_code == 200, answer.text
        diff = answer.json()["diffs"][f"run:{run.info.run_id}"]
        assert diff["text"] == ""
        assert diff["note"] == "commit ffffffffffff is not in this clone (`git fetch` it): no diff"
        assert answer.json()["metrics"]["models.mlp.accuracy"]["values"][1] == 0.5
    finally:
        client.delete_run(run.info.run_id)
