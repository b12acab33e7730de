"""The pipeline logging to a real MLflow server on 127.0.0.1 instead of the local store (slow)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

from mnist_lab import tracking
from mnist_lab.datasets.folder import read_dataset
from mnist_lab.tracking import TrackingConfigError, TrackingSettings, check_server, outbox, runs
from tests.helpers import ADMIN_PASSWORD, BIN, MLFLOW2, MlflowServer, mlflow_server, pixel_model_record, run

pytestmark = pytest.mark.slow


def test_pipeline_logs_to_a_tracking_server_named_in_dotenv(tmp_path: Path, restored_repo: Path) -> None:
    root = restored_repo
    with mlflow_server(tmp_path / "server") as url:
        (root / ".env").write_text(f"MLFLOW_TRACKING_URI={url}\nMLFLOW_EXPERIMENT_NAME=remote-e2e\n")
        run(["dvc", "repro"], root)
        client = mlflow.MlflowClient(url)
        experiment = client.get_experiment_by_name("remote-e2e")
        runs = {r.data.tags["mnist_lab.model"]: r for r in client.search_runs([experiment.experiment_id])}
        assert set(runs) == {"sgd", "random_forest", "mlp", "cnn"}
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
        assert (
            model.metadata.get_input_schema() is None
        )  # it checks its input itself (mnist_lab.serving.pyfunc)
        assert "probability_0" in model.predict(model.input_example).columns
    assert not (root / "mlflow.db").exists()  # nothing went to the local store
    assert run(["git", "check-ignore", "-q", ".env"], root, check=False).returncode == 0  # never committed


@pytest.fixture
def auth_server(tmp_path: Path):
    server = MlflowServer(tmp_path / "auth-server", basic_auth=True).start()
    yield server
    server.stop()


def test_credentials_are_checked_before_any_training(auth_server: MlflowServer, restored_repo: Path) -> None:
    settings = TrackingSettings(auth_server.url, "mnist-lab", None)
    admin = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}
    assert check_server(settings, environ=admin) is None  # no such experiment yet
    with pytest.MonkeyPatch.context() as environment:  # not for the repro below: .env must decide there
        environment.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        environment.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
        created = mlflow.MlflowClient(auth_server.url).create_experiment("mnist-lab")
    assert check_server(settings, environ=admin) == created  # logging needs no lookup then
    with pytest.raises(TrackingConfigError, match=r"\(none is set\)"):
        check_server(settings, environ={})

    root = restored_repo
    (root / ".env").write_text(
        f"MLFLOW_TRACKING_URI={auth_server.url}\nMLFLOW_TRACKING_USERNAME=admin\nMLFLOW_TRACKING_PASSWORD=wrong-one\n"
    )
    started = time.monotonic()
    done = run(["dvc", "repro"], root, check=False)
    elapsed = time.monotonic() - started
    assert done.returncode != 0
    message = done.stdout + done.stderr
    assert (
        "rejected the credentials (401): set MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD in .env"
        in message
    )
    assert "wrong-one" not in message
    assert not list(root.glob("models/*/classifier.joblib"))  # stopped before the first model was trained
    assert elapsed < 60, elapsed  # prepare + featurize + the check, not minutes of retries


@pytest.mark.timeout(1200)  # its own limits: 300 s for the first run to land, then 600 s for the pipeline
def test_server_lost_mid_run_then_everything_synced_once(tmp_path: Path, restored_repo: Path) -> None:
    root = restored_repo
    server = MlflowServer(tmp_path / "server").start()
    try:
        (root / ".env").write_text(f"MLFLOW_TRACKING_URI={server.url}\nMLFLOW_EXPERIMENT_NAME=lossy\n")
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        repro = subprocess.Popen(
            ["dvc", "repro"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        client = mlflow.MlflowClient(server.url)
        first = root / "reports" / "sgd" / "mlflow.json"  # rewritten once the first run has fully landed
        committed = first.read_text()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and repro.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                if first.read_text() != committed and json.loads(first.read_text()).get("run_id"):
                    break
            time.sleep(0.1)
        server.stop(kill=True)  # the first run has landed: the server crashes
        output, _ = repro.communicate(timeout=600)
        assert repro.returncode == 0, output[-3000:]  # training and the pipeline finished regardless
        pending = sorted((root / ".mnist-lab" / "outbox").iterdir())
        assert len(pending) == 3, output[-3000:]
        for model in ("random_forest", "mlp", "cnn"):
            assert json.loads((root / "reports" / model / "mlflow.json").read_text())["state"] == "pending"

        server.start()  # back, same port and store
        sync = run(["mnist-lab", "sync"], root)
        assert "sent 3 run(s)" in sync.stdout
        assert not any((root / ".mnist-lab" / "outbox").iterdir())
        again = run(["mnist-lab", "sync"], root)
        assert "nothing to send" in again.stdout

        experiment = client.get_experiment_by_name("lossy")
        runs = client.search_runs([experiment.experiment_id])
        by_record = {r.data.tags["mnist_lab.record_id"]: r for r in runs}
        assert len(runs) == len(by_record) == 4  # nothing duplicated
        for model in ("sgd", "random_forest", "mlp", "cnn"):
            link = json.loads((root / "reports" / model / "mlflow.json").read_text())
            logged = by_record[link["record_id"]]
            assert logged.info.status == "FINISHED" and logged.info.run_name.startswith(f"{model}@")
            recorded = json.loads((root / "reports" / model / "metrics.json").read_text())
            assert {k: logged.data.metrics[k] for k in recorded} == recorded
            assert logged.data.params["model.name"] == model
            assert {"figures/confusion_matrix.png", "figures/roc.png"} <= {
                a.path for a in client.list_artifacts(logged.info.run_id, "figures")
            }
            # the model landed whole: loaded from the server, it predicts what the evaluate stage predicted
            (output,) = client.get_run(logged.info.run_id).outputs.model_outputs
            mlflow.set_tracking_uri(server.url)
            served = mlflow.pyfunc.load_model(f"models:/{output.model_id}")
            test = read_dataset(root / "data")
            pixels = test.test_images.reshape(len(test.test_images), -1).astype(float)
            frame = pd.DataFrame(pixels, columns=[f"pixel_{i}" for i in range(pixels.shape[1])])
            predicted = pd.read_csv(root / "reports" / model / "predictions.csv")["predicted"].tolist()
            assert served.predict(frame)["label"].tolist() == predicted, model
        mlp = by_record[json.loads((root / "reports" / "mlp" / "mlflow.json").read_text())["record_id"]]
        history = [
            float(line.split(",")[3])
            for line in (root / "reports" / "mlp" / "history.csv").read_text().splitlines()[1:]
        ]
        assert [m.value for m in client.get_metric_history(mlp.info.run_id, "val_loss")] == history

        # every command finds the runs sent later by their record ids (reports/*/mlflow.json say pending)
        sent_ids = {
            model: by_record[json.loads((root / "reports" / model / "mlflow.json").read_text())["record_id"]]
            for model in ("random_forest", "mlp", "cnn")
        }
        report = run(["mnist-lab", "report"], root).stdout
        assert all(r.info.run_id in report for r in sent_ids.values()) and "pending" not in report, report
        assert json.loads((root / "registry.json").read_text())["registered"] is False  # cnn was waiting
        registered = run(["dvc", "repro", "-f", "-s", "register"], root)
        # not MLflow's "Waiting up to 300 seconds for model version to finish creation" (a REST store's)
        assert "Waiting up to" not in registered.stdout + registered.stderr
        registry = json.loads((root / "registry.json").read_text())
        best = json.loads((root / "best_model.json").read_text())["model"]
        assert registry["registered"] is True and registry["run_id"] == sent_ids[best].info.run_id
        committed = run(["mnist-lab", "commit", "-m", "lossy experiment"], root)
        assert "its runs are tagged with it" in committed.stdout and "warning" not in committed.stderr
        head = run(["git", "rev-parse", "HEAD"], root).stdout.strip()
        listed = dict(line.split("\t")[:2] for line in run(["mnist-lab", "runs"], root).stdout.splitlines())
        assert {m: listed[m] for m in sent_ids} == {m: r.info.run_id for m, r in sent_ids.items()}
        for logged in sent_ids.values():
            assert (
                run(["mnist-lab", "commit-of", logged.data.tags["mnist_lab.record_id"]], root).stdout.strip()
                == head
            )
            assert client.get_run(logged.info.run_id).data.tags["mnist_lab.results_commit"] == head

        server.stop(kill=True)  # linking while the server is away: said once, never announced as tagged
        linked = run(["mnist-lab", "link", "HEAD"], root, check=False)
        assert linked.returncode == 1  # nothing tagged: a script running it sees so
        assert "not every run tagged (nothing committed)" in linked.stdout
        assert "tagged the runs" not in linked.stdout and "committed" not in linked.stdout.replace(
            "nothing committed", ""
        )
        assert linked.stderr.count("could not tag the runs of sgd, random_forest, mlp, cnn") == 1
    finally:
        server.stop()


def test_an_mlflow_2_server_gets_the_model_as_run_artifacts(tmp_path: Path, restored_repo: Path) -> None:
    """DagsHub's hosted MLflow is 2.x: no logged-model endpoints. The model still lands, in MLflow format."""
    assert MLFLOW2.exists(), "build the MLflow 2.x server environment first: make .venv-mlflow2/.installed"
    root = restored_repo
    server = MlflowServer(tmp_path / "server2", mlflow=MLFLOW2).start()
    try:
        version = subprocess.run([str(MLFLOW2), "--version"], capture_output=True, text=True).stdout
        assert " 2." in version, version
        (root / ".env").write_text(f"MLFLOW_TRACKING_URI={server.url}\n")
        done = run(["dvc", "repro"], root)
        assert "no logged-model endpoints" in done.stdout + done.stderr
        assert not (root / ".mnist-lab" / "outbox").exists()  # nothing had to wait
        client = mlflow.MlflowClient(server.url)
        experiment = client.get_experiment_by_name("mnist-lab")
        runs = {r.data.tags["mnist_lab.model"]: r for r in client.search_runs([experiment.experiment_id])}
        assert set(runs) == {"sgd", "random_forest", "mlp", "cnn"}
        assert {r.info.status for r in runs.values()} == {"FINISHED"}
        link = json.loads((root / "reports" / "mlp" / "mlflow.json").read_text())
        assert link["model_uri"] == f"runs:/{link['run_id']}/model"
        # found again by its record id (a run another clone sent): MLflow 3's list_artifacts(run, "model")
        # asks the logged-model endpoints first, which this server answers 404
        settings = TrackingSettings(server.url, "mnist-lab", None)
        record_id = runs["mlp"].data.tags["mnist_lab.record_id"]
        found = outbox.find_sent_run(root, record_id, settings)
        assert found is not None and (found.run_id, found.model_uri) == (link["run_id"], link["model_uri"])
        assert tracking.logged_model_uri(client, runs["mlp"]) == link["model_uri"]
        mlflow.set_tracking_uri(server.url)
        model = mlflow.pyfunc.load_model(link["model_uri"])
        example = json.loads(
            Path(mlflow.artifacts.download_artifacts(f"{link['model_uri']}/input_example.json")).read_text()
        )
        assert len(model.predict(pd.DataFrame(**example))) == len(example["data"])
    finally:
        server.stop()


def test_a_run_logged_with_concurrent_requests_is_complete(
    auth_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uploads, metrics batches and nested runs go to a server 4 at a time: everything lands once, the run
    ends after all of it, and a failed upload fails the run and its model instead of finishing them."""
    record = pixel_model_record()
    record.params = {f"p{i:03d}": i for i in range(150)}
    record.history = [{"epoch": float(e), **{f"m{k}": e + k / 10 for k in range(10)}} for e in range(1, 251)]
    record.artifacts = {f"figures/f{i}.txt": f"figure {i}".encode() for i in range(6)} | {
        "top.csv": b"a\n1\n"
    }
    record.children = [tracking.ChildRunRecord(f"c{i}", {"alpha": i}, {"cv_score": i / 10}) for i in range(3)]
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    in_flight, peak, lock = [0], [0], threading.Lock()
    send = requests.Session.request

    def counting(session: requests.Session, *args, **kwargs):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        try:
            return send(session, *args, **kwargs)
        finally:
            with lock:
                in_flight[0] -= 1

    monkeypatch.setattr(requests.Session, "request", counting)
    settings = TrackingSettings(auth_server.url, "concurrent", None)
    logged = tracking.log_model_run(record, settings)
    assert 2 <= peak[0] <= tracking.REMOTE_REQUESTS_AT_ONCE
    client = mlflow.MlflowClient(auth_server.url)
    run_ = client.get_run(logged.run_id)
    assert run_.info.status == "FINISHED"
    assert run_.data.params == {key: str(value) for key, value in record.params.items()}
    for k in range(10):
        history = client.get_metric_history(logged.run_id, f"m{k}")
        assert sorted((m.step, m.value) for m in history) == [(e, e + k / 10) for e in range(1, 251)]
    artifacts = {a.path for a in client.list_artifacts(logged.run_id, "figures")}
    assert artifacts == {f"figures/f{i}.txt" for i in range(6)}
    assert {a.path for a in client.list_artifacts(logged.run_id)} == {"figures", "top.csv"}
    children = client.search_runs(
        [logged.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{logged.run_id}'"
    )
    assert sorted(c.info.run_name for c in children) == ["c0", "c1", "c2"]
    assert {c.info.status for c in children} == {"FINISHED"}
    model = client.get_logged_model(logged.model_uri.removeprefix("models:/"))
    assert str(model.status) == "READY" and model.source_run_id == logged.run_id
    mlflow.set_tracking_uri(auth_server.url)
    loaded = mlflow.pyfunc.load_model(logged.model_uri)
    expected = record.model.predict(None, record.input_example)
    assert np.array_equal(loaded.predict(record.input_example)["label"], expected["label"])

    upload = MlflowArtifactsRepository.log_artifact

    def refusing(self: MlflowArtifactsRepository, local_file: str, artifact_path: str | None = None) -> None:
        if local_file.endswith("python_model.pkl"):
            raise OSError("upload refused")
        upload(self, local_file, artifact_path)

    monkeypatch.setattr(MlflowArtifactsRepository, "log_artifact", refusing)
    record.record_id = runs._new_record_id()
    with pytest.raises(OSError, match="upload refused"):
        tracking.log_model_run(record, settings)
    failed = client.search_runs(
        [logged.experiment_id], filter_string=f"tags.`mnist_lab.record_id` = '{record.record_id}'"
    )
    assert [r.info.status for r in failed] == ["FAILED"]
    models = client.search_logged_models([logged.experiment_id], filter_string="name = 'model'")
    assert sorted(str(m.status) for m in models) == ["FAILED", "READY"]
