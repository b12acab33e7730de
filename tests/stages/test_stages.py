"""Each stage run in-process on small data, with the command lines `dvc.yaml` gives it."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml

from mnist_lab.core.data import Dataset
from mnist_lab.datasets.folder import TRAIN_LABELS, encode_dataset, replace_directory
from tests.helpers import SMALL_PARAMS, run_all, run_dvc_stage


def test_the_pipeline_stages_in_order(workspace: Path, tracking_store: str) -> None:
    run_all(list(SMALL_PARAMS["models"]))
    prepared = np.load(workspace / "outputs" / "prepared.npz")
    assert prepared["train_pixels"].shape == (400, 64) and prepared["test_pixels"].dtype == np.uint8
    history = list(csv.DictReader((workspace / "reports" / "mlp" / "history.csv").open()))
    assert [row["epoch"] for row in history] == [str(e) for e in range(1, len(history) + 1)] and len(
        history
    ) > 5
    assert (workspace / "reports" / "sgd" / "history.csv").read_text().count("\n") == 1  # header only
    for name in SMALL_PARAMS["models"]:
        reports = workspace / "reports" / name
        metrics = json.loads((reports / "metrics.json").read_text())
        assert 0.5 < metrics["accuracy"] <= 1.0 and "recall_class_9" in metrics
        assert {p.name for p in (reports / "figures").iterdir()} >= {
            "confusion_matrix.png",
            "roc.png",
            "precision_recall.png",
        }
        assert sum(1 for _ in (reports / "predictions.csv").open()) == 101
        run_id = json.loads((reports / "mlflow.json").read_text())["run_id"]
        run = mlflow.MlflowClient(tracking_store).get_run(run_id)
        assert run.data.tags["mnist_lab.model"] == name and run.data.params["model.name"] == name
    assert (workspace / "reports" / "mlp" / "figures" / "training_curves.png").is_file()
    summary = json.loads((workspace / "metrics.json").read_text())
    best = summary["best"]
    assert best["metric"] == "f1_macro"
    assert best["value"] == max(m["f1_macro"] for m in summary["models"].values())
    assert json.loads((workspace / "best_model.json").read_text())["model"] == best["model"]
    assert (workspace / "metrics.csv").read_text().startswith("Name,Value,Timestamp,Step\n")
    assert yaml.safe_load((workspace / "params.yml").read_text())["models.forest.n_estimators"] == 10


def test_binary_task_reports_precision_recall_and_auc(workspace: Path) -> None:
    params = {
        **SMALL_PARAMS,
        "task": {"kind": "binary", "positive_class": 5},
        "models": {"sgd": {"type": "sgd"}},
        "select": {"metric": "roc_auc"},
    }
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_all(["sgd"])
    metrics = json.loads((workspace / "reports" / "sgd" / "metrics.json").read_text())
    assert {"precision", "recall", "f1", "roc_auc"} <= set(metrics) and metrics["roc_auc"] > 0.9
    roc = list(csv.DictReader((workspace / "reports" / "sgd" / "roc.csv").open()))
    assert float(roc[0]["fpr"]) == 0.0 and float(roc[-1]["tpr"]) == 1.0
    assert json.loads((workspace / "metrics.json").read_text())["best"]["metric"] == "roc_auc"


TINY_CNN = {"type": "cnn", "filters": [8], "max_epochs": 3, "patience": 2, "batch_size": 64}


def test_the_cnn_trains_on_images_even_with_pca_and_says_so(
    workspace: Path, tracking_store: str, capsys: pytest.CaptureFixture
) -> None:
    """features.pca applies to the MLP and the others, never to the CNN: its stage says so, its run records
    what it really saw, and its logged model takes raw pixels without the PCA featurizer."""
    params = {
        **SMALL_PARAMS,
        "features": {"pca": True, "pca_variance": 0.9},
        "models": {"mlp": SMALL_PARAMS["models"]["mlp"], "cnn": TINY_CNN},
    }
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_all(["mlp", "cnn"])
    err = capsys.readouterr().err
    assert "note: features.pca does not apply to cnn (a CNN needs the images)" in err
    assert re.search(r"^train cnn \(cnn\) on \d+ images of 8x8$", err, re.M), err  # not "N x 64"
    assert re.search(r"^train mlp \(mlp\) on \d+ x \d+ features$", err, re.M), err
    epoch_lines = re.findall(
        r"^cnn epoch +(\d+)/3: loss [\d.]+ acc [\d.]+ \| val_loss .* \| [\d.]+ s( with start-up)?$", err, re.M
    )
    assert epoch_lines == [("1", " with start-up"), ("2", ""), ("3", "")]  # one line per epoch, as it ends
    training = json.loads((workspace / "reports" / "cnn" / "training.json").read_text())
    kept = re.search(
        r"^cnn: 3 epochs \(at most 3\); kept epoch (\d), the lowest val_loss \(([\d.]+)\)$", err, re.M
    )
    assert kept and int(kept.group(1)) == training["best_epoch"], err
    assert training["device"] == "cpu" and training["epochs"] == 3
    history = list(csv.DictReader((workspace / "reports" / "cnn" / "history.csv").open()))
    assert list(history[0]) == [
        "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "learning_rate"
    ]  # fmt: skip
    client = mlflow.MlflowClient(tracking_store)
    run_ids = {
        m: json.loads((workspace / "reports" / m / "mlflow.json").read_text())["run_id"]
        for m in ("mlp", "cnn")
    }
    cnn_run, mlp_run = client.get_run(run_ids["cnn"]), client.get_run(run_ids["mlp"])
    assert cnn_run.data.params["features.pca_skipped"] == "True"
    assert (
        cnn_run.data.params["features.pca"] == "False"
        and cnn_run.data.params["features.n_components"] == "64"
    )
    assert "features.pca_variance" not in cnn_run.data.params
    assert mlp_run.data.params["features.pca"] == "True"  # the MLP did get the PCA features
    assert int(mlp_run.data.params["features.n_components"]) < 64
    assert cnn_run.data.tags["mnist_lab.device"] == "cpu"
    steps = client.get_metric_history(run_ids["cnn"], "learning_rate")
    assert [m.step for m in steps] == [1, 2, 3]
    model = mlflow.pyfunc.load_model(
        json.loads((workspace / "reports" / "cnn" / "mlflow.json").read_text())["model_uri"]
    )
    prepared = np.load(workspace / "outputs" / "prepared.npz")
    answer = model.predict(prepared["test_pixels"][:20].astype(np.float64))
    predictions = list(csv.DictReader((workspace / "reports" / "cnn" / "predictions.csv").open()))
    assert list(answer["label"]) == [int(row["predicted"]) for row in predictions[:20]]
    rows = list(csv.reader((workspace / "metrics.csv").open()))
    assert [int(r[3]) for r in rows if r[0] == "cnn.learning_rate"] == [1, 2, 3]


def test_a_grid_search_logs_a_parent_run_with_one_nested_run_per_candidate(
    workspace: Path, tracking_store: str, capsys: pytest.CaptureFixture
) -> None:
    grid = {"alpha": [0.0001, 3.0], "loss": ["hinge", "log_loss"]}
    params = {**SMALL_PARAMS, "models": {"sgd": {"type": "sgd", "search": {"grid": grid, "cv": 2}}}}
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_all(["sgd"])
    # the search is not silent: a line as its fits finish (every one of 8), the last saying all are done
    done = re.findall(r"^sgd grid search: (\d+)/8 fits done, \d+ s$", capsys.readouterr().err, re.M)
    assert done and done[-1] == "8" and [int(d) for d in done] == sorted({int(d) for d in done})
    search = json.loads((workspace / "reports" / "sgd" / "training.json").read_text())["search"]
    best = search["candidates"][search["best_index"]]
    client = mlflow.MlflowClient(tracking_store)
    parent = client.get_run(json.loads((workspace / "reports" / "sgd" / "mlflow.json").read_text())["run_id"])
    # the parent is the model trained: the best candidate's settings, its test metrics, the best estimator
    assert parent.data.params["model.alpha"] == str(best["params"]["alpha"]) == "0.0001"
    assert parent.data.params["model.loss"] == best["params"]["loss"]
    assert parent.data.params["search.cv"] == "2" and parent.data.params["search.candidates"] == "4"
    assert parent.data.metrics["best_cv_score"] == best["mean_score"]
    assert (
        "accuracy" in parent.data.metrics and parent.outputs.model_outputs
    )  # the best estimator is the model
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert sorted((r.data.params["model.alpha"], r.data.params["model.loss"]) for r in children) == [
        ("0.0001", "hinge"),
        ("0.0001", "log_loss"),
        ("3.0", "hinge"),
        ("3.0", "log_loss"),
    ]
    assert sorted(r.data.metrics["rank_test_score"] for r in children) == [1.0, 2.0, 3.0, 4.0]
    assert {"split0_test_score", "split1_test_score", "mean_test_score"} <= set(children[0].data.metrics)
    table = mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/search/cv_results.csv")
    assert table.splitlines()[0] == "rank,alpha,loss,mean_accuracy,std_accuracy,mean_fit_seconds"
    assert len(table.splitlines()) == 5
    # wall-clock figures stay out of the committed training.json: they are in the DVC-cached timing file,
    # and each nested run's mean_fit_time is its own candidate's
    training_text = (workspace / "reports" / "sgd" / "training.json").read_text()
    assert "seconds" not in training_text and "time" not in training_text
    # the committed records say which candidate was chosen and its cross-validated score, not only the grid
    committed = yaml.safe_load((workspace / "params.yml").read_text())
    assert committed["models.sgd.search.chosen.alpha"] == 0.0001
    assert committed["models.sgd.search.chosen.loss"] == best["params"]["loss"]
    metrics = json.loads((workspace / "metrics.json").read_text())["models"]["sgd"]
    assert metrics["best_cv_score"] == best["mean_score"] and "accuracy" in metrics
    assert ["sgd.best_cv_score", best["mean_score"]] in [
        [row[0], float(row[1])] for row in list(csv.reader((workspace / "metrics.csv").open()))[1:]
    ]
    timing = json.loads((workspace / "outputs" / "timing" / "sgd.json").read_text())
    by_candidate = {
        run.data.tags["mnist_lab.search_candidate"]: run.data.metrics["mean_fit_time"] for run in children
    }
    assert by_candidate == {str(i): s for i, s in enumerate(timing["search_mean_fit_seconds"])}
    assert parent.data.metrics["fit_seconds"] == timing["fit_seconds"] > 0
    assert parent.data.tags["mnist_lab.search_ran_on"] == timing["search_ran_on"]
    assert re.fullmatch(r"this machine \(\d+ process(es)?\)", timing["search_ran_on"])


def test_missing_data_fails_with_how_to_get_it(workspace: Path, capsys: pytest.CaptureFixture) -> None:
    shutil.rmtree(workspace / "data")
    assert run_dvc_stage("prepare") == 2
    error = capsys.readouterr().err
    assert error.startswith("error: prepare: data directory 'data' is missing")
    assert "`mnist-lab data restore` (`make data`" in error
    assert not (workspace / "outputs" / "prepared.npz").exists()


def test_corrupt_data_fails_naming_the_file(workspace: Path, capsys: pytest.CaptureFixture) -> None:
    (workspace / "data" / TRAIN_LABELS).write_bytes(b"\x1f\x8bnot really gzip")
    assert run_dvc_stage("prepare") == 2
    assert "data/train-labels-idx1-ubyte.gz: corrupt gzip stream" in capsys.readouterr().err
    assert not (workspace / "outputs").exists()


def test_invalid_params_fail_before_any_work(
    workspace: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workspace / "params.yaml").write_text(
        yaml.safe_dump({**SMALL_PARAMS, "features": {"pca_varaince": 0.9}}, sort_keys=False)
    )
    assert run_dvc_stage("prepare") == 2
    assert "unknown key 'features.pca_varaince'" in capsys.readouterr().err
    assert not (workspace / "outputs").exists()
    # validate, the first stage: in `dvc exp run`, says how to take back the value -S left in params.yaml;
    # in `dvc repro` (a value its user wrote), not
    assert run_dvc_stage("validate") == 2
    said = capsys.readouterr().err
    assert "unknown key 'features.pca_varaince'" in said and "dvc exp run" not in said
    monkeypatch.setenv("DVC_EXP_NAME", "grave-hood")
    assert run_dvc_stage("validate") == 2
    said = capsys.readouterr().err
    assert "unknown key 'features.pca_varaince'" in said
    assert "take the committed settings back with `git show HEAD:params.yaml > params.yaml`" in said


def test_unknown_model_name(
    workspace: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_dvc_stage("prepare") == 0 and run_dvc_stage("featurize") == 0
    assert run_dvc_stage("train", "xgboost") == 2
    error = capsys.readouterr().err
    assert (
        "error: train@xgboost: unknown model 'xgboost': params.yaml `models` defines sgd, forest, mlp"
        in error
    )
    assert not (workspace / "models").exists() and "dvc checkout" not in error
    # run by DVC, which removed the stage's outputs first: how to get them back (a Dask scheduler away
    # said only to run the stage again)
    monkeypatch.setenv("DVC_ROOT", str(workspace))
    assert run_dvc_stage("train", "xgboost") == 2
    hint = capsys.readouterr().err
    assert "`dvc checkout train@xgboost` brings back those in the DVC cache" in hint
    assert "`git checkout -- <file>` those git keeps" in hint  # reports/ (cache: false): not DVC's to restore


def test_an_unknown_select_metric_stops_the_first_stage(
    workspace: Path, capsys: pytest.CaptureFixture
) -> None:
    """Checked when the settings load, not after all the training."""
    (workspace / "params.yaml").write_text(
        yaml.safe_dump({**SMALL_PARAMS, "select": {"metric": "acuracy"}}, sort_keys=False)
    )
    for stage in ("validate", "prepare"):
        assert run_dvc_stage(stage) == 2
        assert "select.metric: 'acuracy' is not a metric of a multiclass task; use one of: accuracy" in (
            capsys.readouterr().err
        )
    assert not (workspace / "outputs").exists()


def test_select_names_a_metric_the_models_lack() -> None:
    from mnist_lab.core.errors import SettingsError
    from mnist_lab.core.results import best_model

    per_model = {"a": {"accuracy": 0.9, "recall_class_0": 0.8}, "b": {"accuracy": 0.8, "recall_class_0": 0.7}}
    assert best_model(per_model, "recall_class_0") == ("a", 0.8)
    with pytest.raises(
        SettingsError,
        match=r"'recall_class_7' is not a metric of model 'a' \(no test image has that class and the model "
        r"never predicts it\); use one of: accuracy",
    ):
        best_model(per_model, "recall_class_7")


def test_select_requires_every_model_evaluated(workspace: Path, capsys: pytest.CaptureFixture) -> None:
    run_all(["sgd"], select=False)
    assert run_dvc_stage("select") == 2
    assert (
        "reports/forest/metrics.json is missing: model 'forest' has not been evaluated"
        in capsys.readouterr().err
    )


def test_stale_intermediate_files_are_reported(workspace: Path, capsys: pytest.CaptureFixture) -> None:
    (workspace / "outputs").mkdir()
    np.savez(workspace / "outputs" / "prepared.npz", something_else=np.zeros(3))
    assert run_dvc_stage("featurize") == 2
    assert "outputs/prepared.npz lacks train_pixels" in capsys.readouterr().err


@pytest.mark.parametrize("absent_from", ["training", "test"])
def test_a_detector_for_a_digit_absent_from_a_set_is_a_clear_error(
    workspace: Path, small_digits: Dataset, capsys: pytest.CaptureFixture, absent_from: str
) -> None:
    d = small_digits
    keep_train = d.train_labels != 5 if absent_from == "training" else np.ones(len(d.train_labels), bool)
    keep_test = d.test_labels != 5 if absent_from == "test" else np.ones(len(d.test_labels), bool)
    data = Dataset(d.train_images[keep_train], d.train_labels[keep_train], d.test_images[keep_test],
                   d.test_labels[keep_test])  # fmt: skip
    replace_directory(encode_dataset(data), workspace / "data")
    params = {
        **SMALL_PARAMS,
        "models": {"sgd": {"type": "sgd"}},
        "task": {"kind": "binary", "positive_class": 5},
    }
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("prepare", "featurize"):
        assert run_dvc_stage(stage) == 0
    failing = "train" if absent_from == "training" else "evaluate"
    if failing == "evaluate":
        assert run_dvc_stage("train", "sgd") == 0
    capsys.readouterr()
    assert run_dvc_stage(failing, "sgd") == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {failing}@sgd: task.positive_class 5: the {absent_from} set holds no "
                            "example of digit 5")  # fmt: skip
    assert "Traceback" not in error


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "MLFLOW_TRACKING_URI",
            "127.0.0.1:5000",
            "MLFLOW_TRACKING_URI='127.0.0.1:5000' is not a tracking store",
        ),
        ("DAGSHUB_REPO", "jane", "DAGSHUB_REPO='jane' is not <owner>/<repo>"),
        (
            "MNIST_LAB_DASK_SCHEDULER",
            "tcp://localhost",
            "MNIST_LAB_DASK_SCHEDULER='tcp://localhost' is not a Dask",
        ),
    ],
)
def test_a_tracking_configuration_that_cannot_work_stops_the_first_stage(
    workspace: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    message: str,
) -> None:
    """Before DVC deletes the outputs of the stages that log (no network needed to see it)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv(variable, value)
    assert run_dvc_stage("validate") == 2
    assert f"error: validate: {message}" in capsys.readouterr().err


def test_the_progress_bar_starts_with_the_first_epoch_not_before_a_search() -> None:
    from mnist_lab.core.settings import MLPSettings
    from mnist_lab.stages.train import ProgressBar

    progress = ProgressBar("mlp", MLPSettings(type="mlp", max_epochs=20))
    assert progress.bar is None  # a grid search may run for minutes before the refit's first epoch
    progress(1, {"val_loss": 0.5, "val_accuracy": 0.9})
    assert progress.bar is not None and progress.bar.total == 20
    progress.close()


def test_a_training_that_diverges_stops_naming_the_models_setting(
    workspace: Path, capsys: pytest.CaptureFixture, recwarn: pytest.WarningsRecorder
) -> None:
    params = {**SMALL_PARAMS, "models": {"mlp": {"type": "mlp", "max_epochs": 3, "learning_rate_init": 1e30}}}
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert run_dvc_stage("prepare") == 0 and run_dvc_stage("featurize") == 0
    assert run_dvc_stage("train", "mlp") == 2
    error = capsys.readouterr().err
    assert "error: train@mlp: models.mlp: training diverged at epoch 1: " in error
    assert "lower learning_rate_init (now 1e+30)" in error and "Traceback" not in error
    # numpy's overflow warnings on the way there (a screenful): the message says it all
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)], [
        str(w.message) for w in recwarn
    ]
    assert not (workspace / "models" / "mlp").exists()


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        ("numpy", "KERAS_BACKEND='numpy': the CNN trains with jax (the default), torch or tensorflow"),
        ("bogus", "KERAS_BACKEND='bogus': the CNN trains with jax"),
        ("torch", "KERAS_BACKEND=torch, but torch is not installed in this environment: install it"),
    ],
)
def test_a_keras_backend_that_cannot_train_stops_validate_when_a_cnn_is_configured(
    workspace: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    message: str,
) -> None:
    """Checked before DVC deletes the CNN's outputs (train@cnn failed with ModuleNotFoundError or Keras's
    NotImplementedError after); without a CNN the backend does not matter."""
    import importlib.util

    if backend == "torch" and importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed here")
    monkeypatch.setenv("KERAS_BACKEND", backend)
    assert run_dvc_stage("validate") == 0  # SMALL_PARAMS: no CNN
    params = {**SMALL_PARAMS, "models": {**SMALL_PARAMS["models"], "cnn": {"type": "cnn", "max_epochs": 1}}}
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert run_dvc_stage("validate") == 2
    assert f"error: validate: {message}" in capsys.readouterr().err


def test_too_many_folds_for_the_training_set_stop_validate(
    workspace: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Known from the training labels when data/ holds a test set: stopped before DVC removes any output
    (train said it, after the stages before it had run and their outputs had been removed)."""
    search = {"grid": {"alpha": [0.001, 0.01]}, "cv": 1000}
    params = {**SMALL_PARAMS, "models": {"sgd": {"type": "sgd", "search": search}}}
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert run_dvc_stage("validate") == 2
    error = capsys.readouterr().err
    assert "error: validate: models.sgd.search.cv is 1000, but class " in error
    assert "Set models.sgd.search.cv to " in error and "dvc exp run" not in error
    # under `dvc exp run -S`, how to take the value back, as for any other setting
    monkeypatch.setenv("DVC_EXP_NAME", "grave-hood")
    assert run_dvc_stage("validate") == 2
    assert "`git show HEAD:params.yaml > params.yaml`" in capsys.readouterr().err
    monkeypatch.delenv("DVC_EXP_NAME")
    params["models"]["sgd"]["search"]["cv"] = 2
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert run_dvc_stage("validate") == 0
