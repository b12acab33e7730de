"""The README's main command on a fresh clone: builds its own environment from the lock file (slow)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # a whole environment, then the pipeline


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
    assert_only_run_ids_changed(clone, status, committed)


# committed files that name this machine's runs; each rerun changes their ids and nothing else
RUN_RECORDS = {f"reports/{m}/mlflow.json" for m in ("sgd", "random_forest", "mlp", "cnn")}
RUN_RECORDS |= {"best_model.json", "registry.json"}
RUN_ID = re.compile(r"[0-9a-f]{32}")


def assert_only_run_ids_changed(clone: Path, status: str, committed: Callable[[str], str]) -> None:
    """A rerun of the committed experiment changes only what must change: run, record and registry ids (and
    their hashes in dvc.lock, with the hashes of the DVC-cached wall-clock timings) and metrics.csv's
    Timestamp column, which DagsHub's format defines as the time of logging. No wall-clock figure
    elsewhere."""
    changed = {line[3:] for line in status.splitlines()}
    assert changed <= RUN_RECORDS | {"dvc.lock", "metrics.csv"}, status

    def masked(text: str) -> str:
        text = RUN_ID.sub("<id>", text)
        return re.sub(r"(v|\"version\": \")\d+", r"\1<n>", text)

    for path in changed & RUN_RECORDS:
        assert masked((clone / path).read_text()) == masked(committed(path)), path

    def without_timestamps(text: str) -> list[list[str]]:
        return [row[:2] + row[3:] for row in csv.reader(io.StringIO(text))]

    rerun_rows = without_timestamps((clone / "metrics.csv").read_text())
    assert rerun_rows == without_timestamps(committed("metrics.csv"))

    def lock_without_run_hashes(text: str) -> dict:
        lock = yaml.safe_load(text)
        for stage in lock["stages"].values():
            for entry in stage.get("deps", []) + stage.get("outs", []):
                # `reports` (select's dependency) is a folder holding the mlflow.json files
                rerun_changes = RUN_RECORDS | {"reports", "metrics.csv"}
                if entry["path"] in rerun_changes or entry["path"].startswith("outputs/timing/"):
                    for key in ("md5", "size", "nfiles"):
                        entry.pop(key, None)
        return lock

    assert lock_without_run_hashes((clone / "dvc.lock").read_text()) == lock_without_run_hashes(
        committed("dvc.lock")
    )
