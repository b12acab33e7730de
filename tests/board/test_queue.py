"""Running an experiment from the board's API on the real pipeline: queue it (checked first), start DVC's
queue, see it finish and become a row of the table with its params (slow: runs the pipeline)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mnist_lab.board.app import create_app
from tests.helpers import BIN, commit_all, run

pytestmark = pytest.mark.slow

PAGE = {"X-Mnist-Lab": "board"}  # what the board's page sends with each POST


def test_an_experiment_queued_from_the_api_runs_and_becomes_a_row(restored_repo: Path, monkeypatch) -> None:
    root = restored_repo
    run(["dvc", "repro"], root)  # the baseline: the queued experiment reruns only the sgd model
    commit_all(root, "baseline")
    # the board as `.venv/bin/mnist-lab board` runs it: the environment's bin is not on PATH (DVC starts its
    # queue workers as `dvc` from PATH; they died at once before the board put it there)
    monkeypatch.setenv(
        "PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != BIN)
    )
    http = TestClient(create_app(root), headers=PAGE)
    before = {row["id"] for row in http.get("/api/experiments?hidden=true").json()["rows"]}
    queued = http.post("/api/queue", json={"set": {"models.sgd.alpha": "0.001"}, "name": "from-the-board"})
    assert queued.status_code == 200, queued.json()
    assert queued.json() == {"queued": "from-the-board"}
    assert [t["status"] for t in http.get("/api/queue").json()["tasks"]] == ["Queued"]
    assert http.post("/api/queue/start").status_code == 200
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        tasks = http.get("/api/queue").json()["tasks"]
        if all(t["status"] not in ("Queued", "Running") for t in tasks):
            break
        time.sleep(2)
    assert [t["status"] for t in tasks] == ["Success"], (
        tasks,
        run(["dvc", "queue", "logs", "from-the-board"], root, check=False).stdout[-3000:],
    )
    rows = {row["id"]: row for row in http.get("/api/experiments?hidden=true").json()["rows"]}
    new = set(rows) - before
    assert new == {"exp:from-the-board"}
    row = rows["exp:from-the-board"]
    assert row["source"] == "dvc-experiment" and row["params.models.sgd.alpha"] == 0.001
    assert (
        row["changed"] == {"models.sgd.alpha": [0.0001, 0.001]} and row["metrics.models.sgd.accuracy"] > 0.5
    )

    # applied and committed from its row, as `dvc exp apply` + `mnist-lab commit` do
    (root / "notes.txt").write_text("untracked files do not block")
    committed = http.post(
        "/api/commit", json={"experiment": "exp:from-the-board", "message": "SGD alpha 0.001"}
    )
    assert committed.status_code == 200, committed.json()
    sha = committed.json()["commit"]
    head = http.get("/api/experiments").json()["rows"][0]
    assert head["id"] == sha and head["message"] == "SGD alpha 0.001"
    assert head["params.models.sgd.alpha"] == 0.001 and head["runs"]["sgd"]
    assert head["metrics.models.sgd.accuracy"] == row["metrics.models.sgd.accuracy"]
    # a tracked change in the workspace is never overwritten by an apply
    (root / "params.yaml").write_text((root / "params.yaml").read_text() + "\n# my edit\n")
    refused = http.post("/api/commit", json={"experiment": "exp:from-the-board", "message": "again"})
    assert refused.status_code == 400 and "uncommitted changes (params.yaml)" in refused.json()["error"]
    assert (root / "params.yaml").read_text().endswith("# my edit\n")
