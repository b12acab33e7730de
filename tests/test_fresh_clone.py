"""The README's main command on a fresh clone: builds its own environment from the lock file (slow)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.slow


def test_make_run_on_a_fresh_clone_reproduces_the_committed_metrics(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VIRTUAL_ENV", "DVC_"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    done = subprocess.run(["make", "run"], cwd=clone, env=env, capture_output=True, text=True, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    assert "regenerated from scikit-learn's bundled digits and checked against data.dvc" in output
    assert "best by f1_macro" in output and "make ui" in output
    # the pipeline really ran here (a fresh clone has no DVC cache), so metrics.json is this run's output,
    # not the file `git clone` checked out: compare it, and each model's metrics, with the committed ones
    for stage in ("validate", "prepare", "featurize", "train@cnn", "evaluate@sgd", "evaluate@cnn", "select"):
        assert f"Running stage '{stage}'" in output, stage

    def committed(path: str) -> str:
        return subprocess.run(
            ["git", "show", f"HEAD:{path}"], cwd=clone, capture_output=True, text=True, check=True
        ).stdout

    assert (clone / "metrics.json").read_text() == committed("metrics.json")
    for model in ("sgd", "random_forest", "mlp", "cnn"):
        reports = f"reports/{model}"
        assert (clone / reports / "metrics.json").read_text() == committed(f"{reports}/metrics.json")
        new_run = json.loads((clone / reports / "mlflow.json").read_text())["run_id"]
        assert new_run != json.loads(committed(f"{reports}/mlflow.json"))["run_id"]  # this machine's run
    assert (clone / "mlflow.db").is_file()  # the default store, at the clone's root
    runs = {
        json.loads((clone / "reports" / m / "mlflow.json").read_text())["store"]
        for m in ("sgd", "random_forest", "mlp", "cnn")
    }
    assert runs == {"local"}
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True
    ).stdout
    assert "mlflow.db" not in status and ".venv" not in status and "data/" not in status
