"""`mlflow run .` with the MLproject's entry points, `--env-manager local` (slow: runs the pipeline)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from tests.helpers import run

pytestmark = pytest.mark.slow


def test_train_one_model_with_params_as_an_mlflow_project(restored_repo: Path) -> None:
    root = restored_repo
    params_before = (root / "params.yaml").read_text()
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    done = run(
        ["mlflow", "run", ".", "-e", "train", "-P", "model=sgd", "-P", "set=models.sgd.alpha=0.001",
         "--env-manager", "local", "--experiment-name", "mnist-lab"],
        root,
        env,
    )  # fmt: skip
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("mnist-lab")
    runs = client.search_runs([experiment.experiment_id])
    project = [r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "train"]
    assert len(project) == 1 and project[0].info.status == "FINISHED", done.stderr[-3000:]
    assert project[0].data.params == {"model": "sgd", "set": "models.sgd.alpha=0.001"}
    models = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == project[0].info.run_id]
    assert [(r.data.tags["mnist_lab.model"], r.data.params["model.alpha"]) for r in models] == [
        ("sgd", "0.001")
    ]
    assert (root / "params.yaml").read_text() == params_before  # a temporary DVC experiment
    shown = json.loads(run(["dvc", "exp", "show", "--json"], root).stdout)
    assert any(e.get("experiments") for e in shown)

    bad = run(["mlflow", "run", ".", "-e", "train", "-P", "model=nope", "--env-manager", "local"], root, env,
              check=False)  # fmt: skip
    assert bad.returncode != 0 and "unknown model 'nope'" in bad.stderr + bad.stdout
    typo = run(["mlflow", "run", ".", "-e", "train", "-P", "model=sgd", "-P", "set=models.sgd.alpah=1.0",
                "--env-manager", "local"], root, env, check=False)  # fmt: skip
    assert typo.returncode != 0 and "unknown key 'models.sgd.alpah'" in typo.stderr + typo.stdout


def test_the_main_entry_point_runs_the_pipeline(restored_repo: Path) -> None:
    root = restored_repo
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    run(["dvc", "repro"], root, env)  # a fresh copy has no DVC cache: its outputs, first
    (root / "params.yaml").write_text(
        (root / "params.yaml").read_text().replace("n_estimators: 100", "n_estimators: 30", 1)
    )
    run(["mlflow", "run", ".", "--env-manager", "local", "--experiment-name", "mnist-lab"], root, env)
    assert "Data and pipelines are up to date." in run(["dvc", "status"], root).stdout
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("mnist-lab").experiment_id])
    project = next(r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "main")
    children = {
        r.data.tags["mnist_lab.model"]
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == project.info.run_id
    }
    assert children == {"random_forest"}  # only what the change made stale reran
