"""Running an experiment from the board on the real pipeline: queue it through the API (checked first),
start DVC's queue from the page in a real chromium, follow its output there while it runs (the CNN's
epochs as a bar), see it finish and become a row of the table with its params (slow: runs the pipeline)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from mnist_lab.board.app import create_app
from tests.board.browser import chromium, wait_for
from tests.helpers import BIN, commit_all, free_port, run, start, stop, wait_until_ready

pytestmark = pytest.mark.slow

PAGE = {"X-Mnist-Lab": "board"}  # what the board's page sends with each POST


def test_an_experiment_queued_from_the_api_runs_and_becomes_a_row(restored_repo: Path, monkeypatch) -> None:
    root = restored_repo
    run(["dvc", "repro"], root)  # the baseline: the queued experiment reruns only the cnn model
    commit_all(root, "baseline")
    # the board as `.venv/bin/mnist-lab board` runs it: the environment's bin is not on PATH (DVC starts its
    # queue workers as `dvc` from PATH; they died at once before the board put it there)
    monkeypatch.setenv(
        "PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != BIN)
    )
    http = TestClient(create_app(root), headers=PAGE)
    before = {row["id"] for row in http.get("/api/experiments?hidden=true").json()["rows"]}
    # all 150 epochs (patience as long): ~15 s of epoch lines on the digits, long enough to be seen
    longer = {"models.cnn.max_epochs": "150", "models.cnn.patience": "150"}
    queued = http.post("/api/queue", json={"set": longer, "name": "from-the-board"})
    assert queued.status_code == 200, queued.json()
    assert queued.json() == {"queued": "from-the-board"}
    assert [t["status"] for t in http.get("/api/queue").json()["tasks"]] == ["Queued"]
    waiting = http.get("/api/queue/from-the-board/output").json()
    assert waiting == {"name": "from-the-board", "started": False, "stage": None, "epoch": None, "lines": []}
    unknown = http.get("/api/queue/no-such-experiment/output")
    assert (
        unknown.status_code == 404 and "no experiment named 'no-such-experiment'" in unknown.json()["error"]
    )

    # started from the page of a board run as `.venv/bin/mnist-lab board` is (PATH as above), which follows
    # the experiment's output while it runs, then says how it ended
    from selenium.webdriver.common.by import By

    port = free_port()
    server = start([str(BIN / "mnist-lab"), "board", "--port", str(port)], root, {"PATH": os.environ["PATH"]})
    try:
        wait_until_ready(server, port, timeout_s=60)
        counted = http.get("/api/experiments?hidden=1&code_only=1").json()["total"]
        with chromium() as browser:
            browser.get(f"http://127.0.0.1:{port}/#/run")
            wait_for(lambda: "from-the-board" in browser.find_element(By.ID, "run-tasks").text)
            header = lambda: browser.find_element(By.ID, "status").text  # noqa: E731
            wait_for(lambda: header() == f"{counted} experiments")
            # queued from the form, which then empties (Queue again would queue it twice); taken out of
            # DVC's queue again before the queue starts
            browser.find_element(By.ID, "run-set").send_keys("models.cnn.max_epochs=3")
            browser.find_element(By.ID, "run-name").send_keys("from-the-form")
            browser.find_element(By.ID, "run-queue").click()
            message = lambda: browser.find_element(By.ID, "run-message").text  # noqa: E731
            wait_for(lambda: message() == "queued from-the-form: start the queue to run it")
            wait_for(lambda: "from-the-form" in browser.find_element(By.ID, "run-tasks").text)
            for field in ("run-set", "run-name"):
                assert browser.find_element(By.ID, field).get_attribute("value") == "", field
            run(["dvc", "queue", "remove", "from-the-form"], root)
            browser.find_element(By.ID, "run-start").click()
            progress = lambda: browser.find_element(By.ID, "run-progress").text  # noqa: E731
            # the network's epochs while it trains: in the progress line and as a bar
            epoch = wait_for(
                lambda: re.fullmatch(
                    r"from-the-board: running (train@cnn), cnn epoch (\d+) of 150", progress()
                ),
                timeout_s=300,
            )
            bar = browser.find_element(By.ID, "run-epochs")
            shown_epoch = int(bar.get_attribute("value"))
            assert bar.is_displayed() and bar.get_attribute("max") == "150", bar.get_attribute("outerHTML")
            assert int(epoch.group(2)) <= shown_epoch <= 150
            wait_for(lambda: progress().startswith("from-the-board: success (last stage: "), timeout_s=600)
            shown = browser.find_element(By.ID, "run-output").text
            # the header counts the new row once the queue has finished (it kept the count of before)
            wait_for(lambda: header() == f"{counted + 1} experiments", timeout_s=30)
            assert message() == "the queue has finished: its experiments are rows of the table"
    finally:
        stop(server)
    assert "Running stage '" in shown, shown
    logs = run(["dvc", "queue", "logs", "from-the-board"], root, check=False).stdout
    tasks = http.get("/api/queue").json()["tasks"]
    assert [t["status"] for t in tasks] == ["Success"], (tasks, logs[-3000:])
    # the page named a stage this experiment really ran (validate runs too: params.yaml is its file dep),
    # and only the cnn model was retrained
    ran = re.findall(r"Running stage '([^']+)'", logs)
    assert epoch.group(1) in ran, (epoch.group(0), ran)
    assert {"train@cnn", "evaluate@cnn"} <= set(ran) and not [
        s for s in ran if s.startswith("train@") and s != "train@cnn"
    ], ran
    assert "cnn epoch 150/150" in logs
    output = http.get("/api/queue/from-the-board/output").json()
    assert output["started"] and output["stage"] and output["epoch"] is None  # the last stage has no epochs
    assert output["stage"] == ran[-1], (output, ran)
    assert output["lines"] and len(output["lines"]) <= 40
    rows = {row["id"]: row for row in http.get("/api/experiments?hidden=true").json()["rows"]}
    new = set(rows) - before
    assert new == {"exp:from-the-board"}
    row = rows["exp:from-the-board"]
    assert row["source"] == "dvc-experiment" and row["params.models.cnn.max_epochs"] == 150
    assert row["changed"] == {"models.cnn.max_epochs": [100, 150], "models.cnn.patience": [5, 150]}
    assert row["metrics.models.cnn.accuracy"] > 0.5

    again = http.post("/api/queue", json={"set": longer, "name": "from-the-board"})
    assert again.status_code == 400 and "named 'from-the-board' exists already" in again.json()["error"]

    # labels.yaml is not the experiment's: committed after the experiment was queued (its tree lacks the
    # file) and labelled again since (uncommitted), it stays as it is, and the change does not block
    baseline = http.get("/api/experiments").json()["rows"][0]["id"]
    http.post("/api/labels", json={"experiment": baseline, "label": "baseline"})
    run(["git", "add", "labels.yaml"], root)
    run(["git", "commit", "-qm", "Label the baseline"], root)
    http.post("/api/labels", json={"experiment": baseline, "label": "hidden"})
    # a label on the experiment's row follows it to its commit (it vanished with the row)
    http.post("/api/labels", json={"experiment": "exp:from-the-board", "label": "winner"})
    labels = (root / "labels.yaml").read_text()
    # applied and committed from its row, as `dvc exp apply` + `mnist-lab commit` do
    (root / "notes.txt").write_text("untracked files do not block")
    committed = http.post(
        "/api/commit", json={"experiment": "exp:from-the-board", "message": "CNN for 150 epochs"}
    )
    assert committed.status_code == 200, committed.json()
    sha = committed.json()["commit"]
    assert committed.json()["labels_moved"] == {"exp:from-the-board": ["winner"]}
    before, after = (yaml.safe_load(text) for text in (labels, (root / "labels.yaml").read_text()))
    assert after == {**{k: v for k, v in before.items() if k != "exp:from-the-board"}, sha: ["winner"]}
    rows_now = http.get("/api/experiments?hidden=1").json()["rows"]
    head = rows_now[0]
    assert head["id"] == sha and head["message"] == "CNN for 150 epochs" and head["labels"] == ["winner"]
    assert "exp:from-the-board" not in {row["id"] for row in rows_now}  # it is that commit's row now
    assert head["params.models.cnn.max_epochs"] == 150 and head["runs"]["cnn"]
    assert head["metrics.models.cnn.accuracy"] == row["metrics.models.cnn.accuracy"]
    # a tracked change in the workspace is never overwritten by an apply
    (root / "params.yaml").write_text((root / "params.yaml").read_text() + "\n# my edit\n")
    refused = http.post("/api/commit", json={"experiment": "exp:from-the-board", "message": "again"})
    assert refused.status_code == 400 and "uncommitted changes (params.yaml)" in refused.json()["error"]
    assert (root / "params.yaml").read_text().endswith("# my edit\n")

    # an experiment that failed keeps its name in DVC's queue: queueing the name again says how to free it
    failing = {"+models.sgd.search": "{grid: {alpha: [0.001]}, cv: 1000}"}  # more folds than examples
    assert http.post("/api/queue", json={"set": failing, "name": "too-many-folds"}).status_code == 200
    assert http.post("/api/queue/start", json={}).status_code == 200
    wait_for(
        lambda: (
            {t["name"]: t["status"] for t in http.get("/api/queue").json()["tasks"]}.get("too-many-folds")
            == "Failed"
        ),
        timeout_s=300,
    )
    assert "search.cv is 1000" in run(["dvc", "queue", "logs", "too-many-folds"], root, check=False).stdout
    refused = http.post("/api/queue", json={"set": failing, "name": "too-many-folds"})
    assert refused.status_code == 400
    assert (
        "a failed experiment in DVC's queue is named 'too-many-folds': remove it (`dvc queue remove "
        in (refused.json()["error"])
    )
    run(["dvc", "queue", "remove", "too-many-folds"], root)  # the command the message names works
    assert http.post("/api/queue", json={"set": failing, "name": "too-many-folds"}).status_code == 200
