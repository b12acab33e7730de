"""A params grid via `dvc exp run --queue -S key=a,b`: one queued experiment and one MLflow run per
combination; the best applied and committed (`dvc exp apply` + `mnist-lab commit`), another branched
(`dvc exp branch` + `mnist-lab link`), each linked to its run in both directions (slow)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import mlflow
import pytest

from tests.helpers import commit_all, run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # the queue alone may take 900 s
GRID = {"alpha": ("0.001", "0.01"), "loss": ("hinge", "log_loss")}  # none is the baseline


def wait_for_queue(root: Path, timeout_s: float = 900) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], root).stdout
        if "Queued" not in status and "Running" not in status:
            return status
        time.sleep(2)
    raise AssertionError(f"the queue did not finish in {timeout_s} s:\n{status}")


def test_a_params_grid_is_one_linked_run_per_combination(restored_repo: Path) -> None:
    root = restored_repo
    run(["dvc", "repro"], root)  # the baseline: queued experiments retrain only what their params change
    commit_all(root, "baseline")
    # the README's grid command
    run(
        [
            "dvc", "exp", "run", "--queue",
            "-S", f"models.sgd.alpha={','.join(GRID['alpha'])}",
            "-S", f"models.sgd.loss={','.join(GRID['loss'])}",
        ],
        root,
    )  # fmt: skip
    run(["dvc", "queue", "start", "-j", "2"], root)
    status = wait_for_queue(root)
    assert status.count("Success") == 4 and "Failed" not in status, status

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mnist-lab")
    runs = client.search_runs(
        [experiment.experiment_id], "tags.`mnist_lab.model` = 'sgd' and tags.`mnist_lab.dvc_exp_name` != ''"
    )
    by_combination = {(r.data.params["model.alpha"], r.data.params["model.loss"]): r for r in runs}
    assert len(runs) == 4 and set(by_combination) == {(a, b) for a in GRID["alpha"] for b in GRID["loss"]}
    names = {r.data.tags["mnist_lab.dvc_exp_name"] for r in runs}
    assert len(names) == 4
    shown = json.loads(run(["dvc", "exp", "show", "--json"], root).stdout)
    listed = {e["name"] for entry in shown for e in entry.get("experiments") or []}
    assert names <= listed, (names, listed)

    # the best combination: applied to the workspace and committed, linked to its run both ways
    best = max(runs, key=lambda r: r.data.metrics["f1_macro"])
    run(["dvc", "exp", "apply", best.data.tags["mnist_lab.dvc_exp_name"]], root)
    run(["mnist-lab", "commit", "-m", "Best SGD of the grid"], root)
    commit = run(["git", "rev-parse", "HEAD"], root).stdout.strip()
    listed_runs = dict(line.split("\t")[:2] for line in run(["mnist-lab", "runs"], root).stdout.splitlines())
    assert listed_runs["sgd"] == best.info.run_id
    assert run(["mnist-lab", "commit-of", best.info.run_id], root).stdout.strip() == commit
    assert client.get_run(best.info.run_id).data.tags["mnist_lab.results_commit"] == commit

    # another one: branched by DVC (no trailers), found from its files, then linked
    other = next(r for r in runs if r.info.run_id != best.info.run_id)
    run(["dvc", "exp", "branch", other.data.tags["mnist_lab.dvc_exp_name"], "other-sgd"], root)
    branch_commit = run(["git", "rev-parse", "other-sgd"], root).stdout.strip()
    listed_runs = dict(
        line.split("\t")[:2] for line in run(["mnist-lab", "runs", "other-sgd"], root).stdout.splitlines()
    )
    assert listed_runs["sgd"] == other.info.run_id
    assert run(["mnist-lab", "commit-of", other.info.run_id], root).stdout.strip() == branch_commit
    run(["mnist-lab", "link", "other-sgd"], root)
    assert client.get_run(other.info.run_id).data.tags["mnist_lab.results_commit"] == branch_commit
    # the models the grid left unchanged: runs both commits name; linking the branch left their tag where
    # commit-of finds them (it took it, for a commit that is not an ancestor)
    for model in ("random_forest", "mlp"):
        shared = json.loads(run(["git", "show", f"{branch_commit}:reports/{model}/mlflow.json"], root).stdout)
        tagged = client.get_run(shared["run_id"]).data.tags["mnist_lab.results_commit"]
        assert run(["mnist-lab", "commit-of", shared["run_id"]], root).stdout.strip() == tagged == commit

    # a grid search inside the training stage, as the README sets it: a parent run with nested candidates
    run(["dvc", "exp", "run", "-S", "+models.sgd.search={grid: {alpha: [0.00001, 0.001]}, cv: 2}"], root)
    parent_id = json.loads((root / "reports" / "sgd" / "mlflow.json").read_text())["run_id"]
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    assert sorted(r.data.params["model.alpha"] for r in children) == ["0.001", "1e-05"]
    parent = client.get_run(parent_id)
    assert parent.data.params["model.alpha"] in ("0.001", "1e-05") and "best_cv_score" in parent.data.metrics
