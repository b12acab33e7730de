import csv
import json
import re
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.linear_model import LogisticRegression

from mnist_lab import tracking
from mnist_lab.core.errors import MnistLabError
from mnist_lab.system import workspace
from mnist_lab.system.redact import display_uri
from mnist_lab.tracking import runs, server
from tests.helpers import pixel_model_record, run, run_children, run_record


def make_repo(root: Path, dvc_yaml: str = "stages: {}\n") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dvc.yaml").write_text(dvc_yaml)
    return root


def test_repository_root_is_found_from_below_and_from_dvc_temp_runs(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    (root / "src" / "deep").mkdir(parents=True)
    assert workspace.repository_root(root / "src" / "deep") == root.resolve()
    temp_run = make_repo(root / ".dvc" / "tmp" / "exps" / "tmpabc123")
    assert workspace.repository_root(temp_run) == root.resolve()  # runs land in the owning repo's store
    assert workspace.workspace_root(temp_run / "src") == temp_run.resolve()  # tags describe what ran
    with pytest.raises(MnistLabError, match="no repository found"):
        workspace.repository_root(Path("/"))


def test_default_store_is_at_the_repository_root_not_the_cwd(tmp_path: Path, monkeypatch) -> None:
    root = make_repo(tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    settings = tracking.TrackingSettings.from_environment(root, environ={})
    assert settings.tracking_uri == f"sqlite:///{root}/mlflow.db"
    assert settings.artifact_location == (root / "mlartifacts").as_uri()
    assert settings.experiment_name == "mnist-lab" and settings.is_local


def test_env_file_is_read_but_the_environment_wins(tmp_path: Path, monkeypatch) -> None:
    root = make_repo(tmp_path / "repo")
    (root / ".env").write_text(
        "MLFLOW_TRACKING_URI=http://127.0.0.1:5999\nMLFLOW_EXPERIMENT_NAME=from-file\n"
    )
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    settings = tracking.TrackingSettings.from_environment(root)
    assert settings.tracking_uri == "http://127.0.0.1:5999" and not settings.is_local
    assert settings.experiment_name == "from-env" and settings.artifact_location is None


def test_display_uri_hides_credentials() -> None:
    assert display_uri("https://user:s3cret@dagshub.com/o/r.mlflow") == "https://dagshub.com/o/r.mlflow"
    assert display_uri("sqlite:///x/mlflow.db") == "sqlite:///x/mlflow.db"
    # "@" in a password: removed whole. With another "@" after a "/", as here, all up to the last "@" goes:
    # it cannot be told from a password holding "@" and an unencoded "/" (`jane:p@ss/word@host`), whose
    # rest urllib would show as the address (never a password shown, at the cost of this URL's host)
    assert display_uri("https://u:p@ss@h.example/x/a@b") == "https://b"
    assert display_uri("https://u:p@ss@h.example/x") == "https://h.example/x"


def test_output_globs_come_from_dvc_yaml(repo_root: Path) -> None:
    globs = tracking.pipeline_output_globs(repo_root)
    assert {
        "dvc.lock",
        "metrics.json",
        "metrics.csv",
        "params.yml",
        "reports/*/metrics.json",
        "models/*",
    } <= set(globs)
    assert "params.yaml" not in globs and "data" not in globs


def test_git_state_ignores_pipeline_outputs_but_not_sources(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", "stages:\n  s:\n    cmd: x\n    outs:\n      - metrics.json\n")
    (root / "params.yaml").write_text("seed: 1\n")
    (root / "metrics.json").write_text("{}\n")
    (root / "src").mkdir()
    (root / "src" / "kept.py").write_text("X = 0\n")
    run(["git", "init", "-q", "-b", "main"], root)
    run(["git", "add", "-A"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "init"], root)
    clean = tracking.git_state(root)
    assert clean.commit and len(clean.commit) == 40 and clean.branch == "main" and not clean.dirty
    (root / "metrics.json").write_text('{"a": 1}\n')
    (root / "dvc.lock").write_text("schema: '2.0'\n")
    (root / "labels.yaml").write_text("abc: [hidden]\n")  # `mnist-lab label`: about experiments, not an input
    assert not tracking.git_state(root).dirty
    # new files no stage reads (`dvc plots show`'s page, a batch prediction): every run was called dirty
    (root / "dvc_plots").mkdir()
    (root / "dvc_plots" / "index.html").write_text("<html></html>\n")
    (root / "predictions.csv").write_text("label\n1\n")
    assert not tracking.git_state(root).dirty
    (root / "src" / "new module é.py").write_text("X = 1\n")  # new code is a change (a name git quotes)
    assert tracking.git_state(root).changed_paths == ("src/new module é.py",)
    (root / "src" / "new module é.py").unlink()
    (root / "notes").mkdir()
    (root / "src.txt").write_text("")  # a name that starts like src/ but is not in it
    assert not tracking.git_state(root).dirty
    (root / "params.yaml").write_text("seed: 2\n")
    dirty = tracking.git_state(root)
    assert dirty.dirty and dirty.changed_paths == ("params.yaml",)


def test_data_version_reads_data_dvc(repo_root: Path, tmp_path: Path) -> None:
    recorded = yaml.safe_load((repo_root / "data.dvc").read_text())["outs"][0]["md5"]
    assert tracking.data_version(repo_root) == recorded
    assert tracking.data_version(tmp_path) is None


def test_log_model_run_records_everything(tracking_store: str, tmp_path: Path) -> None:
    import mlflow

    x = np.random.default_rng(0).random((40, 4))
    y = (x[:, 0] > 0.5).astype(int)
    model = LogisticRegression().fit(x, y)
    example = pd.DataFrame(x[:3], columns=[f"pixel_{i}" for i in range(4)])
    record = tracking.ModelRunRecord(
        run_name="lr",
        params={"model.C": 1.0, "seed": 3, "model.layers": [1, 2]},
        metrics={"accuracy": np.float64(0.9)},
        history=[{"epoch": 1.0, "val_loss": 0.7}, {"epoch": 2.0, "val_loss": 0.5}],
        tags={"mnist_lab.model": "lr"},
        artifacts={"figures/a.txt": b"hello"},
        model=model,
        input_example=example,
    )
    settings = tracking.TrackingSettings.from_environment(tmp_path)
    logged = tracking.log_model_run(record, settings)
    client = mlflow.MlflowClient(tracking_store)
    run_data = client.get_run(logged.run_id)
    assert run_data.info.status == "FINISHED" and run_data.info.run_name == "lr"
    assert run_data.data.params == {"model.C": "1.0", "seed": "3", "model.layers": "[1, 2]"}
    assert run_data.data.metrics["accuracy"] == 0.9
    assert run_data.data.tags["mnist_lab.model"] == "lr"
    history = client.get_metric_history(logged.run_id, "val_loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.7), (2, 0.5)]
    assert (
        Path(
            mlflow.artifacts.download_artifacts(
                run_id=logged.run_id, artifact_path="figures/a.txt", tracking_uri=tracking_store
            )
        ).read_bytes()
        == b"hello"
    )
    linked = client.get_logged_model(logged.model_uri.removeprefix("models:/")).metrics
    assert {m.key: m.value for m in linked if m.step == 0}["accuracy"] == 0.9  # the model knows its metrics
    loaded = mlflow.pyfunc.load_model(logged.model_uri)
    assert loaded.predict(example).tolist() == model.predict(x[:3]).tolist()
    requirements = Path(mlflow.pyfunc.get_model_dependencies(logged.model_uri)).read_text()
    assert "scikit-learn==" in requirements and "mlflow==" in requirements


def test_a_failure_while_logging_marks_the_run_failed(tracking_store: str, tmp_path: Path) -> None:
    import mlflow

    class Unpredictable:
        def predict(self, _):
            raise RuntimeError("boom")

    record = tracking.ModelRunRecord(
        run_name="bad",
        params={},
        metrics={"a": 1.0},
        model=Unpredictable(),
        input_example=pd.DataFrame({"x": [1.0]}),
    )
    with pytest.raises(RuntimeError, match="boom"):
        tracking.log_model_run(record, tracking.TrackingSettings.from_environment(tmp_path))
    runs = mlflow.search_runs(experiment_names=["tests"], output_format="list")
    assert [r.info.status for r in runs] == ["FAILED"]
    models = mlflow.MlflowClient(tracking_store).search_logged_models([runs[0].info.experiment_id])
    assert [str(m.status) for m in models] == ["FAILED"]  # no model left PENDING


@pytest.mark.parametrize("kind", ["sklearn", "cnn"])
def test_the_logged_model_loads_where_mnist_lab_is_not_installed(
    tracking_store: str, tmp_path: Path, kind: str
) -> None:
    """The model holds this package's pixel scaling (or the CNN's wrapper); it is pickled by value, so
    serving it needs no copy of the package (no code_paths) and no mnist_lab install; a CNN's model lists
    Keras and its backend among its requirements."""
    import mlflow

    record = pixel_model_record(kind)
    logged = tracking.log_model_run(record, tracking.TrackingSettings.from_environment(tmp_path))
    local = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=logged.model_uri, dst_path=str(tmp_path / "m"))
    )
    assert not (local / "code").exists()
    required = {line.split("==")[0] for line in (local / "requirements.txt").read_text().split()}
    assert ({"keras", "jax", "jaxlib"} <= required) == (kind == "cnn")
    script = (
        "import sys; sys.modules['mnist_lab'] = None\n"  # any import of mnist_lab now fails
        "import io, json, mlflow.pyfunc, pandas as pd\n"
        "model = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "frame = pd.read_json(io.StringIO(sys.argv[2]), orient='split')\n"  # int pixels: accepted
        "print(json.dumps(model.predict(frame).to_dict(orient='records')))\n"
    )
    example = record.input_example.to_json(orient="split")
    result = subprocess.run(
        [sys.executable, "-c", script, str(local), example], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    expected = record.model.predict(None, record.input_example)
    assert json.loads(result.stdout) == expected.to_dict(orient="records")
    import cloudpickle

    assert not cloudpickle.cloudpickle._PICKLE_BY_VALUE_MODULES  # the registration does not outlive the call


def test_params_and_metrics_share_as_few_batches_as_mlflows_limits_allow(
    tracking_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    batches: list[tuple[int, int]] = []
    log_batch = mlflow.MlflowClient.log_batch

    def counting(self, run_id, metrics=(), params=(), tags=(), **kwargs):
        batches.append((len(params), len(metrics)))
        return log_batch(self, run_id, metrics=metrics, params=params, tags=tags, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", counting)
    record = tracking.ModelRunRecord(
        run_name="big",
        params={f"p{i:03d}": i for i in range(250)},
        metrics={"accuracy": 0.5},
        history=[{"epoch": float(e), **{f"m{k}": e / 10 for k in range(10)}} for e in range(1, 201)],
    )
    logged = tracking.log_model_run(record, tracking.TrackingSettings.from_environment(tmp_path))
    assert batches == [(100, 900), (100, 900), (50, 201)]  # 250 params, 2,001 points
    run = mlflow.MlflowClient(tracking_store).get_run(logged.run_id)
    assert len(run.data.params) == 250 and run.data.params["p249"] == "249"
    history = mlflow.MlflowClient(tracking_store).get_metric_history(logged.run_id, "m9")
    assert len(history) == 200


def test_a_run_is_not_finished_before_its_metrics_are_in(
    tracking_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow.entities import LoggedModelStatus

    client = mlflow.MlflowClient(tracking_store)
    seen: list[str] = []
    log_batch = mlflow.MlflowClient.log_batch

    def watching(self, run_id, *args, **kwargs):
        seen.append(client.get_run(run_id).info.status)
        return log_batch(self, run_id, *args, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", watching)
    record = pixel_model_record()
    record.history = [{"epoch": float(e), **{f"m{k}": 0.1 for k in range(10)}} for e in range(1, 151)]
    logged = tracking.log_model_run(record, tracking.TrackingSettings.from_environment(tmp_path))
    assert seen == ["RUNNING", "RUNNING"]  # 1,501 points: two batches, both before the run's end
    assert client.get_run(logged.run_id).info.status == "FINISHED"
    model = client.get_logged_model(logged.model_uri.removeprefix("models:/"))
    assert model.status == LoggedModelStatus.READY and model.source_run_id == logged.run_id
    assert [output.model_id for output in client.get_run(logged.run_id).outputs.model_outputs] == [
        model.model_id
    ]


def test_an_experiment_gone_since_the_check_is_looked_up_again(tracking_store: str, tmp_path: Path) -> None:
    import dataclasses

    import mlflow

    settings = dataclasses.replace(tracking.TrackingSettings.from_environment(tmp_path), experiment_id="999")
    logged = tracking.log_model_run(run_record(), settings)
    experiment = mlflow.MlflowClient(tracking_store).get_experiment_by_name("tests")
    assert logged.experiment_id == experiment.experiment_id != "999"


def test_run_all_calls_every_task_and_raises_the_first_failure() -> None:
    import threading
    import time

    calls: list[int] = []
    runs._run_all([lambda i=i: calls.append(i) for i in range(5)], workers=1)
    assert calls == [0, 1, 2, 3, 4]  # one worker: in order, in this thread

    threads: set[str] = set()
    started = threading.Barrier(2, timeout=5)

    def together() -> None:  # both run at once, or the barrier times out
        threads.add(threading.current_thread().name)
        started.wait()

    runs._run_all([together, together], workers=4)
    assert len(threads) == 2 and threading.current_thread().name not in threads

    def failing() -> None:
        raise ValueError("upload refused")

    later: list[int] = []
    tasks = [failing, *[lambda: (time.sleep(0.05), later.append(1)) for _ in range(20)]]
    with pytest.raises(ValueError, match="upload refused"):
        runs._run_all(tasks, workers=2)
    assert len(later) <= 3  # the queued ones were cancelled (the two workers may have started one each)


def test_the_check_returns_the_experiment_id_unless_it_is_deleted() -> None:
    answer = b'{"experiment": {"experiment_id": "7", "name": "x", "lifecycle_stage": "active"}}'
    assert server._active_experiment_id(answer) == "7"
    assert server._active_experiment_id(answer.replace(b"active", b"deleted")) is None
    for odd in (b"", b"<html>", b"{}", b'{"experiment": null}', b'{"experiment": {"experiment_id": 7}}'):
        assert server._active_experiment_id(odd) is None


def test_dagshub_files_have_the_loggers_format(tmp_path: Path) -> None:
    metrics_path, params_path = tmp_path / "metrics.csv", tmp_path / "params.yml"
    with tracking.dagshub_files(metrics_path, params_path) as logger:
        logger.log_hyperparams({"models.sgd.alpha": 0.001, "seed": 42})
        logger.log_metrics({"sgd.accuracy": 0.95}, step_num=1)
        logger.log_metrics({"mlp.val_loss": 0.5}, step_num=2)
    rows = list(csv.reader(metrics_path.open()))
    assert rows[0] == ["Name", "Value", "Timestamp", "Step"]
    assert [(r[0], float(r[1]), int(r[3])) for r in rows[1:]] == [
        ("sgd.accuracy", 0.95, 1),
        ("mlp.val_loss", 0.5, 2),
    ]
    assert all(len(r[2]) == 13 and r[2].isdigit() for r in rows[1:])  # integer milliseconds
    assert yaml.safe_load(params_path.read_text()) == {"models.sgd.alpha": 0.001, "seed": 42}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "params.yml"]


def test_dagshub_files_keep_the_last_good_files_when_logging_fails(tmp_path: Path) -> None:
    metrics_path, params_path = tmp_path / "metrics.csv", tmp_path / "params.yml"
    metrics_path.write_text("previous\n")
    params_path.write_text("previous: 1\n")
    with (
        pytest.raises(ValueError, match="crash"),
        tracking.dagshub_files(metrics_path, params_path) as logger,
    ):
        logger.log_metrics({"a": 1.0})
        raise ValueError("crash")
    assert metrics_path.read_text() == "previous\n" and params_path.read_text() == "previous: 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "params.yml"]


def test_as_python_scalar() -> None:
    assert type(tracking.as_python_scalar(np.float32(0.5))) is float
    assert type(tracking.as_python_scalar(np.int64(3))) is int
    assert tracking.as_python_scalar([1, 2]) == "[1, 2]"


def _log_one(uri: str, index: int) -> str:
    import os

    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["MLFLOW_EXPERIMENT_NAME"] = "parallel"
    record = tracking.ModelRunRecord(run_name=f"r{index}", params={"i": index}, metrics={"m": float(index)})
    return tracking.log_model_run(record, tracking.TrackingSettings.from_environment(Path("/"))).run_id


def test_parallel_runs_on_a_new_store_all_land(tmp_path: Path) -> None:
    """Several processes creating a new sqlite store at once corrupt it unless one migrates it first."""
    import multiprocessing

    import mlflow

    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        run_ids = pool.starmap(_log_one, [(uri, i) for i in range(4)])
    runs = mlflow.MlflowClient(uri).search_runs(
        [mlflow.MlflowClient(uri).get_experiment_by_name("parallel").experiment_id]
    )
    assert sorted(r.info.run_id for r in runs) == sorted(run_ids)
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_dagshub_repo_builds_the_hosted_mlflow_uri(tmp_path: Path) -> None:
    settings = tracking.TrackingSettings.from_environment(
        tmp_path, environ={"DAGSHUB_REPO": "jane/mnist-lab"}
    )
    assert settings.tracking_uri == "https://dagshub.com/jane/mnist-lab.mlflow" and settings.is_remote
    explicit = {"DAGSHUB_REPO": "jane/mnist-lab", "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}
    assert (
        tracking.TrackingSettings.from_environment(tmp_path, environ=explicit).tracking_uri
        == explicit["MLFLOW_TRACKING_URI"]
    )
    with pytest.raises(tracking.TrackingConfigError, match="DAGSHUB_REPO='jane' is not <owner>/<repo>"):
        tracking.TrackingSettings.from_environment(tmp_path, environ={"DAGSHUB_REPO": "jane"})
    # the forms a user pastes read as the same repository, for MLflow as for DVC (datasets/remote.py)
    for pasted in ("jane/mnist-lab/", "jane/mnist-lab.git", "https://dagshub.com/jane/mnist-lab"):
        settings = tracking.TrackingSettings.from_environment(tmp_path, environ={"DAGSHUB_REPO": pasted})
        assert settings.tracking_uri == "https://dagshub.com/jane/mnist-lab.mlflow"


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        (
            "127.0.0.1:5000",
            r"'127.0.0.1:5000' is not a tracking store this package logs to: a server is http",
        ),
        ("mlflow.db", r"'mlflow.db' is not a tracking store this package logs to"),
        ("file:./mlruns", r"'file:./mlruns' is not a tracking store"),
        ("ftp://127.0.0.1/x", r"scheme 'ftp' is not an MLflow tracking store"),
        ("http://:5000", r"names no host"),
        ("http://127.0.0.1:abc", r"is not a valid address \(Port could not be cast"),
        ("http://127.0.0.1:99999", r"is not a valid address \(Port out of range"),
        ("http://[::1", r"is not a valid address \(Invalid IPv6 URL"),
        ("http://jane:s3cret@127.0.0.1:5000", r"holds credentials: put them in MLFLOW_TRACKING_USERNAME"),
        # the local store's path (made relative to the root), lock and artifacts go by `sqlite:///`
        ("sqlite+pysqlite:///mlflow.db", r"write a local store as sqlite:///<path> .*without a driver"),
        ("sqlite://", r"names no database file \(an in-memory store loses every run"),
        # a password with an unencoded "/": urllib read host `jane`, port `s3cret`, and the message showed it
        ("http://jane:s3cret/x@127.0.0.1:5000", r"holds credentials: put them in MLFLOW_TRACKING_USERNAME"),
        (
            "http://127.0.0.1:5000/#/experiments/1",
            r"a page's address, not the server's: .*http://127.0.0.1:5000$",
        ),
    ],
)
def test_a_tracking_uri_mlflow_cannot_use_is_refused_before_any_request(
    tmp_path: Path, uri: str, problem: str
) -> None:
    with pytest.raises(tracking.TrackingConfigError, match=problem) as refused:
        tracking.TrackingSettings.from_environment(tmp_path, environ={"MLFLOW_TRACKING_URI": uri})
    assert "s3cret" not in str(refused.value)


def test_tracking_uris_mlflow_takes_are_kept(tmp_path: Path) -> None:
    def uri(value: str) -> str:
        environ = {"MLFLOW_TRACKING_URI": value}
        return tracking.TrackingSettings.from_environment(tmp_path, environ=environ).tracking_uri

    assert uri("HTTP://127.0.0.1:5000") == "http://127.0.0.1:5000"  # remote: checked, outbox, links
    assert tracking.TrackingSettings("HTTP://x", "e", None).is_remote is False  # why it is lower-cased
    assert uri("https://dagshub.com/jane/mnist.mlflow") == "https://dagshub.com/jane/mnist.mlflow"
    assert uri("sqlite:///store.db") == f"sqlite:///{tmp_path / 'store.db'}"
    assert uri("postgresql+psycopg2://u@db/mlflow") == "postgresql+psycopg2://u@db/mlflow"
    # SQLAlchemy reads a database URL's password, "/" and all (urllib took `pa` for a port)
    assert uri("postgresql://mlflow:pa/ss@db:5432/mlflow") == "postgresql://mlflow:pa/ss@db:5432/mlflow"
    assert uri("databricks") == "databricks"


def test_request_limits_must_be_numbers_and_credentials_not_placeholders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environ = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "30s"}
    with pytest.raises(tracking.TrackingConfigError, match=r"TIMEOUT='30s' is not a whole number of seconds"):
        tracking.TrackingSettings.from_environment(tmp_path, environ=environ)
    with pytest.raises(tracking.TrackingConfigError, match=r"RETRIES='-1' is not a whole number"):
        tracking.TrackingSettings.from_environment(
            tmp_path, environ={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "-1"}
        )
    # MLflow reads them as whole numbers, at its first request (after the training): 12.5 was let through
    for name in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        with pytest.raises(tracking.TrackingConfigError, match=rf"{name}='12.5' is not a whole number"):
            tracking.TrackingSettings.from_environment(tmp_path, environ={name: "12.5"})
    import mlflow.environment_variables as mlflow_variables

    accepted = {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "12",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
    }
    assert tracking.TrackingSettings.from_environment(tmp_path, environ=accepted).is_local
    for name, value in accepted.items():  # and MLflow takes what the check accepts
        monkeypatch.setenv(name, value)
        assert getattr(mlflow_variables, name).get() == int(value)
    placeholder = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000", "MLFLOW_TRACKING_PASSWORD": "<token>"}
    with pytest.raises(
        tracking.TrackingConfigError, match=r"PASSWORD is still .env.example's placeholder <token>"
    ):
        tracking.TrackingSettings.from_environment(tmp_path, environ=placeholder)


def test_local_stores_need_no_check(tmp_path: Path) -> None:
    tracking.check_server(tracking.TrackingSettings.from_environment(tmp_path, environ={}))  # no network


def test_an_unreachable_server_is_reported_in_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that takes the connection and never answers: each attempt ends at the timeout and the
    waits between attempts are bounded (counted, not timed: the machines are shared)."""
    import socket

    from mnist_lab.tracking import server

    waits: list[float] = []
    monkeypatch.setattr(server.time, "sleep", waits.append)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (the kernel does), never answers a request
    try:
        settings = tracking.TrackingSettings(f"http://127.0.0.1:{silent.getsockname()[1]}", "x", None)
        away = "did not answer after 3 attempts.*timed out"
        with pytest.raises(tracking.TrackingServerUnreachable, match=away):
            tracking.check_server(settings, environ={}, timeout=0.2)
    finally:
        silent.close()
    assert waits == [1, 2]  # 3 attempts: worst case 3 x CHECK_TIMEOUT_S + 3 s
    assert server.CHECK_ATTEMPTS * server.CHECK_TIMEOUT_S + sum(waits) <= 20


def test_an_unreachable_server_names_the_variable_its_address_came_from() -> None:
    """With DAGSHUB_REPO alone, 'check MLFLOW_TRACKING_URI' pointed at a variable the user never set."""
    from tests.helpers import free_port

    settings = tracking.TrackingSettings(f"http://127.0.0.1:{free_port()}", "x", None)
    for environ, named in (
        ({"DAGSHUB_REPO": "jane/mnist"}, "check DAGSHUB_REPO (the server's address is made of it)"),
        (
            {"DAGSHUB_REPO": "jane/mnist", "MLFLOW_TRACKING_URI": settings.tracking_uri},
            "check MLFLOW_TRACKING_URI",
        ),
        ({}, "check MLFLOW_TRACKING_URI"),
    ):
        with pytest.raises(tracking.TrackingServerUnreachable, match=re.escape(named)):
            tracking.check_server(settings, environ=environ, attempts=1)


def test_nested_runs_hang_under_their_parent(tracking_store: str, tmp_path: Path) -> None:
    import mlflow

    record = run_record()
    record.children = run_children(3)
    logged = tracking.log_model_run(record, tracking.TrackingSettings.from_environment(tmp_path))
    client = mlflow.MlflowClient(tracking_store)
    children = client.search_runs(
        [logged.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{logged.run_id}'"
    )
    assert sorted(
        (r.info.run_name, r.data.params["model.alpha"], r.data.metrics["mean_test_score"], r.info.status)
        for r in children
    ) == [
        ("m-candidate-0", "0", 0.0, "FINISHED"),
        ("m-candidate-1", "1", 0.1, "FINISHED"),
        ("m-candidate-2", "2", 0.2, "FINISHED"),
    ]
    assert all(r.data.tags["mnist_lab.parent_record_id"] == record.record_id for r in children)
    assert all("mnist_lab.record_id" not in r.data.tags for r in children)  # only the parent links a commit


def test_a_404_that_is_not_mlflows_fails_the_check(tmp_path: Path) -> None:
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = tracking.TrackingSettings(f"http://127.0.0.1:{server.server_address[1]}", "x", None)
        with pytest.raises(tracking.TrackingConfigError, match="is MLFLOW_TRACKING_URI an MLflow server"):
            tracking.check_server(settings, environ={})
    finally:
        server.shutdown()
        server.server_close()


def test_a_relative_sqlite_uri_is_relative_to_the_repository(tmp_path: Path) -> None:
    settings = tracking.TrackingSettings.from_environment(
        tmp_path, {"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}
    )
    assert settings.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    absolute = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    assert (
        tracking.TrackingSettings.from_environment(tmp_path, {"MLFLOW_TRACKING_URI": absolute}).tracking_uri
        == absolute
    )


def test_inside_an_mlflow_project_run_model_runs_nest_under_it(
    tracking_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_store)
    project_experiment = client.create_experiment("project")
    project = client.create_run(project_experiment)
    monkeypatch.setenv("MLFLOW_RUN_ID", project.info.run_id)
    record = run_record()
    record.tags = tracking.run_tags(tmp_path, "m", "sgd", "multiclass")
    logged = tracking.log_model_run(record, tracking.TrackingSettings.from_environment(tmp_path))
    run = client.get_run(logged.run_id)
    assert run.data.tags["mlflow.parentRunId"] == project.info.run_id
    assert run.info.experiment_id == project_experiment  # beside its parent, so the UI nests it
    monkeypatch.setenv("MLFLOW_RUN_ID", "0" * 32)  # a run of another store
    record = run_record()
    record.tags = tracking.run_tags(tmp_path, "m", "sgd", "multiclass")
    logged = tracking.log_model_run(record, tracking.TrackingSettings.from_environment(tmp_path))
    assert "mlflow.parentRunId" not in client.get_run(logged.run_id).data.tags
    assert "is not in this store: not nested" in capsys.readouterr().err


def test_run_names_tell_runs_of_one_model_apart() -> None:
    commit = "0123456789abcdef" * 2 + "01234567"
    tags = {"mnist_lab.git_commit": commit, "mnist_lab.git_dirty": "false"}
    assert tracking.run_name("sgd", tags) == "sgd@01234567"
    assert tracking.run_name("sgd", {**tags, "mnist_lab.git_dirty": "true"}) == "sgd@01234567+dirty"
    assert tracking.run_name("sgd", {**tags, "mnist_lab.dvc_exp_name": "tidy-bolt"}) == "sgd@tidy-bolt"
    assert tracking.run_name("sgd", {}) == "sgd"  # not in a git repository


def test_every_client_creates_a_new_sqlite_store_under_the_store_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes creating a new store at once fail ("table ... already exists": the board reading runs
    while a stage logs, or the registry while a run is logged): each must create it holding the lock, not
    only the run logger. Checked where MLflow creates the tables: the lock is held by then."""
    import fcntl

    import mlflow.store.db.utils as db_utils
    import mlflow.store.model_registry.sqlalchemy_store as registry_store

    database = tmp_path / "fresh" / "mlflow.db"
    database.parent.mkdir()
    lock = database.with_name("mlflow.db.lock")
    created: list[bool] = []

    def initialise(engine, original):
        with open(lock, "a") as other:  # another process's attempt, as flock sees it: its own open file
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(other, fcntl.LOCK_UN)
                created.append(False)  # nobody held it
            except BlockingIOError:
                created.append(True)
        original(engine)

    for module in (db_utils, registry_store):
        original = module._initialize_tables
        monkeypatch.setattr(
            module, "_initialize_tables", lambda e, original=original: initialise(e, original)
        )
    settings = tracking.TrackingSettings(f"sqlite:///{database}", "x", None)
    client = tracking.mlflow_client(settings, registry=True)  # the registry's tables are among them
    assert created and all(created)
    assert client.search_experiments() and database.is_file()


def test_the_model_class_pickled_by_value_keeps_type_hints_mlflow_can_read(tmp_path: Path) -> None:
    """The outbox stores the model pickled by value, and `mnist-lab sync` logs it from there: with postponed
    (string) annotations the rebuilt class's hints named globals it does not carry, so MLflow printed
    "Unsupported type hint: pd.DataFrame" on every sync and logged the model unlike the stage does."""
    import cloudpickle

    from mnist_lab.serving.pyfunc import DigitClassifier

    with tracking.this_package_pickled_by_value():
        (tmp_path / "class.pkl").write_bytes(cloudpickle.dumps(DigitClassifier))
    rebuilt = subprocess.run(  # another process, as sync is: the class comes from the pickle, not the package
        [sys.executable, "-c", (
            "import pickle, sys, typing; cls = pickle.load(open(sys.argv[1], 'rb'));"
            "assert 'mnist_lab.serving.pyfunc' not in sys.modules;"
            "print(sorted((k, repr(v)) for k, v in typing.get_type_hints(cls.predict).items()))"
        ), str(tmp_path / "class.pkl")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    expected = sorted((k, repr(v)) for k, v in typing.get_type_hints(DigitClassifier.predict).items())
    assert rebuilt.stdout.strip() == str(expected)


def test_a_store_in_a_folder_nobody_may_write_to_is_read_without_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every client takes the store lock now: where its lock file cannot be made (a shared, read-only
    store), reading the store must still work (there is nothing to create there anyway)."""
    import contextlib

    from mnist_lab.tracking import config

    database = tmp_path / "mlflow.db"
    settings = tracking.TrackingSettings(f"sqlite:///{database}", "x", None)
    tracking.mlflow_client(settings).search_experiments()  # the store exists

    @contextlib.contextmanager
    def refused(path):
        raise PermissionError(13, "Permission denied", str(path))
        yield

    monkeypatch.setattr(config, "exclusive_lock", refused)
    assert tracking.mlflow_client(settings).search_experiments()
